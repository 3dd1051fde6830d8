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

std::string retry_refusal(const loop_state& ctl, const json& conv) {
  if (ctl.turn)
    return "turn " + std::to_string(ctl.turn->n) + " is in progress; retry a turn once it failed";
  if (!ctl.queue.empty()) return "a turn is queued; retry a turn once it failed";
  if (!ctl.last) return "no turn has run yet: nothing to retry";
  const std::string& st = ctl.last->status;
  if (st != "failed" && st != "stopped")
    return "the last turn (" + std::to_string(ctl.last->turn) + ") " +
           (st == "completed" ? std::string("completed") : "was " + st) + ": nothing to retry";
  if (!last_input(conv)) return "the failed turn's input is not in the conversation";
  return {};
}

std::optional<wait_on> wait_of(const loop_state& ctl) {
  if (!ctl.turn || !ctl.turn->wait) return std::nullopt;
  return ctl.turn->wait->on;
}

// Reads the state before the signal: the signal's own fold (a cancel's
// failing turn, a retry's queued input) must not answer for it.
status check_loop_signal(const loop_state& ctl, const json& conv, const signal_input& sig) {
  const std::optional<wait_on> on = wait_of(ctl);
  const std::string& n = sig.name;
  if (n == "approve" || n == "reject")
    return on == wait_on::approval ? status::ok()
                                   : error(code::conflict, "nothing awaits approval");
  if (n == "resolve") {
    if (on != wait_on::in_doubt) return error(code::conflict, "no effect is in doubt");
    const std::string outcome = str(sig.payload, "outcome");
    if (outcome != "succeeded" && outcome != "failed" && outcome != "retry")
      return error(code::invalid_argument,
                   "resolve needs {\"outcome\": \"succeeded\"|\"failed\"|\"retry\", \"result\"?}");
    return status::ok();
  }
  if (n == "answer")
    return on == wait_on::human ? status::ok() : error(code::conflict, "nobody asked a human");
  if (n == "cancel") {
    if (!ctl.turn) return error(code::conflict, "no turn is in progress");
    if (on == wait_on::in_doubt)
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
wait_on wait_on_for(const std::string& kind) {
  if (kind == "worker") return wait_on::worker;
  if (kind == "sleep") return wait_on::sleep;
  if (kind == "ask_human") return wait_on::human;
  return wait_on::tool;
}

}  // namespace

bool is_builtin_idempotent(tool_kind k) {
  return k == tool_kind::send_message || k == tool_kind::spawn_agent || k == tool_kind::sleep ||
         k == tool_kind::ask_human;
}

bool is_running_wait(wait_on on) {
  return on == wait_on::model || on == wait_on::tool || on == wait_on::worker ||
         on == wait_on::compensation;
}

bool is_passive_wait(wait_on on) {
  return on == wait_on::approval || on == wait_on::human || on == wait_on::in_doubt ||
         on == wait_on::retry || on == wait_on::sleep || on == wait_on::worker;
}

// --- apply: the loop's view of every event ---------------------------------

namespace {

// The effect an outcome event settles: the one waited for, or the one a
// retry or a doubt is about; nullopt when there is none.
std::optional<loop_wait> settled_wait(const loop_turn& turn) {
  if (!turn.wait) return std::nullopt;
  const loop_wait& w = *turn.wait;
  if (w.on == wait_on::in_doubt || w.on == wait_on::retry) {
    if (w.prev.empty()) return std::nullopt;
    return w.prev.front();
  }
  return w;
}

loop_wait effect_wait(wait_on on, const json& d) {
  loop_wait w;
  w.on = on;
  w.effect = u64(d, "effect");
  w.attempt = u64(d, "attempt");
  return w;
}

}  // namespace

// Time a turn has been running, not counting waits for people (approval,
// ask_human, a doubt to resolve): a human may answer months later.
uint64_t busy_ms(const loop_turn& turn, int64_t now) {
  int64_t waited = static_cast<int64_t>(turn.waited_ms.value_or(0));
  if (turn.wait && turn.wait->since) waited += now - *turn.wait->since;
  return static_cast<uint64_t>(std::max<int64_t>(0, now - turn.started_ms - waited));
}

void apply_ctl(loop_state& ctl, const event& e, const json& conv) {
  const json& d = e.data;
  std::optional<loop_turn>& turn = ctl.turn;
  loop_usage& usage = ctl.usage;
  // A wait for people that this event ends adds to the turn's waited time.
  const std::optional<loop_wait> prev_wait = turn ? turn->wait : std::nullopt;
  switch (e.type) {
    case event_type::message_received:
      ctl.queue.push_back(
          {d.value("id", ""), d.value("from", ""), content_of(d.value("body", json())), {}});
      break;
    case event_type::signal_received: {
      const std::string name = d.value("signal", "");
      if (!is_control_signal(name)) {
        // "auto-" ids are the node's own: no client message shares one.
        ctl.queue.push_back({signal_input_id(u64(d, "arrival")),
                             "",
                             "[signal " + name + "] " + d.value("payload", json()).dump(),
                             {}});
      } else if (name == "retry" && retry_refusal(ctl, conv).empty()) {
        // The failed turn again: its input, as a new turn that answers the
        // retry (a refused retry changes nothing).
        const json& input = *last_input(conv);
        ctl.queue.push_back({signal_input_id(u64(d, "arrival")), "",
                             input.is_string() ? input.get<std::string>() : input.dump(),
                             ctl.last->turn});
      } else if (name == "cancel" && turn && !turn->failing &&
                 !(turn->wait && turn->wait->on == wait_on::in_doubt)) {
        const std::string by = str(d.value("payload", json()), "by");
        turn->failing = turn_failing{"cancelled", by.empty() ? "cancelled" : "cancelled by " + by};
        if (turn->wait && is_passive_wait(turn->wait->on)) turn->wait.reset();
      }
      break;
    }
    case event_type::turn_started: {
      if (!ctl.queue.empty()) ctl.queue.erase(ctl.queue.begin());
      loop_turn t;
      t.n = d.value("turn", uint64_t{0});
      t.id = d.value("id", "");
      t.from = d.value("from", "");
      t.started_ms = e.time_ms;
      turn = std::move(t);
      break;
    }
    case event_type::model_requested: {
      const uint64_t attempt = u64(d, "attempt");
      if (attempt == 1) usage.model_requests = usage.model_requests.value_or(0) + 1;
      ++usage.model_calls;
      if (!turn) break;
      loop_wait w = effect_wait(wait_on::model, d);
      w.call_index = u64(d, "call_index");
      turn->wait = std::move(w);
      if (attempt == 1) ++turn->steps;
      ++turn->model_calls;
      break;
    }
    case event_type::model_replied: {
      const json& u = d.value("usage", json::object());
      const uint64_t tokens = u64(u, "prompt_tokens") + u64(u, "completion_tokens");
      usage.tokens += tokens;
      if (!turn) break;
      turn->wait.reset();
      turn->tokens += tokens;
      std::vector<loop_call> calls;
      for (const auto& c : d.value("tool_calls", json::array()))
        calls.push_back({c.value("id", ""), c.value("name", ""), c.value("arguments", json()),
                         call_state::proposed});
      turn->final = calls.empty();
      turn->calls = std::move(calls);
      turn->next = 0;
      turn->answer = d.value("content", json());
      break;
    }
    case event_type::guardrail_decided: {
      if (!turn) break;
      const std::string v = d.value("verdict", "");
      if (v == "deny" || v == "invalid" || v == "rejected") {
        const uint64_t i = u64(d, "call");
        if (i < turn->calls.size()) turn->calls[i].state = call_state::refused;
        turn->next = i + 1;
        turn->wait.reset();
      } else if (v == "approved") {
        turn->wait.reset();
      }
      break;
    }
    case event_type::approval_requested: {
      if (!turn) break;
      loop_wait w;
      w.on = wait_on::approval;
      w.call = u64(d, "call");
      w.since = e.time_ms;
      turn->wait = std::move(w);
      break;
    }
    case event_type::effect_started: {
      const bool first = u64(d, "attempt") == 1;
      if (first) ++usage.tool_calls;
      if (!turn) break;
      const uint64_t i = u64(d, "call");
      const std::string kind = d.value("kind", "");
      loop_wait w = effect_wait(wait_on_for(kind), d);
      w.call = i;
      w.tool = d.value("tool", "");
      w.kind = kind;
      if (kind == "ask_human") w.since = e.time_ms;
      turn->wait = std::move(w);
      if (i < turn->calls.size()) turn->calls[i].state = call_state::running;
      if (first) ++turn->tool_calls;
      break;
    }
    case event_type::effect_completed: {
      if (!turn) break;
      const std::optional<loop_wait> w = settled_wait(*turn);
      const uint64_t i = w ? w->call_no() : 0;
      if (i < turn->calls.size()) turn->calls[i].state = call_state::done;
      turn->next = i + 1;
      turn->wait.reset();
      if (const std::string comp = str(d, "compensate"); !comp.empty())
        turn->done.push_back({u64(d, "effect"), w ? w->tool_name() : std::string(), comp,
                              i < turn->calls.size() ? turn->calls[i].arguments : json(),
                              d.value("result", json())});
      break;
    }
    case event_type::effect_failed: {
      if (!turn) break;
      std::optional<loop_wait> w = settled_wait(*turn);
      if (d.value("final", false)) {
        turn->wait.reset();
        if (w && w->call && *w->call < turn->calls.size())
          turn->calls[*w->call].state = call_state::failed;
        if (!turn->failing)
          turn->failing =
              turn_failing{"failed", (w && w->on == wait_on::model
                                          ? std::string("model call")
                                          : "tool " + (w ? w->tool_name() : std::string())) +
                                         " failed: " + d.value("error", "")};
      } else {
        loop_wait r;
        r.on = wait_on::retry;
        if (w) r.prev.push_back(std::move(*w));
        r.timer = u64(d, "timer");
        turn->wait = std::move(r);
      }
      break;
    }
    case event_type::effect_in_doubt: {
      if (!turn) break;
      loop_wait w;
      w.on = wait_on::in_doubt;
      if (turn->wait) w.prev.push_back(std::move(*turn->wait));
      w.since = e.time_ms;
      turn->wait = std::move(w);
      break;
    }
    case event_type::compensation_started: {
      if (!turn) break;
      loop_wait w = effect_wait(wait_on::compensation, d);
      w.for_effect = u64(d, "for");
      w.tool = d.value("tool", "");
      w.kind = d.value("kind", "");
      turn->wait = std::move(w);
      break;
    }
    case event_type::compensation_completed:
      if (!turn) break;
      turn->wait.reset();
      if (!turn->done.empty()) turn->done.pop_back();
      break;
    case event_type::turn_completed: {
      if (turn) usage.wall_ms += busy_ms(*turn, e.time_ms);
      ++ctl.turns;
      last_turn last;
      last.turn = u64(d, "turn");
      last.status = d.value("status", "");
      if (d.contains("answer")) last.answer = d["answer"];
      if (d.contains("reason")) last.reason = d["reason"];
      ctl.last = std::move(last);
      turn.reset();
      break;
    }
    case event_type::fork_started:
      // The time between the copied step and the fork is nobody's work.
      if (turn) turn->waited_ms = turn->waited_ms.value_or(0) + u64(d, "gap_ms");
      break;
    default:
      break;
  }
  if (prev_wait && prev_wait->since && turn && turn->wait != prev_wait)
    turn->waited_ms = turn->waited_ms.value_or(0) +
                      static_cast<uint64_t>(std::max<int64_t>(0, e.time_ms - *prev_wait->since));
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
void apply_conversation(json& conv, const loop_state& ctl, const event& e) {
  const json& d = e.data;
  switch (e.type) {
    case event_type::turn_started: {
      // The text is the queued input's (from its message_received or
      // signal_received): the ledger holds it once.
      const bool queued = !ctl.queue.empty();
      conv.push_back({{"role", "user"}, {"content", queued ? ctl.queue.front().input : ""}});
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
      if (!ctl.turn) break;
      for (const auto& c : ctl.turn->calls) {
        if (c.state == call_state::done || c.state == call_state::refused) continue;
        conv.push_back(tool_message(c.id, json{{"error", "not run"},
                                               {"reason", "turn " + d.value("status", "") + ": " +
                                                              d.value("reason", "")}}));
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace keel::agent::loop_detail
