// Strict replay, the inputs it rebuilds from recorded events, overrides and
// traces. The what-if simulation that follows a prefix is replay_sim.cpp.

#include "agent/replay.hpp"

#include <map>

#include "agent/loop_fold.hpp"
#include "agent/replay_walk.hpp"

namespace keel::agent {

namespace replay_detail {

using loop_detail::member;
using loop_detail::str;
using loop_detail::u64;

namespace {

// What the loop's state waits for; nullptr for types without effects and
// for a loop that waits for nothing.
const loop_wait* wait_of(const agent_state& st) {
  if (!st.loop || !st.loop->turn || !st.loop->turn->wait) return nullptr;
  return &*st.loop->turn->wait;
}

std::string name(event_type t) {
  return std::string(to_string(t));
}

std::string brief(const json& j) {
  return shorten(j.dump(), 80);
}

// Why `replayed` is not `recorded`, or "" when they are equal. Names the
// first top-level field that differs, so a reader sees what changed
// without diffing two JSON documents.
std::string difference(const event& recorded, const event& replayed) {
  if (recorded.type != replayed.type)
    return "decided " + name(replayed.type) + " where the ledger has " + name(recorded.type);
  if (recorded.time_ms != replayed.time_ms)
    return name(recorded.type) + " differs in its time: the ledger has " +
           std::to_string(recorded.time_ms) + ", replay decided " +
           std::to_string(replayed.time_ms);
  if (recorded.data == replayed.data) return {};
  const json& a = recorded.data;
  const json& b = replayed.data;
  if (a.is_object() && b.is_object()) {
    std::vector<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.push_back(it.key());
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) keys.push_back(it.key());
    for (const auto& k : keys) {
      const bool in_a = a.contains(k), in_b = b.contains(k);
      if (in_a && in_b && a[k] == b[k]) continue;
      std::string why = name(recorded.type) + " differs in \"" + k + "\": the ledger has ";
      why += in_a ? brief(a[k]) : "no such field";
      why += ", replay decided ";
      why += in_b ? brief(b[k]) : "no such field";
      return why;
    }
  }
  return name(recorded.type) + " differs in its data: the ledger has " + brief(a) +
         ", replay decided " + brief(b);
}

}  // namespace

std::string shorten(std::string s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t cut = max;
  // Never split a UTF-8 sequence: continuation bytes are 10xxxxxx.
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  s.resize(cut);
  return s + "...";
}

json event_json(uint64_t seq, const event& e) {
  return {{"seq", seq}, {"type", to_string(e.type)}, {"time", e.time_ms}, {"data", e.data}};
}

bool is_outcome(event_type type) {
  return type == event_type::model_replied || type == event_type::effect_completed ||
         type == event_type::effect_failed || type == event_type::compensation_completed;
}

result<input> input_of(const agent_type& t, const agent_state& st, const event& first) {
  const json& d = first.data;
  const loop_wait* w = wait_of(st);
  // A result is always for the attempt the agent waits for: a stale one
  // decides nothing, so the ledger never holds one.
  const auto waited_attempt = static_cast<uint32_t>(w ? w->attempt_no() : 1);
  auto flag = [&d](const char* k) { return member(d, k).is_boolean() && member(d, k).get<bool>(); };
  switch (first.type) {
    case event_type::spawned:
      return input{spawn_input{str(d, "type"), member(d, "input"), str(d, "version")}};
    case event_type::message_received:
      return input{
          message_input{u64(d, "arrival"), str(d, "id"), str(d, "from"), member(d, "body")}};
    case event_type::signal_received:
      return input{signal_input{u64(d, "arrival"), str(d, "signal"), member(d, "payload")}};
    case event_type::timer_fired:
      return input{timer_input{u64(d, "timer")}};
    case event_type::terminated:
      return input{terminate_input{str(d, "by")}};
    case event_type::upgraded:
      return input{upgrade_input{str(d, "to"), str(d, "by"), str(d, "reason")}};
    case event_type::fork_started:
      return input{fork_input{str(d, "parent"), u64(d, "at"), str(d, "by"),
                              static_cast<int64_t>(u64(d, "gap_ms"))}};
    case event_type::model_replied: {
      // The reply as the provider normalized it; only the fields recorded.
      json reply = json::object();
      for (const char* k : {"content", "tool_calls", "usage", "finish_reason"})
        if (d.is_object() && d.contains(k)) reply[k] = d[k];
      return input{
          effect_result_input{u64(d, "effect"), waited_attempt, true, std::move(reply), {}, false}};
    }
    case event_type::effect_completed:
      return input{effect_result_input{
          u64(d, "effect"), waited_attempt, true, member(d, "result"), {}, false}};
    case event_type::effect_failed:
      return input{effect_result_input{u64(d, "effect"), static_cast<uint32_t>(u64(d, "attempt")),
                                       false, nullptr, str(d, "error"), flag("retryable")}};
    case event_type::effect_in_doubt:
      // In doubt after a failure that may have been applied (it records the
      // failure); without one, after a crash (a recovery, below).
      if (d.is_object() && d.contains("error"))
        return input{effect_result_input{u64(d, "effect"), static_cast<uint32_t>(u64(d, "attempt")),
                                         false, nullptr, str(d, "error"), flag("retryable"), true}};
      if (t.needs_recovery(st)) return input{recover_input{}};
      return error(code::invalid_argument,
                   "the ledger has effect_in_doubt, which cannot begin a decision here");
    case event_type::compensation_completed: {
      // A failure recorded here was final; answered as not retryable it
      // decides the same whatever the original said.
      const bool ok = flag("ok");
      return input{effect_result_input{u64(d, "effect"), waited_attempt, ok,
                                       ok ? member(d, "result") : json(),
                                       ok ? std::string() : str(d, "error"), false}};
    }
    default:
      // Anything else begins a decision only as the first thing an agent
      // decided after its process died with an effect running.
      if (t.needs_recovery(st)) return input{recover_input{}};
      return error(code::invalid_argument,
                   "the ledger has " + name(first.type) +
                       ", which cannot begin a decision: the previous decision ended before it");
  }
}

const agent_type* type_for(const type_versions& vs, const agent_state& st, const event& first,
                           std::string& why) {
  const std::string v = version_of(st, first);
  if (const agent_type* t = vs.find(v)) return t;
  why = "version " + v + " of type " + (st.type.empty() ? str(first.data, "type") : st.type) +
        " is not on this node (register it: PUT /v1/types/NAME); the ledger runs it from here";
  return nullptr;
}

strict_result walk(const type_versions& vs, agent_state base,
                   const std::vector<recorded_event>& events, uint64_t stop_at,
                   walk_observer* obs) {
  strict_result r;
  r.state = std::move(base);
  agent_state& st = r.state;
  auto diverge = [&r](uint64_t seq, std::string reason, json recorded, json replayed) {
    r.diverged = divergence{seq, std::move(reason), std::move(recorded), std::move(replayed)};
  };
  // A seq other than the next one: a hole or a repeat in the ledger.
  auto out_of_order = [&](const recorded_event& at) {
    const uint64_t due = st.last_seq + 1;
    diverge(due,
            at.seq > due ? "seq " + std::to_string(due) +
                               " is missing: the ledger goes on at seq " + std::to_string(at.seq)
                         : "seq " + std::to_string(at.seq) + " is out of order: seq " +
                               std::to_string(due) + " was due",
            event_json(at.seq, at.ev), nullptr);
  };

  std::size_t i = 0;
  while (i < events.size() && !r.diverged) {
    const recorded_event& first = events[i];
    if (first.seq != st.last_seq + 1) {
      out_of_order(first);
      break;
    }
    if (stop_at != 0 && first.seq >= stop_at) break;
    std::string unknown;
    const agent_type* tp = type_for(vs, st, first.ev, unknown);
    if (!tp) {
      diverge(first.seq, std::move(unknown), event_json(first.seq, first.ev), nullptr);
      break;
    }
    const agent_type& t = *tp;
    if (first.ev.type == event_type::failed) {
      // A type threw on some input; decide_guarded() recorded only this
      // event, so there is no input to feed: it is taken as recorded.
      if (obs) obs->before(nullptr, st, first.seq);
      apply(t, st, first.ev);
      ++r.events;
      ++r.decisions;
      ++i;
      if (obs) obs->after(nullptr, decision{{first.ev}, {}}, st);
      continue;
    }
    auto in = input_of(t, st, first.ev);
    if (!in) {
      diverge(first.seq, in.error().message(), event_json(first.seq, first.ev), nullptr);
      break;
    }
    if (obs) obs->before(&*in, st, first.seq);
    const decision d = decide_guarded(t, st, *in, first.ev.time_ms);
    ++r.decisions;
    if (d.events.empty()) {
      diverge(first.seq,
              "the input rebuilt from " + name(first.ev.type) + " decided no event at all",
              event_json(first.seq, first.ev), nullptr);
      break;
    }
    for (const event& e : d.events) {
      const uint64_t seq = st.last_seq + 1;
      if (i == events.size()) {
        diverge(seq, "decided " + name(e.type) + " past the end of the ledger", nullptr,
                event_json(seq, e));
        break;
      }
      if (events[i].seq != seq) {
        out_of_order(events[i]);
        break;
      }
      if (std::string why = difference(events[i].ev, e); !why.empty()) {
        diverge(seq, std::move(why), event_json(seq, events[i].ev), event_json(seq, e));
        break;
      }
      apply(t, st, e);
      ++r.events;
      ++i;
    }
    if (!r.diverged && obs) obs->after(&*in, d, st);
  }
  r.identical = !r.diverged;
  return r;
}

result<effect_result_input> parse_outcome(const json& rep, bool model, uint64_t effect,
                                          uint32_t attempt) {
  const char* shape =
      model ? "a model's answer is a reply {\"content\", \"tool_calls\": [{\"id\"?, \"name\", "
              "\"arguments\"}], \"usage\"?, \"finish_reason\"?} or {\"error\", \"retryable\"?}"
            : "a tool's answer is {\"result\": ...} or {\"error\", \"retryable\"?}";
  auto bad = [shape](const std::string& why) {
    return error(code::invalid_argument, why + " (" + shape + ")");
  };
  effect_result_input in{effect, attempt, false, nullptr, {}, false};
  if (!rep.is_object()) return bad("the answer is not an object");
  if (rep.contains("error")) {
    for (auto it = rep.begin(); it != rep.end(); ++it)
      if (it.key() != "error" && it.key() != "retryable")
        return bad("unknown field \"" + it.key() + "\" in a failure");
    if (!rep["error"].is_string()) return bad("\"error\" must be a string");
    if (rep.contains("retryable") && !rep["retryable"].is_boolean())
      return bad("\"retryable\" must be true or false");
    in.error = rep["error"].get<std::string>();
    in.retryable = rep.value("retryable", false);
    return in;
  }
  in.ok = true;
  if (!model) {
    if (rep.size() != 1 || !rep.contains("result")) return bad("a result needs only \"result\"");
    in.result = rep["result"];
    return in;
  }
  for (auto it = rep.begin(); it != rep.end(); ++it)
    if (it.key() != "content" && it.key() != "tool_calls" && it.key() != "usage" &&
        it.key() != "finish_reason")
      return bad("unknown field \"" + it.key() + "\" in a reply");
  const json content = rep.value("content", json());
  if (!content.is_null() && !content.is_string()) return bad("\"content\" must be text or null");
  const json calls = rep.value("tool_calls", json::array());
  if (!calls.is_array()) return bad("\"tool_calls\" must be an array");
  json tool_calls = json::array();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const json& c = calls[i];
    if (!c.is_object() || !c.contains("name") || !c["name"].is_string())
      return bad("tool call " + std::to_string(i) + " needs a \"name\"");
    if (c.contains("id") && !c["id"].is_string())
      return bad("the id of tool call " + std::to_string(i) + " must be a string");
    // Ids as the scripted provider fills them, but per effect: a what-if
    // has no call index of the original run to keep them apart.
    tool_calls.push_back(
        {{"id", c.value("id", "call_" + std::to_string(effect) + "_" + std::to_string(i))},
         {"name", c["name"]},
         {"arguments", c.value("arguments", json::object())}});
  }
  const json usage = rep.value("usage", json::object());
  if (!usage.is_object()) return bad("\"usage\" must be an object");
  const json finish = rep.value("finish_reason", json(""));
  if (!finish.is_string()) return bad("\"finish_reason\" must be text");
  in.result = {{"content", content},
               {"tool_calls", std::move(tool_calls)},
               {"usage", usage},
               {"finish_reason", finish}};
  return in;
}

}  // namespace replay_detail

