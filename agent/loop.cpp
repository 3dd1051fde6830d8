#include "agent/loop.hpp"

#include <algorithm>
#include <cmath>

#include "agent/guardrails.hpp"
#include "agent/loop_fold.hpp"

namespace keel::agent {

namespace {

using namespace loop_detail;
using config::tool_kind;

// --- decide ------------------------------------------------------------------

struct loop_decider {
  const loop_type& type;
  const config::agent_spec& spec;
  const agent_state& s;
  int64_t now;
  decision& out;
  json ctl;  // s.data["ctl"] with every event of `out` applied
  uint64_t next_timer;

  loop_decider(const loop_type& t, const agent_state& st, int64_t n, decision& o)
      : type(t),
        spec(t.spec()),
        s(st),
        now(n),
        out(o),
        ctl(st.data.value("ctl", json::object())),
        next_timer(st.next_timer_id) {
    // The generic event (message_received, signal_received, timer_fired) is
    // already in `out`; the loop's view must include it.
    for (const auto& e : out.events) apply_ctl(ctl, e, conversation());
  }

  uint64_t next_seq() const { return s.last_seq + out.events.size() + 1; }
  json& turn() { return ctl["turn"]; }
  bool in_turn() { return turn().is_object(); }
  json& wait() { return turn()["wait"]; }
  std::string wait_on() {
    return in_turn() && wait().is_object() ? wait().value("on", "") : std::string();
  }

  // The conversation as the state holds it (the decider does not fold it).
  const json& conversation() const { return member(s.data, "conversation"); }

  void emit(event_type t, json data) {
    event e{t, now, std::move(data)};
    apply_ctl(ctl, e, conversation());
    out.events.push_back(std::move(e));
  }
  void effect(agent::effect fx) { out.effects.push_back(std::move(fx)); }

  // effect_completed for the call `w` waited on. The compensating tool is
  // recorded with it, so folding never depends on the spec of the day.
  void complete_call(const json& w, json result, const char* who_key = nullptr,
                     const std::string& who = {}) {
    const json& c = turn()["calls"][u64(w, "call")];
    const std::string tool = w.value("tool", "");
    json d = {{"effect", u64(w, "effect")},
              {"call_id", c.value("id", "")},
              {"tool", tool},
              {"result", std::move(result)}};
    if (const config::tool_spec* ts = spec.find_tool(tool); ts && !ts->compensate.empty())
      d["compensate"] = ts->compensate;
    if (who_key) d[who_key] = who;
    emit(event_type::effect_completed, std::move(d));
  }

  // --- budgets ---------------------------------------------------------------
  // The reason the turn must stop before another model call (model=true) or
  // tool call, or "" when it may go on.
  std::string over_budget(bool model, uint32_t attempt = 1) {
    const auto& b = spec.budgets;
    json& t = turn();
    const json& u = ctl["usage"];
    const uint64_t turn_wall = busy_ms(t, now);
    auto hit = [](uint64_t used, uint64_t limit) { return limit != 0 && used >= limit; };
    auto say = [](const char* scope, const char* what, uint64_t limit) {
      return std::string("budget exhausted: ") + scope + " " + what + " (" + std::to_string(limit) +
             ")";
    };
    if (model && attempt == 1 && t.value("steps", uint64_t{0}) >= spec.max_steps_per_turn)
      return "max_steps_per_turn (" + std::to_string(spec.max_steps_per_turn) + ") reached";
    if (model && hit(u64(t, "model_calls"), b.per_turn.model_calls))
      return say("per-turn", "model_calls", b.per_turn.model_calls);
    if (model && hit(u64(u, "model_calls"), b.lifetime.model_calls))
      return say("lifetime", "model_calls", b.lifetime.model_calls);
    if (!model && hit(u64(t, "tool_calls"), b.per_turn.tool_calls))
      return say("per-turn", "tool_calls", b.per_turn.tool_calls);
    if (!model && hit(u64(u, "tool_calls"), b.lifetime.tool_calls))
      return say("lifetime", "tool_calls", b.lifetime.tool_calls);
    if (hit(u64(t, "tokens"), b.per_turn.tokens))
      return say("per-turn", "tokens", b.per_turn.tokens);
    if (hit(u64(u, "tokens"), b.lifetime.tokens))
      return say("lifetime", "tokens", b.lifetime.tokens);
    if (hit(turn_wall, b.per_turn.wall_ms)) return say("per-turn", "wall_ms", b.per_turn.wall_ms);
    if (hit(u64(u, "wall_ms") + turn_wall, b.lifetime.wall_ms))
      return say("lifetime", "wall_ms", b.lifetime.wall_ms);
    return {};
  }

