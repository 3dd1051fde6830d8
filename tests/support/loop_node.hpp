#pragma once
// A keeld with a folder of agent-type specs (--agents) for agent-loop
// integration tests, restartable on the same data after SIGKILL, with
// request helpers, ledger matchers and builders of specs and scripted
// replies. Uses doctest assertions: include it from test files only.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "support/fake_tool_server.hpp"
#include "support/http_replay_check.hpp"
#include "support/keeld_process.hpp"
#include "support/ledger_pages.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

namespace keel::test::loop {

using nlohmann::json;
namespace fs = std::filesystem;

// The longest any single condition is waited for. Every step here takes
// milliseconds; the margin is for a loaded 2-core CI machine and sanitizers.
inline constexpr std::chrono::milliseconds deadline{8'000};

inline json read_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE_MESSAGE(in.good(), "cannot read " << p.string());
  return json::parse(in);
}

inline void write_json(const fs::path& p, const json& j) {
  std::ofstream out(p);
  out << j.dump(2);
  REQUIRE_MESSAGE(out.good(), "cannot write " << p.string());
}

struct answer {
  unsigned status = 0;
  std::string raw;
  json body;  // discarded when the answer is not JSON
};

// One "seq:type data" line per event, for failure messages.
inline std::string summary(const std::vector<json>& events) {
  std::string s;
  for (const auto& e : events) {
    s += std::to_string(e.value("seq", 0)) + ":" + e.value("type", "") + " " +
         e.value("data", json()).dump() + "\n";
  }
  return s;
}

inline std::vector<json> of_type(const std::vector<json>& events, const std::string& type) {
  std::vector<json> out;
  for (const auto& e : events)
    if (e["type"] == type) out.push_back(e["data"]);
  return out;
}

// An expected ledger event: its type and fields its data must hold with
// these exact values (others are not checked).
struct expected_event {
  std::string type;
  json fields = json::object();
};

inline bool matches(const json& event, const expected_event& x) {
  if (event["type"] != x.type) return false;
  const json& d = event["data"];
  for (const auto& [k, v] : x.fields.items())
    if (!d.contains(k) || d[k] != v) return false;
  return true;
}

// Every expected event occurs, in this order (other events may come between).
inline void check_in_order(const std::vector<json>& events,
                           const std::vector<expected_event>& expected) {
  std::size_t at = 0;
  for (const auto& x : expected) {
    while (at < events.size() && !matches(events[at], x)) ++at;
    CHECK_MESSAGE(at < events.size(), "no " << x.type << " " << x.fields.dump()
                                            << " in order in the ledger:\n"
                                            << summary(events));
    if (at == events.size()) return;
    ++at;
  }
}

// The effect id of the first effect_started of `tool`; 0 when none.
inline uint64_t effect_of(const std::vector<json>& events, const std::string& tool) {
  for (const auto& d : of_type(events, "effect_started"))
    if (d["tool"] == tool) return d["effect"].get<uint64_t>();
  return 0;
}

// A keeld (KEEL_KEELD_PATH) in a temp dir: data/, agents/ (the specs it
// loads at start) and scripts/. Write the specs before start(); a restart
// loads them again. When the test lets go of it, every ledger it left must
// replay strictly.
class loop_node {
 public:
  // `config`: keys of keeld's config file (written next to the data).
  explicit loop_node(const json& config = json::object())
      : keeld_(KEEL_KEELD_PATH, (dir_.path() / "data").string(), args(dir_.path(), config)) {
    fs::create_directories(dir_.path() / "agents");
    fs::create_directories(dir_.path() / "scripts");
  }
  ~loop_node() { check_replays(); }
  loop_node(const loop_node&) = delete;
  loop_node& operator=(const loop_node&) = delete;

  // The strict replay check (support/http_replay_check.hpp), if keeld runs.
  void check_replays() {
    if (keeld_.running()) check_strict_replays_over_http(keeld_.port());
  }

  const fs::path& dir() const { return dir_.path(); }

  // Writes a scripted model's replies; returns the file's absolute path.
  std::string write_script(const std::string& name, const json& replies, bool cycle = false) {
    fs::path p = dir_.path() / "scripts" / (name + ".json");
    write_json(p, {{"replies", replies}, {"cycle", cycle}});
    return p.string();
  }
  void write_spec(const json& spec) {
    write_json(dir_.path() / "agents" / (spec["name"].get<std::string>() + ".json"), spec);
  }

  void start() {
    REQUIRE_MESSAGE(keeld_.start(), keeld_.output());
    REQUIRE(client_.connect("127.0.0.1", keeld_.port()).is_ok());
  }
  void kill9_and_restart() {
    keeld_.kill9();
    start();
  }
  uint16_t port() const { return keeld_.port(); }
  keeld_process& process() { return keeld_; }

  // `token`: sent as the bearer token (else none: the tests' keeld lets
  // anonymous requests do everything).
  answer call(std::string_view method, const std::string& target, std::string_view body = {},
              const std::string& token = {}) {
    net::http_client::header_list headers;
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    auto r = client_.request(method, target, body, headers);
    REQUIRE_MESSAGE(r.is_ok(), std::string(method)
                                   << " " << target << ": " << r.error().to_string());
    answer a{r->status, r->body, json::parse(r->body, nullptr, false)};
    return a;
  }
  answer post(const std::string& target, const json& body) {
    return call("POST", target, body.dump());
  }

  static std::string path(const std::string& name) {
    return "/v1/agents/" + net::percent_encode(name);
  }