using namespace replay_detail;

strict_result replay_strict(const type_versions& t, agent_state base,
                            const std::vector<recorded_event>& events) {
  return walk(t, std::move(base), events, 0, nullptr);
}

std::vector<uint64_t> step_starts(const type_versions& vs, agent_state base,
                                  const std::vector<recorded_event>& events) {
  class starts final : public walk_observer {
   public:
    std::vector<uint64_t> seqs;
    void before(const input*, const agent_state&, uint64_t seq) override { seqs.push_back(seq); }
    void after(const input*, const decision&, const agent_state&) override {}
  } obs;
  const strict_result r = walk(vs, std::move(base), events, 0, &obs);
  // A decision that diverged is no boundary to cut at.
  if (r.diverged && !obs.seqs.empty() && obs.seqs.back() >= r.diverged->seq) obs.seqs.pop_back();
  return obs.seqs;
}

std::optional<mock_policy> mock_policy_from_string(std::string_view s) {
  if (s == "recorded") return mock_policy::recorded;
  if (s == "scripted") return mock_policy::scripted;
  if (s == "stop") return mock_policy::stop;
  return std::nullopt;
}

std::string_view to_string(mock_policy p) {
  switch (p) {
    case mock_policy::recorded:
      return "recorded";
    case mock_policy::scripted:
      return "scripted";
    case mock_policy::stop:
      return "stop";
  }
  return "recorded";
}

