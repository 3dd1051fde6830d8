// keel eval SUITE.json: replays with expectations, as a test suite for an
// agent's behaviour. Every case is a replay on the server (strict, or a
// what-if with overrides), so a suite never calls a model or a tool.
//
// Suite format (docs/replay.md):
//   {"description"?: "...",
//    "cases": [{"name": "...", "agent": "ticket/4711",
//               "overrides"?: {"SEQ": replacement}, "policy"?: "recorded",
//               "script"?: {...},
//               "expect": {"identical"?: true,
//                          "settled"?: true,
//                          "called"?: [{"tool": "refund", "arguments"?: {...}}],
//                          "not_called"?: ["sql"],
//                          "answer"?: "regex",
//                          "guardrail"?: [{"rule"?: "...", "verdict"?: "deny", "tool"?: "..."}]}}]}
// `arguments` and `guardrail` entries match when every field they give is
// equal (objects recursively); `answer` is an ECMAScript regex searched in
// the last turn's answer.

#include <regex>

#include "apps/keel_cli.hpp"

namespace keel::cli_app {

namespace {

// Whether `have` holds everything `want` says (objects field by field,
// anything else equal).
bool matches(const json& want, const json& have) {
  if (!want.is_object()) return want == have;
  if (!have.is_object()) return false;
  for (const auto& [k, v] : want.items())
    if (!have.contains(k) || !matches(v, have[k])) return false;
  return true;
}

// The expectations of one case against the events of its run; "" when all
// hold, else what failed.
std::string check(const json& expect, const json& result, const json& events) {
  std::vector<std::string> failed;
  auto events_of = [&events](const char* type) {
    std::vector<json> out;
    for (const auto& e : events)
      if (e.value("type", "") == type) out.push_back(e.value("data", json::object()));
    return out;
  };
  const auto started = events_of("effect_started");
  // A what-if's history up to the override must replay; a strict case
  // says whether the whole ledger did.
  const json& strict = result.contains("prefix") ? result["prefix"] : result;
  if (expect.contains("identical") && strict.value("identical", false) != expect["identical"])
    failed.push_back(strict.contains("divergence")
                         ? "diverged at seq " + text_of(strict["divergence"]["seq"]) + ": " +
                               text_of(strict["divergence"]["reason"])
                         : "identical was not " + dump(expect["identical"]));
  if (expect.contains("settled") && result.value("settled", true) != expect["settled"])
    failed.push_back("settled is " + dump(result.value("settled", true)) + " (" +
                     text_of(result.value("stopped", json())) + ")");
  for (const auto& want : expect.value("called", json::array())) {
    const std::string tool = want.value("tool", "");
    bool found = false;
    for (const auto& s : started)
      if (s.value("tool", "") == tool &&
          (!want.contains("arguments") || matches(want["arguments"], s.value("arguments", json()))))
        found = true;
    if (!found)
      failed.push_back(tool + " was not called" +
                       (want.contains("arguments") ? " with " + dump(want["arguments"]) : ""));
  }
  for (const auto& tool : expect.value("not_called", json::array()))
    for (const auto& s : started)
      if (s.value("tool", json()) == tool) {
        failed.push_back(text_of(tool) + " was called with " + dump(s.value("arguments", json())));
        break;
      }
  if (expect.contains("answer")) {
    std::string answer;
    bool have = false;
    for (const auto& t : events_of("turn_completed"))
      if (t.contains("answer")) {
        answer = text_of(t["answer"]);
        have = true;
      }
    try {
      std::regex re(expect["answer"].get<std::string>());
      if (!have)
        failed.push_back("no turn answered");
      else if (!std::regex_search(answer, re))
        failed.push_back("answer \"" + answer.substr(0, 80) + "\" does not match " +
                         dump(expect["answer"]));
    } catch (const std::exception& e) {
      usage_fail("expect.answer must be a regex string: " + std::string(e.what()));
    }
  }
  for (const auto& want : expect.value("guardrail", json::array())) {
    bool found = false;
    for (const auto& g : events_of("guardrail_decided"))
      if (matches(want, g)) found = true;
    if (!found) failed.push_back("no guardrail decision " + dump(want));
  }
  std::string out;
  for (const auto& f : failed) out += (out.empty() ? "" : "; ") + f;
  return out;
}

}  // namespace

int cli::eval() {
  expect_args(inv_, 1, 1);
  const json suite = read_json_file(inv_.args[0], "suite");
  // An edited spec decides every case instead of the versions recorded.
  const json spec = opt(inv_, "spec") ? read_spec_file(*opt(inv_, "spec")) : json();
  if (!suite.is_object() || !suite.contains("cases") || !suite["cases"].is_array() ||
      suite["cases"].empty())
    usage_fail("a suite is {\"cases\": [{\"name\", \"agent\", \"expect\"}, ...]}");
  std::vector<std::vector<std::string>> rows;
  json report = json::array();
  int failures = 0;
  for (const auto& c : suite["cases"]) {
    if (!c.is_object() || !c.contains("agent") || !c["agent"].is_string())
      usage_fail("every case needs \"agent\"");
    const std::string name = c.value("name", c["agent"].get<std::string>());
    const std::string agent = c["agent"].get<std::string>();
    json req = json::object();
    for (const char* k : {"overrides", "policy", "script"})
      if (c.contains(k)) req[k] = c[k];
    if (!spec.is_null()) req["spec"] = spec;
    std::string outcome;
    auto r = call("POST", agent_path(agent) + "/replay", dump(req));
    if (!r) {
      outcome = "replay failed (see above)";
    } else {
      json events = r->value("events", json());
      if (!events.is_array()) {
        // A strict replay checks the recorded ledger itself.
        events = json::array();
        for (uint64_t from = 1;;) {
          auto page = call(
              "GET", agent_path(agent) + "/ledger?from=" + std::to_string(from) + "&limit=1000");
          if (!page) break;
          for (const auto& e : (*page)["events"]) events.push_back(e);
          if (!(*page)["next"].is_number_unsigned()) break;
          from = (*page)["next"].get<uint64_t>();
        }
      }
      outcome = check(c.value("expect", json::object()), *r, events);
    }
    const bool ok = outcome.empty();
    if (!ok) ++failures;
    const bool what_if = c.contains("overrides") && !c["overrides"].empty();
    rows.push_back(
        {name, agent, what_if ? "what-if" : "strict", ok ? "pass" : "FAIL", ok ? "" : outcome});
    report.push_back({{"case", name}, {"agent", agent}, {"ok", ok}, {"failed", outcome}});
  }
  if (inv_.json_out)
    std::printf("%s\n", dump(json{{"cases", report}, {"failures", failures}}).c_str());
  else {
    print_table({"CASE", "AGENT", "MODE", "RESULT", "WHY"}, rows);
    std::printf("%zu cases, %d failed\n", rows.size(), failures);
  }
  return failures == 0 ? exit_ok : exit_server;
}

}  // namespace keel::cli_app