  // Ends the turn and answers the message that started it. An effect the
  // turn still waits on (a recovery that hit a budget) is abandoned.
  void complete_turn(const std::string& status, const std::string& reason) {
    if (const std::string on = wait_on(); !on.empty() && is_running_wait(on))
      effect(end_effect{u64(wait(), "effect")});
    json d = {{"turn", u64(turn(), "n")}, {"status", status}};
    if (status == "completed")
      d["answer"] = turn().value("answer", json());
    else
      d["reason"] = reason;
    reply_effect answer = reply_ok(d);
    answer.to = turn().value("id", "");
    emit(event_type::turn_completed, std::move(d));
    if (!answer.to.empty()) effect(std::move(answer));
  }

  // --- steps -----------------------------------------------------------------
  // `call_index` numbers the agent's model calls (not attempts): every
  // attempt of one call carries the same, so a scripted model answers a
  // retry as it would have answered the first attempt.
  void request_model(uint64_t effect_id, uint32_t attempt, bool recovered, uint64_t call_index) {
    json d = {{"effect", effect_id},
              {"attempt", attempt},
              {"call_index", call_index},
              {"step", u64(turn(), "steps") + (attempt == 1)}};
    if (recovered) d["recovered"] = true;
    emit(event_type::model_requested, std::move(d));
    effect(model_call_effect{effect_id, attempt, call_index});
  }

  // Starts attempt `attempt` of call `i` as effect `effect_id`.
  void start_tool(uint64_t i, uint64_t effect_id, uint32_t attempt, bool recovered) {
    const json& c = turn()["calls"][i];
    const std::string name = c.value("name", "");
    const config::tool_spec* found = spec.find_tool(name);
    if (!found) {
      // The spec changed under a waiting call (a restart with a new spec):
      // the call is refused like any unknown tool.
      emit(event_type::guardrail_decided,
           {{"call", i},
            {"call_id", c.value("id", "")},
            {"tool", name},
            {"verdict", "invalid"},
            {"rule", "unknown_tool"},
            {"reason", "tool " + name + " is no longer declared by agent type " + spec.name}});
      return;
    }
    const config::tool_spec& ts = *found;
    const json& args = c["arguments"];
    json d = {{"effect", effect_id},
              {"call", i},
              {"call_id", c.value("id", "")},
              {"tool", name},
              {"kind", config::to_string(ts.kind)},
              {"arguments", args},
              {"attempt", attempt}};
    if (recovered) d["recovered"] = true;
    emit(event_type::effect_started, std::move(d));
    switch (ts.kind) {
      case tool_kind::sleep: {
        int64_t ms = 0;
        if (args.is_object() && args.contains("ms") && args["ms"].is_number())
          ms = args["ms"].get<int64_t>();
        else if (args.is_object() && args.contains("seconds") && args["seconds"].is_number())
          ms = static_cast<int64_t>(args["seconds"].get<double>() * 1000);
        ms = std::clamp<int64_t>(ms, 0, int64_t{366} * 24 * 3600 * 1000);
        set_timer(now + ms, {{"sleep", effect_id}, {"ms", ms}});
        break;
      }
      case tool_kind::ask_human:
        break;  // waits for the "answer" signal
      default:
        effect(tool_call_effect{effect_id, attempt, name, args});
    }
  }