  void spawn(const std::string& name, const std::string& type) {
    auto r = post("/v1/agents", {{"name", name}, {"type", type}});
    REQUIRE_MESSAGE(r.status == 201, r.raw);
  }
  void send(const std::string& name, const std::string& text) {
    auto r = post(path(name) + "/messages", {{"body", text}});
    REQUIRE_MESSAGE(r.status == 202, r.raw);
  }
  // The signal with ?wait, so the answer carries the agent's reply.
  answer signal(const std::string& name, const std::string& sig, const json& payload,
                const std::string& token = {}) {
    auto r = call("POST", path(name) + "/signals/" + sig + "?wait=5000",
                  json{{"payload", payload}}.dump(), token);
    REQUIRE_MESSAGE(r.status == 202, r.raw);
    return r;
  }
  // A token for `principal` with `scopes` (POST /v1/tokens).
  std::string create_token(const std::string& principal, const std::vector<std::string>& scopes) {
    auto r = post("/v1/tokens", {{"principal", principal}, {"scopes", scopes}});
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    return r.body["token"].get<std::string>();
  }
  json view(const std::string& name) {
    auto r = call("GET", path(name));
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    return r.body;
  }
  json conversation(const std::string& name) {
    auto r = post(path(name) + "/query", {{"conversation", true}});
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    return r.body["conversation"];
  }
  std::vector<json> ledger(const std::string& name) {
    auto all = read_ledger_pages(
        [this](const std::string& target) {
          auto r = call("GET", target);
          return std::pair<unsigned, json>(r.status, r.body);
        },
        path(name), 10'000);
    REQUIRE_MESSAGE(all.has_value(), "the ledger of " << name << " could not be read");
    return *all;
  }

  // Waits until the agent's view satisfies `pred`; returns that view.
  json wait_view(const std::string& name, const std::function<bool(const json&)>& pred,
                 const std::string& what) {
    // Asks at most every 5 ms: a waiting test must not take the CPU the
    // node needs (CI has two cores).
    json v;
    auto next_ask = std::chrono::steady_clock::time_point{};
    bool ok = eventually(
        [&] {
          if (std::chrono::steady_clock::now() < next_ask) return false;
          next_ask = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
          v = view(name);
          return pred(v);
        },
        deadline);
    REQUIRE_MESSAGE(ok, name << ": " << what << " did not happen; view " << v.dump()
                             << "\nledger:\n"
                             << summary(ledger(name)));
    return v;
  }
  json wait_phase(const std::string& name, const std::string& phase) {
    return wait_view(
        name, [&](const json& v) { return v["phase"] == phase; }, "phase " + phase);
  }
  // Waits until `turns` turns have completed; returns the view.
  json wait_turns(const std::string& name, uint64_t turns = 1) {
    return wait_view(
        name, [&](const json& v) { return v["state"].value("turns", uint64_t{0}) >= turns; },
        std::to_string(turns) + " completed turn(s)");
  }

 private:
  static std::vector<std::string> args(const fs::path& dir, const json& config) {
    std::vector<std::string> a{"--agents", (dir / "agents").string()};
    if (!config.empty()) {
      write_json(dir / "keeld.json", config);
      a.insert(a.end(), {"--config", (dir / "keeld.json").string()});
    }
    return a;
  }
  temp_dir dir_{"keel-loop"};
  keeld_process keeld_;
  net::http_client client_;
};

// --- specs and scripted replies ----------------------------------------------

inline json scripted_model(const std::string& script) {
  return {{"provider", "scripted"}, {"script", script}, {"timeout_ms", 5000}};
}

inline json tool_call(const std::string& name, const json& arguments) {
  return {{"name", name}, {"arguments", arguments}};
}

// A vector, not a json: `{one_call}` would copy the call instead of making
// an array of it.
inline json calls_reply(const std::vector<json>& calls) {
  return {{"content", nullptr}, {"tool_calls", calls}};
}

inline json text_reply(const std::string& text) {
  return {{"content", text}};
}

// A type (written into `n`'s scripts) whose model calls `tool` once with
// `arguments`, then answers "done".
inline json one_call_type(loop_node& n, const std::string& type, const json& tool,
                          const json& arguments = json::object()) {
  return {{"name", type},
          {"model",
           scripted_model(n.write_script(
               type, {calls_reply({tool_call(tool["name"], arguments)}), text_reply("done")}))},
          {"tools", {tool}}};
}

inline json http_tool(const fake_tool_server& tools, const std::string& name, bool idempotent) {
  return {{"name", name},
          {"description", "the " + name + " tool"},
          {"parameters", {{"type", "object"}}},
          {"kind", "http"},
          {"url", tools.url(name)},
          {"idempotent", idempotent},
          {"retry", {{"attempts", 3}, {"backoff_ms", 50}, {"timeout_ms", 20'000}}}};
}

// `tool` with parameters that pin each of `properties` ({"name": {"type":
// ...}}) and allow nothing else: what a guardrail rule on them requires.
inline json pinned(json tool, json properties) {
  tool["parameters"] = {
      {"type", "object"}, {"additionalProperties", false}, {"properties", std::move(properties)}};
  return tool;
}

// The refund tool's arguments as the demo's rule needs them pinned.
inline json refund_parameters() {
  return {{"order", {{"type", "integer"}}}, {"amount", {{"type", "number"}}}};
}

inline json tool_messages(const json& messages) {
  json out = json::array();
  for (const auto& m : messages)
    if (m.value("role", "") == "tool") out.push_back(m);
  return out;
}

}  // namespace keel::test::loop