result<effect_result_input> override_input(const agent_type&, const agent_state& st,
                                           const event& at, const json& replacement) {
  if (!is_outcome(at.type))
    return error(code::invalid_argument,
                 "a recorded " + std::string(to_string(at.type)) +
                     " is no effect's outcome: only model_replied, effect_completed, "
                     "effect_failed and compensation_completed can be replaced");
  const loop_wait* w = wait_of(st);
  if (!w || !loop_detail::is_running_wait(w->on))
    return error(code::invalid_argument, "the agent waits for no model or tool call there");
  const wait_on on = w->on;
  const uint64_t eff = w->effect_id();
  if (u64(at.data, "effect") != eff)
    return error(code::invalid_argument,
                 "the " + std::string(to_string(at.type)) + " answers effect " +
                     std::to_string(u64(at.data, "effect")) + " but the agent waits for effect " +
                     std::to_string(eff));
  const bool kind_fits =
      at.type == event_type::effect_failed ||
      (at.type == event_type::model_replied && on == wait_on::model) ||
      (at.type == event_type::effect_completed && (on == wait_on::tool || on == wait_on::worker)) ||
      (at.type == event_type::compensation_completed && on == wait_on::compensation);
  if (!kind_fits)
    return error(code::invalid_argument, "a recorded " + std::string(to_string(at.type)) +
                                             " cannot answer the agent's wait for " +
                                             std::string(to_string(on)));
  return parse_outcome(replacement, on == wait_on::model, eff,
                       static_cast<uint32_t>(w->attempt_no()));
}