  void start_compensation(uint64_t effect_id, uint32_t attempt, const json& done, bool recovered) {
    const std::string comp = str(done, "compensate");
    const config::tool_spec* undo = spec.find_tool(comp);
    if (!undo) {
      emit(event_type::compensation_started, {{"effect", effect_id},
                                              {"for", u64(done, "effect")},
                                              {"tool", comp},
                                              {"kind", ""},
                                              {"arguments", nullptr},
                                              {"attempt", attempt}});
      emit(event_type::compensation_completed,
           {{"effect", effect_id},
            {"for", u64(done, "effect")},
            {"ok", false},
            {"error", "the compensating tool is no longer declared by agent type " + spec.name}});
      return advance();
    }
    json args = {{"tool", str(done, "tool")},
                 {"arguments", done.value("arguments", json())},
                 {"result", done.value("result", json())},
                 {"effect", u64(done, "effect")}};
    json d = {{"effect", effect_id}, {"for", u64(done, "effect")},
              {"tool", comp},        {"kind", config::to_string(undo->kind)},
              {"arguments", args},   {"attempt", attempt}};
    if (recovered) d["recovered"] = true;
    emit(event_type::compensation_started, std::move(d));
    effect(tool_call_effect{effect_id, attempt, comp, std::move(args)});
  }

  void set_timer(int64_t due, json payload) {
    uint64_t id = next_timer++;
    emit(event_type::timer_set, {{"timer", id}, {"due_ms", due}, {"payload", payload}});
    effect(set_timer_effect{id, due, std::move(payload)});
  }

  // Decides the proposed call at turn.next.
  void decide_call(uint64_t i) {
    const json& c = turn()["calls"][i];
    const std::string name = c.value("name", "");
    const json& args = c["arguments"];
    guardrail_verdict v;
    if (args.is_object() && args.contains("$unparsed"))
      v = {guardrail_verdict::kind::invalid, "arguments", "the arguments are not valid JSON"};
    else
      v = check_tool_call(spec, name, args);
    emit(event_type::guardrail_decided, {{"call", i},
                                         {"call_id", c.value("id", "")},
                                         {"tool", name},
                                         {"verdict", to_string(v.verdict)},
                                         {"rule", v.rule},
                                         {"reason", v.reason}});
    switch (v.verdict) {
      case guardrail_verdict::kind::deny:
      case guardrail_verdict::kind::invalid:
        return;
      case guardrail_verdict::kind::require_approval:
        emit(event_type::approval_requested, {{"call", i},
                                              {"tool", name},
                                              {"arguments", args},
                                              {"rule", v.rule},
                                              {"reason", v.reason}});
        return;
      case guardrail_verdict::kind::allow:
        if (auto why = over_budget(false); !why.empty()) return complete_turn("stopped", why);
        start_tool(i, next_seq(), 1, false);
        return;
    }
  }

  // Takes the turn as far as it goes without waiting.
  void advance() {
    for (;;) {
      if (!in_turn()) {
        if (ctl["queue"].empty()) return;
        const json q = ctl["queue"][0];
        json started = {{"turn", u64(ctl, "turns") + 1},
                        {"id", q.value("id", "")},
                        {"from", q.value("from", "")}};
        if (q.contains("retry_of")) started["retry_of"] = q["retry_of"];
        emit(event_type::turn_started, std::move(started));
        continue;
      }
      if (wait().is_object()) return;
      json& t = turn();
      if (!t["failing"].is_null()) {
        if (!t["done"].empty()) {
          const json done = t["done"].back();
          start_compensation(next_seq(), 1, done, false);
          return;
        }
        const json f = t["failing"];
        complete_turn(f.value("status", "failed"), f.value("reason", ""));
        continue;
      }
      uint64_t next = u64(t, "next");
      if (next < t["calls"].size()) {
        decide_call(next);
        continue;
      }
      if (t.value("final", false)) {
        complete_turn("completed", "");
        continue;
      }
      if (auto why = over_budget(true); !why.empty()) {
        complete_turn("stopped", why);
        continue;
      }
      request_model(next_seq(), 1, false, u64(ctl["usage"], "model_requests"));
      return;
    }
  }

