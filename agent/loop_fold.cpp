// How the agent loop folds its events into state: the control state
// (turn, queue, usage) and the conversation the model sees. Used by apply()
// on recorded events and by decide() on the events it emits, so the two can
// never disagree.

#include "agent/loop_fold.hpp"

#include "agent/core.hpp"

#include <algorithm>

namespace keel::agent::loop_detail {

using config::tool_kind;

// Signals the loop interprets itself, and the core's operator signals
// (pause, resume, forked); any other signal starts a turn.
bool is_control_signal(const std::string& name) {
  return std::find(config::loop_signals.begin(), config::loop_signals.end(), name) !=
             config::loop_signals.end() ||
         is_operator_signal(name);
}

namespace {

// The input of the last turn: its user message, the last in the
// conversation (a turn adds exactly one, first).
const json* last_input(const json& conv) {
  if (!conv.is_array()) return nullptr;
  for (auto it = conv.rbegin(); it != conv.rend(); ++it)
    if (it->is_object() && it->value("role", "") == "user" && it->contains("content"))
      return &(*it)["content"];
  return nullptr;
}

}  // namespace

std::string retry_refusal(const json& ctl, const json& conv) {
  const json& turn = member(ctl, "turn");
  if (turn.is_object())
    return "turn " + std::to_string(u64(turn, "n")) +
           " is in progress; retry a turn once it failed";
  if (const json& q = member(ctl, "queue"); q.is_array() && !q.empty())
    return "a turn is queued; retry a turn once it failed";
  const json& last = member(ctl, "last");
  if (!last.is_object()) return "no turn has run yet: nothing to retry";
  const std::string st = str(last, "status");
  if (st != "failed" && st != "stopped")
    return "the last turn (" + std::to_string(u64(last, "turn")) + ") " +
           (st == "completed" ? std::string("completed") : "was " + st) + ": nothing to retry";
  if (!last_input(conv)) return "the failed turn's input is not in the conversation";
  return {};
}

// Reads the state before the signal: the signal's own fold (a cancel's
// failing turn, a retry's queued input) must not answer for it.
status check_loop_signal(const json& ctl, const json& conv, const signal_input& sig) {
  const json& turn = member(ctl, "turn");
  const json& w = member(turn, "wait");
  const std::string on = str(w, "on");
  const std::string& n = sig.name;
  if (n == "approve" || n == "reject")
    return on == "approval" ? status::ok() : error(code::conflict, "nothing awaits approval");
  if (n == "resolve") {
    if (on != "in_doubt") return error(code::conflict, "no effect is in doubt");
    const std::string outcome = str(sig.payload, "outcome");
    if (outcome != "succeeded" && outcome != "failed" && outcome != "retry")
      return error(code::invalid_argument,
                   "resolve needs {\"outcome\": \"succeeded\"|\"failed\"|\"retry\", \"result\"?}");
    return status::ok();
  }
  if (n == "answer")
    return on == "human" ? status::ok() : error(code::conflict, "nobody asked a human");
  if (n == "cancel") {
    if (!turn.is_object()) return error(code::conflict, "no turn is in progress");
    if (on == "in_doubt")
      return error(code::conflict, "an effect is in doubt: resolve it first, then cancel");
    return status::ok();
  }
  if (n == "retry") {
    const std::string why = retry_refusal(ctl, conv);
    return why.empty() ? status::ok() : error(code::conflict, why);
  }
  return status::ok();
}

namespace {

std::string content_of(const json& body) {
  if (body.is_string()) return body.get<std::string>();
  if (body.is_object() && body.size() == 1 && body.contains("text") && body["text"].is_string())
    return body["text"].get<std::string>();
  return body.dump();
}

}  // namespace

// A string field of a JSON object from outside; "" when absent, not a
// string, or `j` is no object (payloads are never trusted to have a shape).
std::string str(const json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& member(const json& j, const char* key) {
  static const json absent;
  if (!j.is_object()) return absent;
  auto it = j.find(key);
  return it == j.end() ? absent : *it;
}

uint64_t u64(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

namespace {

// What a turn waits on while a tool of this kind (as recorded in its
// effect_started event) runs.
const char* wait_on_for(const std::string& kind) {
  if (kind == "worker") return "worker";
  if (kind == "sleep") return "sleep";
  if (kind == "ask_human") return "human";
  return "tool";
}

}  // namespace

bool is_builtin_idempotent(tool_kind k) {
  return k == tool_kind::send_message || k == tool_kind::spawn_agent || k == tool_kind::sleep ||
         k == tool_kind::ask_human;
}

// Waits with an effect marker: something runs or is queued for them.
bool is_running_wait(const std::string& on) {
  return on == "model" || on == "tool" || on == "worker" || on == "compensation";
}

// Waits that nothing in this process is working on: a cancel may drop them.
bool is_passive_wait(const std::string& on) {
  return on == "approval" || on == "human" || on == "in_doubt" || on == "retry" || on == "sleep" ||
         on == "worker";
}

namespace {

json& turn_of(json& ctl) {
  return ctl["turn"];
}

}  // namespace

// --- apply: the loop's view of every event ---------------------------------

namespace {

// The effect an outcome event settles: the one waited for, or the one a
// retry or a doubt is about.
json settled_wait(const json& turn) {
  const json& w = turn["wait"];
  if (!w.is_object()) return json::object();
  const std::string on = w.value("on", "");
  if (on == "in_doubt" || on == "retry") return w.value("prev", json::object());
  return w;
}

}  // namespace

// Time a turn has been running, not counting waits for people (approval,
// ask_human, a doubt to resolve): a human may answer months later.
uint64_t busy_ms(const json& turn, int64_t now) {
  int64_t waited = static_cast<int64_t>(u64(turn, "waited_ms"));
  const json& w = turn.value("wait", json());
  if (w.is_object() && w.contains("since")) waited += now - w.value("since", now);
  return static_cast<uint64_t>(std::max<int64_t>(0, now - turn.value("started_ms", now) - waited));
}

void apply_ctl(json& ctl, const event& e, const json& conv) {
  const json& d = e.data;
  json& turn = turn_of(ctl);
  json& usage = ctl["usage"];
  // A wait for people that this event ends adds to the turn's waited time.
  const json prev_wait = turn.is_object() ? turn.value("wait", json()) : json();
  switch (e.type) {
    case event_type::message_received:
      ctl["queue"].push_back({{"id", d.value("id", "")},
                              {"from", d.value("from", "")},
                              {"input", content_of(d.value("body", json()))}});
      break;
    case event_type::signal_received: {
      const std::string name = d.value("signal", "");
      if (!is_control_signal(name)) {
        ctl["queue"].push_back(
            // "auto-" ids are the node's own: no client message shares one.
            {{"id", signal_input_id(u64(d, "arrival"))},
             {"from", ""},
             {"input", "[signal " + name + "] " + d.value("payload", json()).dump()}});
      } else if (name == "retry" && retry_refusal(ctl, conv).empty()) {
        // The failed turn again: its input, as a new turn that answers the
        // retry (a refused retry changes nothing).
        const json& input = *last_input(conv);
        ctl["queue"].push_back(
            {{"id", signal_input_id(u64(d, "arrival"))},
             {"from", ""},
             {"input", input.is_string() ? input.get<std::string>() : input.dump()},
             {"retry_of", u64(ctl["last"], "turn")}});
      } else if (name == "cancel" && turn.is_object() && turn["failing"].is_null() &&
                 !(turn["wait"].is_object() && turn["wait"].value("on", "") == "in_doubt")) {
        const json& p = d.value("payload", json());
        std::string by = str(p, "by");
        turn["failing"] = {{"status", "cancelled"},
                           {"reason", by.empty() ? "cancelled" : "cancelled by " + by}};
        if (turn["wait"].is_object() && is_passive_wait(turn["wait"].value("on", "")))
          turn["wait"] = nullptr;
      }
      break;
    }
    case event_type::turn_started: {
      ctl["queue"].erase(ctl["queue"].begin());
      turn = {{"n", d.value("turn", uint64_t{0})},
              {"id", d.value("id", "")},
              {"from", d.value("from", "")},
              {"started_ms", e.time_ms},
              {"steps", 0},
              {"model_calls", 0},
              {"tool_calls", 0},
              {"tokens", 0},
              {"calls", json::array()},
              {"next", 0},
              {"wait", nullptr},
              {"done", json::array()},
              {"failing", nullptr},
              {"final", false},
              {"answer", nullptr}};
      break;
    }
    case event_type::model_requested:
      turn["wait"] = {{"on", "model"},
                      {"effect", u64(d, "effect")},
                      {"attempt", u64(d, "attempt")},
                      {"call_index", u64(d, "call_index")}};
      if (u64(d, "attempt") == 1) {
        turn["steps"] = u64(turn, "steps") + 1;
        usage["model_requests"] = u64(usage, "model_requests") + 1;
      }
      turn["model_calls"] = u64(turn, "model_calls") + 1;
      usage["model_calls"] = u64(usage, "model_calls") + 1;
      break;
    case event_type::model_replied: {
      turn["wait"] = nullptr;
      const json& u = d.value("usage", json::object());
      uint64_t tokens = u64(u, "prompt_tokens") + u64(u, "completion_tokens");
      turn["tokens"] = u64(turn, "tokens") + tokens;
      usage["tokens"] = u64(usage, "tokens") + tokens;
      json calls = json::array();
      for (const auto& c : d.value("tool_calls", json::array()))
        calls.push_back({{"id", c.value("id", "")},
                         {"name", c.value("name", "")},
                         {"arguments", c.value("arguments", json())},
                         {"state", "proposed"}});
      turn["final"] = calls.empty();
      turn["calls"] = std::move(calls);
      turn["next"] = 0;
      turn["answer"] = d.value("content", json());
      break;
    }
    case event_type::guardrail_decided: {
      const std::string v = d.value("verdict", "");
      if (v == "deny" || v == "invalid" || v == "rejected") {
        uint64_t i = u64(d, "call");
        turn["calls"][i]["state"] = "refused";
        turn["next"] = i + 1;
        turn["wait"] = nullptr;
      } else if (v == "approved") {
        turn["wait"] = nullptr;
      }
      break;
    }
    case event_type::approval_requested:
      turn["wait"] = {{"on", "approval"}, {"call", u64(d, "call")}, {"since", e.time_ms}};
      break;
    case event_type::effect_started: {
      uint64_t i = u64(d, "call");
      const std::string tool = d.value("tool", "");
      const std::string kind = d.value("kind", "");
      turn["wait"] = {{"on", wait_on_for(kind)},
                      {"effect", u64(d, "effect")},
                      {"attempt", u64(d, "attempt")},
                      {"call", i},
                      {"tool", tool},
                      {"kind", kind}};
      if (kind == "ask_human") turn["wait"]["since"] = e.time_ms;
      turn["calls"][i]["state"] = "running";
      if (u64(d, "attempt") == 1) {
        turn["tool_calls"] = u64(turn, "tool_calls") + 1;
        usage["tool_calls"] = u64(usage, "tool_calls") + 1;
      }
      break;
    }
    case event_type::effect_completed: {
      const json w = settled_wait(turn);
      uint64_t i = u64(w, "call");
      turn["calls"][i]["state"] = "done";
      turn["next"] = i + 1;
      turn["wait"] = nullptr;
      if (const std::string comp = str(d, "compensate"); !comp.empty())
        turn["done"].push_back({{"effect", u64(d, "effect")},
                                {"tool", w.value("tool", "")},
                                {"compensate", comp},
                                {"arguments", turn["calls"][i]["arguments"]},
                                {"result", d.value("result", json())}});
      break;
    }
    case event_type::effect_failed: {
      json w = settled_wait(turn);
      if (d.value("final", false)) {
        turn["wait"] = nullptr;
        if (w.contains("call")) turn["calls"][u64(w, "call")]["state"] = "failed";
        if (turn["failing"].is_null())
          turn["failing"] = {
              {"status", "failed"},
              {"reason", (w.value("on", "") == "model" ? std::string("model call")
                                                       : "tool " + w.value("tool", "")) +
                             " failed: " + d.value("error", "")}};
      } else {
        turn["wait"] = {{"on", "retry"}, {"prev", std::move(w)}, {"timer", u64(d, "timer")}};
      }
      break;
    }
    case event_type::effect_in_doubt: {
      json w = turn["wait"];
      turn["wait"] = {{"on", "in_doubt"}, {"prev", std::move(w)}, {"since", e.time_ms}};
      break;
    }
    case event_type::compensation_started:
      turn["wait"] = {{"on", "compensation"},         {"effect", u64(d, "effect")},
                      {"attempt", u64(d, "attempt")}, {"for", u64(d, "for")},
                      {"tool", d.value("tool", "")},  {"kind", d.value("kind", "")}};
      break;
    case event_type::compensation_completed:
      turn["wait"] = nullptr;
      if (!turn["done"].empty()) turn["done"].erase(turn["done"].end() - 1);
      break;
    case event_type::turn_completed: {
      usage["wall_ms"] = u64(usage, "wall_ms") + busy_ms(turn, e.time_ms);
      ctl["turns"] = u64(ctl, "turns") + 1;
      json last = {{"turn", u64(d, "turn")}, {"status", d.value("status", "")}};
      if (d.contains("answer")) last["answer"] = d["answer"];
      if (d.contains("reason")) last["reason"] = d["reason"];
      ctl["last"] = std::move(last);
      turn = nullptr;
      break;
    }
    case event_type::fork_started:
      // The time between the copied step and the fork is nobody's work.
      if (turn.is_object()) turn["waited_ms"] = u64(turn, "waited_ms") + u64(d, "gap_ms");
      break;
    default:
      break;
  }
  if (prev_wait.is_object() && prev_wait.contains("since") && turn.is_object() &&
      turn.value("wait", json()) != prev_wait)
    turn["waited_ms"] =
        u64(turn, "waited_ms") + static_cast<uint64_t>(std::max<int64_t>(
                                     0, e.time_ms - prev_wait.value("since", e.time_ms)));
}

namespace {

json tool_message(const std::string& call_id, const json& content) {
  return {{"role", "tool"},
          {"tool_call_id", call_id},
          {"content", content.is_string() ? content.get<std::string>() : content.dump()}};
}

}  // namespace

// The conversation the model sees; updated before apply_ctl (it reads the
// turn as it was before the event).
void apply_conversation(json& conv, const json& ctl, const event& e) {
  const json& d = e.data;
  switch (e.type) {
    case event_type::turn_started: {
      // The text is the queued input's (from its message_received or
      // signal_received): the ledger holds it once.
      auto q = ctl.find("queue");
      const bool queued = q != ctl.end() && q->is_array() && !q->empty();
      conv.push_back({{"role", "user"}, {"content", queued ? str((*q)[0], "input") : ""}});
      break;
    }
    case event_type::model_replied: {
      json m = {{"role", "assistant"}, {"content", d.value("content", json())}};
      json calls = json::array();
      for (const auto& c : d.value("tool_calls", json::array()))
        calls.push_back({{"id", c.value("id", "")},
                         {"type", "function"},
                         {"function",
                          {{"name", c.value("name", "")},
                           {"arguments", c.value("arguments", json()).dump()}}}});
      if (!calls.empty()) m["tool_calls"] = std::move(calls);
      conv.push_back(std::move(m));
      break;
    }
    case event_type::guardrail_decided: {
      const std::string v = d.value("verdict", "");
      if (v == "deny" || v == "invalid" || v == "rejected")
        conv.push_back(
            tool_message(d.value("call_id", ""), json{{"error", "refused"},
                                                      {"verdict", v},
                                                      {"rule", d.value("rule", "")},
                                                      {"reason", d.value("reason", "")}}));
      break;
    }
    case event_type::effect_completed:
      conv.push_back(tool_message(d.value("call_id", ""), d.value("result", json())));
      break;
    case event_type::turn_completed: {
      // Every proposed call must be answered before the next user message.
      const json& turn = ctl["turn"];
      if (!turn.is_object()) break;
      for (const auto& c : turn["calls"]) {
        const std::string st = c.value("state", "");
        if (st == "done" || st == "refused") continue;
        conv.push_back(tool_message(
            c.value("id", ""),
            json{{"error", "not run"},
                 {"reason", "turn " + d.value("status", "") + ": " + d.value("reason", "")}}));
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace keel::agent::loop_detail