// --- traces --------------------------------------------------------------------

namespace {

std::string text_of(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.size() == 1 && j.contains("text") && j["text"].is_string())
    return j["text"].get<std::string>();
  return j.dump();
}

std::string call_text(const std::string& tool, const json& args) {
  return tool + "(" + shorten(args.dump(), 120) + ")";
}

struct tracer {
  std::vector<trace_step> out;
  // effect id -> the call it ran, from effect_started / compensation_started.
  std::map<uint64_t, std::pair<std::string, json>> calls;

  void add(uint64_t seq, const char* kind, std::string text, const json& data) {
    out.push_back({seq, kind, shorten(std::move(text)), data});
  }
  std::string call_of(uint64_t effect, const std::string& fallback_tool) const {
    auto it = calls.find(effect);
    if (it == calls.end()) return fallback_tool.empty() ? "model call" : fallback_tool + "(...)";
    return call_text(it->second.first, it->second.second);
  }

  void step(uint64_t seq, const event& e) {
    const json& d = e.data;
    const std::string by = str(d, "by");
    switch (e.type) {
      case event_type::message_received:
        return add(seq, "message", text_of(member(d, "body")), d);
      case event_type::model_replied: {
        const json& tc = member(d, "tool_calls");
        if (tc.is_array() && !tc.empty()) {
          std::string text = "proposes ";
          for (std::size_t i = 0; i < tc.size(); ++i)
            text += (i ? ", " : "") + call_text(str(tc[i], "name"), member(tc[i], "arguments"));
          return add(seq, "model", std::move(text), d);
        }
        const json& content = member(d, "content");
        return add(seq, "model", "says \"" + (content.is_string() ? text_of(content) : "") + "\"",
                   d);
      }
      case event_type::guardrail_decided: {
        // Allowed calls show as their tool step; approval_requested tells
        // of a call that needs a human.
        const std::string verdict = str(d, "verdict");
        if (verdict == "allow" || verdict == "require_approval") return;
        std::string text = verdict + " " + str(d, "tool");
        if (!by.empty()) text += " by " + by;
        if (const std::string why = str(d, "reason"); !why.empty()) text += ": " + why;
        if (const std::string rule = str(d, "rule"); !rule.empty() && rule != "human")
          text += " (rule " + rule + ")";
        return add(seq, "guardrail", std::move(text), d);
      }
      case event_type::approval_requested:
        return add(seq, "approval",
                   call_text(str(d, "tool"), member(d, "arguments")) +
                       " needs approval: " + str(d, "reason") + " (rule " + str(d, "rule") + ")",
                   d);
      case event_type::effect_started:
      case event_type::compensation_started:
        calls[u64(d, "effect")] = {str(d, "tool"), member(d, "arguments")};
        return;
      case event_type::effect_completed: {
        std::string text = call_of(u64(d, "effect"), str(d, "tool")) + " -> " +
                           shorten(member(d, "result").dump());
        if (!str(d, "resolved_by").empty()) text += " (resolved by " + str(d, "resolved_by") + ")";
        if (!str(d, "answered_by").empty()) text += " (answered by " + str(d, "answered_by") + ")";
        return add(seq, "tool", std::move(text), d);
      }
      case event_type::effect_failed:
        if (!member(d, "final").is_boolean() || !d["final"].get<bool>()) return;
        return add(seq, "tool_failed",
                   call_of(u64(d, "effect"), {}) + " failed: " + str(d, "error"), d);
      case event_type::effect_in_doubt:
        return add(seq, "in_doubt",
                   call_of(u64(d, "effect"), str(d, "tool")) + " is in doubt after a crash", d);
      case event_type::compensation_completed: {
        std::string text = "undo of effect " + std::to_string(u64(d, "for")) + " by " +
                           call_of(u64(d, "effect"), "compensation");
        const bool ok = member(d, "ok").is_boolean() && d["ok"].get<bool>();
        text += ok ? " -> " + shorten(member(d, "result").dump()) : " failed: " + str(d, "error");
        return add(seq, "compensation", std::move(text), d);
      }
      case event_type::turn_completed: {
        if (str(d, "status") == "completed")
          return add(seq, "answer", text_of(member(d, "answer")), d);
        return add(seq, "turn_failed", str(d, "status") + ": " + str(d, "reason"), d);
      }
      case event_type::signal_received: {
        std::string text = str(d, "signal");
        if (const json& p = member(d, "payload"); !p.is_null()) text += " " + p.dump();
        return add(seq, "signal", std::move(text), d);
      }
      case event_type::paused:
        return add(seq, "paused", by.empty() ? "paused" : "paused by " + by, d);
      case event_type::resumed:
        return add(seq, "resumed", by.empty() ? "resumed" : "resumed by " + by, d);
      case event_type::forked:
        return add(seq, "forked",
                   "forked as " + str(d, "as") + " at seq " + std::to_string(u64(d, "at")), d);
      case event_type::salvaged:
        return add(seq, "salvaged",
                   "records lost to a damaged write-ahead log (report " + str(d, "report") + ")",
                   d);
      case event_type::fork_started:
        return add(seq, "forked",
                   "fork of " + str(d, "parent") + " at seq " + std::to_string(u64(d, "at")), d);
      case event_type::failed:
        return add(seq, "failed", "the agent failed: " + str(d, "reason"), d);
      case event_type::terminated:
        return add(seq, "terminated", by.empty() ? "terminated" : "terminated by " + by, d);
      default:
        return;
    }
  }
};

}  // namespace

std::vector<trace_step> trace_of(const std::vector<recorded_event>& events) {
  tracer t;
  for (const auto& e : events) t.step(e.seq, e.ev);
  return std::move(t.out);
}

}  // namespace keel::agent