  // A failed attempt: retry after a durable backoff, or give up.
  void attempt_failed(const config::retry_policy& p, const effect_result_input& r,
                      bool compensation) {
    const json w = wait();
    const uint64_t eff = u64(w, "effect");
    effect(end_effect{eff});
    // A turn being cancelled or failing starts nothing new, retries included.
    const bool stopping = !turn()["failing"].is_null();
    if (r.retryable && r.attempt < p.attempts && !stopping) {
      int64_t delay = retry_delay_ms(p, eff, r.attempt);
      emit(event_type::effect_failed, {{"effect", eff},
                                       {"attempt", r.attempt},
                                       {"error", r.error},
                                       {"retryable", true},
                                       {"final", false},
                                       {"retry_in_ms", delay},
                                       {"timer", next_timer}});
      set_timer(now + delay, {{"retry", eff}, {"attempt", r.attempt + 1}});
      return;
    }
    if (compensation) {
      emit(event_type::compensation_completed,
           {{"effect", eff}, {"for", u64(w, "for")}, {"ok", false}, {"error", r.error}});
    } else {
      emit(event_type::effect_failed, {{"effect", eff},
                                       {"attempt", r.attempt},
                                       {"error", r.error},
                                       {"retryable", r.retryable},
                                       {"final", true}});
    }
    advance();
  }

  // A failed call of a non-idempotent tool that may have been applied:
  // neither retried nor failed, but in doubt until a human resolves it,
  // as after a crash. The failure is recorded with it.
  void in_doubt(const json& w, const effect_result_input& r) {
    effect(end_effect{r.effect});
    emit(event_type::effect_in_doubt, {{"effect", r.effect},
                                       {"tool", w.value("tool", "")},
                                       {"attempt", r.attempt},
                                       {"error", r.error},
                                       {"retryable", r.retryable}});
  }

  const json* find_done(uint64_t effect_id) {
    for (const auto& d : turn()["done"])
      if (u64(d, "effect") == effect_id) return &d;
    return nullptr;
  }

  // Starts attempt `attempt` of what `w` waited for (a retry or a recovery).
  void restart(const json& w, uint32_t attempt, bool recovered) {
    const std::string on = w.value("on", "");
    const uint64_t eff = u64(w, "effect");
    if (on == "model") {
      if (auto why = over_budget(true, attempt); !why.empty()) return complete_turn("stopped", why);
      return request_model(eff, attempt, recovered, u64(w, "call_index"));
    }
    if (on == "compensation") {
      const json* done = find_done(u64(w, "for"));
      if (!done) {
        // Cannot happen: a done entry leaves only with its compensation.
        emit(event_type::compensation_completed, {{"effect", eff},
                                                  {"for", u64(w, "for")},
                                                  {"ok", false},
                                                  {"error", "nothing to compensate"}});
        return advance();
      }
      const json copy = *done;
      return start_compensation(eff, attempt, copy, recovered);
    }
    start_tool(u64(w, "call"), eff, attempt, recovered);
  }
};

void reply_to(decision& out, json body) {
  out.effects.push_back(reply_ok(std::move(body)));
}

}  // namespace

int64_t retry_delay_ms(const config::retry_policy& p, uint64_t effect, uint32_t attempt) {
  double base =
      p.backoff_ms * std::pow(p.multiplier, static_cast<double>(attempt > 0 ? attempt - 1 : 0));
  base = std::min(base, static_cast<double>(p.max_backoff_ms));
  // splitmix64 of (effect, attempt): a fixed "random" spread per attempt.
  uint64_t x = effect * 0x9E3779B97F4A7C15ull + attempt;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  double unit = static_cast<double>(x >> 11) / static_cast<double>(1ull << 53);  // [0, 1)
  double spread = 1.0 + p.jitter * (2.0 * unit - 1.0);
  return std::max<int64_t>(0, std::llround(base * spread));
}

loop_type::loop_type(std::shared_ptr<const config::agent_spec> spec, std::string as_version)
    : spec_(std::move(spec)),
      version_(as_version.empty() ? spec_->hash : std::move(as_version)),
      tools_(json::array()) {
  for (const auto& t : spec_->tools)
    tools_.push_back(
        {{"type", "function"},
         {"function",
          {{"name", t.name}, {"description", t.description}, {"parameters", t.parameters}}}});
}

result<json> loop_type::initial_data(const json& input) const {
  if (!input.is_null() && !input.is_object())
    return error(code::invalid_argument,
                 "the spawn input of an agent loop must be null or an object");
  json ctl = {{"queue", json::array()},
              {"turn", nullptr},
              {"turns", 0},
              {"usage", {{"model_calls", 0}, {"tokens", 0}, {"tool_calls", 0}, {"wall_ms", 0}}},
              {"last", nullptr},
              {"spec_hash", version_}};
  return json{{"ctl", std::move(ctl)}, {"conversation", json::array()}};
}

void loop_type::on_message(const agent_state& s, const message_input&, int64_t now,
                           decision& out) const {
  // No reply now: the turn_completed of this message's turn answers it.
  loop_decider d(*this, s, now, out);
  d.advance();
}

void loop_type::on_signal(const agent_state& s, const signal_input& sig, int64_t now,
                          decision& out) const {
  // The pre-signal wait: a cancel drops passive waits in apply_ctl.
  const json before = member(member(s.data, "ctl"), "turn");
  loop_decider d(*this, s, now, out);
  const json& p = sig.payload;
  const std::string by = str(p, "by");
  if (status ok = check_loop_signal(member(s.data, "ctl"), member(s.data, "conversation"), sig);
      !ok) {
    out.effects.push_back(reply_error(
        ok.error_code() == code::conflict ? "conflict" : "invalid_argument", ok.message()));
    return;
  }

  if (sig.name == "approve" || sig.name == "reject") {
    const uint64_t i = u64(d.wait(), "call");
    const json c = d.turn()["calls"][i];
    const bool ok = sig.name == "approve";
    json ev = {{"call", i},
               {"call_id", c.value("id", "")},
               {"tool", c.value("name", "")},
               {"verdict", ok ? "approved" : "rejected"},
               {"rule", "human"},
               {"by", by},
               {"reason", str(p, "reason")}};
    // The signer's own words about who they are, beside the principal
    // that signed (only when given: older ledgers have no note).
    if (const std::string note = str(p, "note"); !note.empty()) ev["note"] = note;
    if (!ok && ev["reason"] == "")
      ev["reason"] = "rejected" + (by.empty() ? std::string() : " by " + by);
    d.emit(event_type::guardrail_decided, std::move(ev));
    if (ok) {
      if (auto why = d.over_budget(false); !why.empty())
        d.complete_turn("stopped", why);
      else
        d.start_tool(i, d.next_seq(), 1, false);
    }
    d.advance();
    return reply_to(out, {{"call", c.value("name", "")}, {ok ? "approved" : "rejected", true}});
  }
  if (sig.name == "resolve") {
    const std::string outcome = str(p, "outcome");
    const json prev = d.wait()["prev"];
    const uint64_t eff = u64(prev, "effect");
    const bool comp = prev.value("on", "") == "compensation";
    if (outcome == "succeeded") {
      json result = p.is_object() ? p.value("result", json()) : json();
      if (comp)
        d.emit(event_type::compensation_completed, {{"effect", eff},
                                                    {"for", u64(prev, "for")},
                                                    {"ok", true},
                                                    {"result", result},
                                                    {"resolved_by", by}});
      else {
        d.complete_call(prev, result, "resolved_by", by);
      }
    } else if (outcome == "failed") {
      if (comp) {
        d.emit(event_type::compensation_completed, {{"effect", eff},
                                                    {"for", u64(prev, "for")},
                                                    {"ok", false},
                                                    {"error", "resolved as failed"},
                                                    {"resolved_by", by}});
      } else {
        d.emit(event_type::effect_failed,
               {{"effect", eff},
                {"attempt", u64(prev, "attempt")},
                {"error", "resolved as failed" + (by.empty() ? "" : " by " + by)},
                {"retryable", false},
                {"final", true},
                {"resolved_by", by}});
      }
    } else {  // "retry", as check_loop_signal made sure
      d.restart(prev, static_cast<uint32_t>(u64(prev, "attempt") + 1), false);
    }
    d.advance();
    return reply_to(out, {{"resolved", outcome}, {"effect", eff}});
  }
  if (sig.name == "answer") {
    const json w = d.wait();
    d.complete_call(w, p, "answered_by", by);
    d.advance();
    return reply_to(out, {{"answered", true}});
  }
  if (sig.name == "cancel") {
    if (before["wait"].is_object() && before["wait"].value("on", "") == "worker")
      d.effect(end_effect{u64(before["wait"], "effect")});
    d.advance();
    return reply_to(out, {{"cancelled", true}});
  }
  if (sig.name == "retry") {
    // The fold queued the failed turn's input: the turn starts now, and
    // its end answers the retry (as a message's turn answers the message).
    d.advance();
    return;
  }
  const bool queued = before.is_object();
  d.advance();
  reply_to(out, {{"status", queued ? "queued" : "started"}});
}

std::vector<std::string> loop_type::signals() const {
  std::vector<std::string> out(config::loop_signals.begin(), config::loop_signals.end());
  out.insert(out.end(), spec_->signals.begin(), spec_->signals.end());
  return out;
}

status loop_type::signal_applies(const agent_state& s, const signal_input& sig) const {
  return check_loop_signal(member(s.data, "ctl"), member(s.data, "conversation"), sig);
}

void loop_type::on_timer(const agent_state& s, const pending_timer& t, int64_t now,
                         decision& out) const {
  loop_decider d(*this, s, now, out);
  const json& p = t.payload;
  const std::string on = d.wait_on();
  if (p.contains("sleep")) {
    if (on != "sleep" || u64(d.wait(), "effect") != u64(p, "sleep")) return;
    const json w = d.wait();
    d.complete_call(w, {{"slept_ms", p.value("ms", int64_t{0})}});
    return d.advance();
  }
  if (p.contains("retry")) {
    if (on != "retry") return;
    const json prev = d.wait()["prev"];
    if (u64(prev, "effect") != u64(p, "retry")) return;
    d.restart(prev, static_cast<uint32_t>(u64(p, "attempt")), false);
    return d.advance();
  }
}

void loop_type::on_effect_result(const agent_state& s, const effect_result_input& r, int64_t now,
                                 decision& out) const {
  loop_decider d(*this, s, now, out);
  const std::string on = d.wait_on();
  if ((on != "model" && on != "tool" && on != "worker" && on != "compensation") ||
      u64(d.wait(), "effect") != r.effect || u64(d.wait(), "attempt") != r.attempt) {
    out.effects.push_back(reply_error("conflict", "stale effect result"));
    return;
  }
  const json w = d.wait();
  if (on == "model") {
    if (r.ok &&
        (!r.result.is_object() || !r.result.value("tool_calls", json::array()).is_array())) {
      effect_result_input bad = r;
      bad.ok = false;
      bad.retryable = false;
      bad.error = "the model's reply is malformed: " + r.result.dump().substr(0, 200);
      return d.attempt_failed(spec_->model.retry, bad, false);
    }
    if (!r.ok) return d.attempt_failed(spec_->model.retry, r, false);
    d.effect(end_effect{r.effect});
    json tool_calls = json::array();
    for (const auto& c : r.result.value("tool_calls", json::array()))
      if (c.is_object())
        tool_calls.push_back({{"id", c.value("id", "")},
                              {"name", c.value("name", "")},
                              {"arguments", c.value("arguments", json())}});
    const json& content = r.result.value("content", json());
    d.emit(event_type::model_replied, {{"effect", r.effect},
                                       {"content", content.is_string() ? content : json()},
                                       {"tool_calls", std::move(tool_calls)},
                                       {"usage", r.result.value("usage", json::object())},
                                       {"finish_reason", r.result.value("finish_reason", "")}});
    d.advance();
    return reply_to(out, {{"recorded", true}});
  }
  const config::tool_spec* ts = spec_->find_tool(w.value("tool", ""));
  const config::retry_policy policy = ts ? ts->retry : config::retry_policy{};
  // At most once: a non-idempotent call that may have happened is never run
  // again on its own, whatever the retry policy says.
  const bool idempotent = ts && (ts->idempotent || is_builtin_idempotent(ts->kind));
  if (!r.ok && r.maybe_applied && !idempotent) {
    d.in_doubt(w, r);
    return reply_to(out, {{"recorded", true}, {"in_doubt", true}});
  }
  if (on == "compensation") {
    if (!r.ok) return d.attempt_failed(policy, r, true);
    d.effect(end_effect{r.effect});
    d.emit(event_type::compensation_completed,
           {{"effect", r.effect}, {"for", u64(w, "for")}, {"ok", true}, {"result", r.result}});
    d.advance();
    return reply_to(out, {{"recorded", true}});
  }
  if (!r.ok) return d.attempt_failed(policy, r, false);
  d.effect(end_effect{r.effect});
  d.complete_call(w, r.result);
  d.advance();
  reply_to(out, {{"recorded", true}});
}

bool loop_type::needs_recovery(const agent_state& s) const {
  const json& turn = member(member(s.data, "ctl"), "turn");
  if (!turn.is_object() || !turn["wait"].is_object()) return false;
  const std::string on = turn["wait"].value("on", "");
  return on == "model" || on == "tool" ||
         (on == "compensation" && turn["wait"].value("kind", "") != "worker");
}

void loop_type::on_recover(const agent_state& s, const recover_input& r, int64_t now,
                           decision& out) const {
  if (!needs_recovery(s)) return;
  const json w = member(member(s.data, "ctl"), "turn")["wait"];
  const std::string on = w.value("on", "");
  const uint64_t eff = u64(w, "effect");
  const auto attempt = static_cast<uint32_t>(u64(w, "attempt"));
  const config::tool_spec* ts = spec_->find_tool(w.value("tool", ""));
  const bool idempotent = ts && (ts->idempotent || is_builtin_idempotent(ts->kind));
  const auto crashes = r.node_crashes.find(eff);
  if ((on == "model" || idempotent) && r.max_crashes > 0 && crashes != r.node_crashes.end() &&
      crashes->second >= r.max_crashes) {
    const effect_result_input refused{
        eff,
        attempt,
        false,
        nullptr,
        "the node stopped " + std::to_string(crashes->second) +
            " times in a row while this call was running; it is not started again (a crash "
            "loop? docs/operations.md, \"Faults\")",
        false};
    return on_effect_result(s, refused, now, out);
  }
  loop_decider d(*this, s, now, out);
  const uint32_t next = attempt + 1;
  if (on == "model") return d.restart(w, next, true);
  if (idempotent) return d.restart(w, next, true);
  d.effect(end_effect{eff});
  d.emit(event_type::effect_in_doubt,
         {{"effect", eff}, {"tool", w.value("tool", "")}, {"attempt", u64(w, "attempt")}});
}

void loop_type::apply(agent_state& s, const event& e) const {
  json& ctl = s.data["ctl"];
  apply_conversation(s.data["conversation"], ctl, e);
  apply_ctl(ctl, e, s.data["conversation"]);
}

status loop_type::can_take_over(const agent_state& s) const {
  const json& turn = member(member(s.data, "ctl"), "turn");
  const json& w = member(turn, "wait");
  if (!w.is_object()) return status::ok();
  // The tool of the call it waits in: named by the wait, by the call it
  // points at, or by the call in doubt.
  std::string tool = w.value("tool", "");
  const json& calls = member(turn, "calls");
  if (tool.empty() && w.contains("call") && calls.is_array() && u64(w, "call") < calls.size())
    tool = calls[u64(w, "call")].value("name", "");
  const json& prev = member(w, "prev");
  if (tool.empty() && prev.is_object()) tool = prev.value("tool", "");
  if (tool.empty() || spec_->find_tool(tool)) return status::ok();
  return error(code::conflict, "the agent waits (" + phase(s) + ") in a call of tool " + tool +
                                   ", which version " + version_ + " does not have");
}

std::vector<uint64_t> loop_type::open_effects(const agent_state& s) const {
  const json& turn = member(member(s.data, "ctl"), "turn");
  if (!turn.is_object() || !turn["wait"].is_object()) return {};
  const json& w = turn["wait"];
  if (!is_running_wait(w.value("on", ""))) return {};
  return {u64(w, "effect")};
}

std::string loop_type::phase(const agent_state& s) const {
  const json& ctl = member(s.data, "ctl");
  const json& turn = member(ctl, "turn");
  if (s.status != "active") return s.status;
  if (!turn.is_object()) return "idle";
  if (!turn["wait"].is_object()) return "running";
  const std::string on = turn["wait"].value("on", "");
  if (on == "model") return "thinking";
  if (on == "tool") return "running_tool";
  if (on == "worker") return "waiting_worker";
  if (on == "approval") return "waiting_approval";
  if (on == "human") return "waiting_human";
  if (on == "sleep") return "sleeping";
  if (on == "in_doubt") return "in_doubt";
  if (on == "retry") return "retrying";
  if (on == "compensation") return "compensating";
  return on;
}

std::string loop_type::turn_id(const agent_state& s) const {
  return str(member(member(s.data, "ctl"), "turn"), "id");
}

json loop_type::view(const agent_state& s) const {
  const json& ctl = member(s.data, "ctl");
  const json& turn = member(ctl, "turn");
  json v = {{"phase", phase(s)},
            {"turns", ctl.value("turns", 0)},
            {"queued", member(ctl, "queue").size()},
            {"usage", ctl.value("usage", json::object())},
            {"last", ctl.value("last", json())}};
  if (turn.is_object()) {
    json t = {{"turn", turn.value("n", 0)},
              {"steps", turn.value("steps", 0)},
              {"tool_calls", turn.value("tool_calls", 0)}};
    const json& w = turn["wait"];
    if (w.is_object()) {
      json wait = w;
      if (w.contains("call") && u64(w, "call") < turn["calls"].size()) {
        const json& c = turn["calls"][u64(w, "call")];
        wait["tool"] = c.value("name", "");
        wait["arguments"] = c.value("arguments", json());
      }
      if (w.value("on", "") == "in_doubt") {
        const json& prev = w["prev"];
        wait["effect"] = u64(prev, "effect");
        wait["tool"] = prev.value("tool", "");
      }
      t["wait"] = std::move(wait);
    }
    if (!turn["failing"].is_null()) t["failing"] = turn["failing"];
    v["turn"] = std::move(t);
  }
  return v;
}

result<json> loop_type::query(const agent_state& s, const json& q) const {
  if (q.is_null() || (q.is_object() && q.empty())) return view(s);
  if (q.is_object() && q.size() == 1 && q.value("conversation", false) == true)
    return json{{"conversation", s.data.value("conversation", json::array())}};
  return error(code::invalid_argument,
               "an agent loop answers the queries {} and {\"conversation\": true}");
}

json loop_type::model_request(const agent_state& s) const {
  // One copy of the conversation, which the request must own (it goes to
  // an effect thread); value() would copy it once more.
  json messages = json::array();
  auto conv = s.data.find("conversation");
  const std::size_t n = conv != s.data.end() && conv->is_array() ? conv->size() : 0;
  messages.get_ref<json::array_t&>().reserve(n + 1);
  if (!spec_->instructions.empty())
    messages.push_back({{"role", "system"}, {"content", spec_->instructions}});
  if (n > 0)
    for (const auto& m : *conv) messages.push_back(m);
  json req = json::object();
  req["messages"] = std::move(messages);
  if (!tools_.empty()) req["tools"] = tools_;
  return req;
}

}  // namespace keel::agent
