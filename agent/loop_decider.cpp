// The steps of one agent-loop decision: budgets, model and tool calls,
// guardrails, compensations, retries. Each emitted event is folded into the
// decider's copy of the control state at once (apply_ctl), the same fold
// apply() runs on the recorded event.

#include "agent/loop_decider.hpp"

#include <algorithm>

#include "agent/guardrails.hpp"

namespace keel::agent::loop_detail {

using config::tool_kind;

const loop_state& control_of(const agent_state& s) {
  static const loop_state idle;
  return s.loop ? *s.loop : idle;
}

void reply_to(decision& out, json body) {
  out.effects.push_back(reply_ok(std::move(body)));
}

loop_decider::loop_decider(const loop_type& t, const agent_state& st, int64_t n, decision& o)
    : type(t),
      spec(t.spec()),
      s(st),
      now(n),
      out(o),
      ctl(control_of(st)),
      next_timer(st.next_timer_id) {
  for (const auto& e : out.events) apply_ctl(ctl, e, conversation());
}

void loop_decider::emit(event_type t, json data) {
  event e{t, now, std::move(data)};
  apply_ctl(ctl, e, conversation());
  out.events.push_back(std::move(e));
}

void loop_decider::complete_call(const loop_wait& w, json result, const char* who_key,
                                 const std::string& who) {
  const std::vector<loop_call>& calls = turn().calls;
  const std::string call_id = w.call_no() < calls.size() ? calls[w.call_no()].id : std::string();
  const std::string& tool = w.tool_name();
  json d = {{"effect", w.effect_id()},
            {"call_id", call_id},
            {"tool", tool},
            {"result", std::move(result)}};
  if (const config::tool_spec* ts = spec.find_tool(tool); ts && !ts->compensate.empty())
    d["compensate"] = ts->compensate;
  if (who_key) d[who_key] = who;
  emit(event_type::effect_completed, std::move(d));
}

// --- budgets -----------------------------------------------------------------

std::string loop_decider::over_budget(bool model, uint32_t attempt) {
  const auto& b = spec.budgets;
  const loop_turn& t = turn();
  const loop_usage& u = ctl.usage;
  const uint64_t turn_wall = busy_ms(t, now);
  auto hit = [](uint64_t used, uint64_t limit) { return limit != 0 && used >= limit; };
  auto say = [](const char* scope, const char* what, uint64_t limit) {
    return std::string("budget exhausted: ") + scope + " " + what + " (" + std::to_string(limit) +
           ")";
  };
  if (model && attempt == 1 && t.steps >= spec.max_steps_per_turn)
    return "max_steps_per_turn (" + std::to_string(spec.max_steps_per_turn) + ") reached";
  if (model && hit(t.model_calls, b.per_turn.model_calls))
    return say("per-turn", "model_calls", b.per_turn.model_calls);
  if (model && hit(u.model_calls, b.lifetime.model_calls))
    return say("lifetime", "model_calls", b.lifetime.model_calls);
  if (!model && hit(t.tool_calls, b.per_turn.tool_calls))
    return say("per-turn", "tool_calls", b.per_turn.tool_calls);
  if (!model && hit(u.tool_calls, b.lifetime.tool_calls))
    return say("lifetime", "tool_calls", b.lifetime.tool_calls);
  if (hit(t.tokens, b.per_turn.tokens)) return say("per-turn", "tokens", b.per_turn.tokens);
  if (hit(u.tokens, b.lifetime.tokens)) return say("lifetime", "tokens", b.lifetime.tokens);
  if (hit(turn_wall, b.per_turn.wall_ms)) return say("per-turn", "wall_ms", b.per_turn.wall_ms);
  if (hit(u.wall_ms + turn_wall, b.lifetime.wall_ms))
    return say("lifetime", "wall_ms", b.lifetime.wall_ms);
  return {};
}

// An effect the turn still waits on (a recovery that hit a budget) is
// abandoned.
void loop_decider::complete_turn(const std::string& status, const std::string& reason) {
  if (const loop_wait* w = wait(); w && is_running_wait(w->on)) effect(end_effect{w->effect_id()});
  json d = {{"turn", turn().n}, {"status", status}};
  if (status == "completed")
    d["answer"] = turn().answer;
  else
    d["reason"] = reason;
  reply_effect answer = reply_ok(d);
  answer.to = turn().id;
  emit(event_type::turn_completed, std::move(d));
  if (!answer.to.empty()) effect(std::move(answer));
}

// --- steps -------------------------------------------------------------------

// `call_index` numbers the agent's model calls (not attempts): every
// attempt of one call carries the same, so a scripted model answers a
// retry as it would have answered the first attempt.
void loop_decider::request_model(uint64_t effect_id, uint32_t attempt, bool recovered,
                                 uint64_t call_index) {
  json d = {{"effect", effect_id},
            {"attempt", attempt},
            {"call_index", call_index},
            {"step", turn().steps + (attempt == 1)}};
  if (recovered) d["recovered"] = true;
  emit(event_type::model_requested, std::move(d));
  effect(model_call_effect{effect_id, attempt, call_index});
}

void loop_decider::start_tool(uint64_t i, uint64_t effect_id, uint32_t attempt, bool recovered) {
  static const loop_call none;
  const loop_call& c = i < turn().calls.size() ? turn().calls[i] : none;
  const std::string name = c.name;
  const std::string call_id = c.id;
  const config::tool_spec* found = spec.find_tool(name);
  if (!found) {
    // The spec changed under a waiting call (a restart with a new spec):
    // the call is refused like any unknown tool.
    emit(event_type::guardrail_decided,
         {{"call", i},
          {"call_id", call_id},
          {"tool", name},
          {"verdict", "invalid"},
          {"rule", "unknown_tool"},
          {"reason", "tool " + name + " is no longer declared by agent type " + spec.name}});
    return;
  }
  const config::tool_spec& ts = *found;
  const json args = c.arguments;
  json d = {{"effect", effect_id},
            {"call", i},
            {"call_id", call_id},
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

void loop_decider::start_compensation(uint64_t effect_id, uint32_t attempt, const loop_done& done,
                                      bool recovered) {
  const std::string& comp = done.compensate;
  const config::tool_spec* undo = spec.find_tool(comp);
  if (!undo) {
    emit(event_type::compensation_started, {{"effect", effect_id},
                                            {"for", done.effect},
                                            {"tool", comp},
                                            {"kind", ""},
                                            {"arguments", nullptr},
                                            {"attempt", attempt}});
    emit(event_type::compensation_completed,
         {{"effect", effect_id},
          {"for", done.effect},
          {"ok", false},
          {"error", "the compensating tool is no longer declared by agent type " + spec.name}});
    return advance();
  }
  json args = {{"tool", done.tool},
               {"arguments", done.arguments},
               {"result", done.result},
               {"effect", done.effect}};
  json d = {{"effect", effect_id}, {"for", done.effect},
            {"tool", comp},        {"kind", config::to_string(undo->kind)},
            {"arguments", args},   {"attempt", attempt}};
  if (recovered) d["recovered"] = true;
  emit(event_type::compensation_started, std::move(d));
  effect(tool_call_effect{effect_id, attempt, comp, std::move(args)});
}

void loop_decider::set_timer(int64_t due, json payload) {
  uint64_t id = next_timer++;
  emit(event_type::timer_set, {{"timer", id}, {"due_ms", due}, {"payload", payload}});
  effect(set_timer_effect{id, due, std::move(payload)});
}

// Decides the proposed call at turn.next.
void loop_decider::decide_call(uint64_t i) {
  const loop_call c = turn().calls[i];
  const json& args = c.arguments;
  guardrail_verdict v;
  if (args.is_object() && args.contains("$unparsed"))
    v = {guardrail_verdict::kind::invalid, "arguments", "the arguments are not valid JSON"};
  else
    v = check_tool_call(spec, c.name, args);
  emit(event_type::guardrail_decided, {{"call", i},
                                       {"call_id", c.id},
                                       {"tool", c.name},
                                       {"verdict", to_string(v.verdict)},
                                       {"rule", v.rule},
                                       {"reason", v.reason}});
  switch (v.verdict) {
    case guardrail_verdict::kind::deny:
    case guardrail_verdict::kind::invalid:
      return;
    case guardrail_verdict::kind::require_approval:
      emit(event_type::approval_requested, {{"call", i},
                                            {"tool", c.name},
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

void loop_decider::advance() {
  for (;;) {
    if (!in_turn()) {
      if (ctl.queue.empty()) return;
      const queued_input& q = ctl.queue.front();
      json started = {{"turn", ctl.turns + 1}, {"id", q.id}, {"from", q.from}};
      if (q.retry_of) started["retry_of"] = *q.retry_of;
      emit(event_type::turn_started, std::move(started));
      continue;
    }
    if (wait()) return;
    loop_turn& t = turn();
    if (t.failing) {
      if (!t.done.empty()) {
        const loop_done done = t.done.back();
        start_compensation(next_seq(), 1, done, false);
        return;
      }
      const turn_failing f = *t.failing;
      complete_turn(f.status, f.reason);
      continue;
    }
    if (t.next < t.calls.size()) {
      decide_call(t.next);
      continue;
    }
    if (t.final) {
      complete_turn("completed", "");
      continue;
    }
    if (auto why = over_budget(true); !why.empty()) {
      complete_turn("stopped", why);
      continue;
    }
    request_model(next_seq(), 1, false, ctl.usage.model_requests.value_or(0));
    return;
  }
}

void loop_decider::attempt_failed(const config::retry_policy& p, const effect_result_input& r,
                                  bool compensation) {
  const loop_wait w = *wait();
  const uint64_t eff = w.effect_id();
  effect(end_effect{eff});
  // A turn being cancelled or failing starts nothing new, retries included.
  const bool stopping = turn().failing.has_value();
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
         {{"effect", eff}, {"for", w.for_effect.value_or(0)}, {"ok", false}, {"error", r.error}});
  } else {
    emit(event_type::effect_failed, {{"effect", eff},
                                     {"attempt", r.attempt},
                                     {"error", r.error},
                                     {"retryable", r.retryable},
                                     {"final", true}});
  }
  advance();
}

// Neither retried nor failed, but in doubt until a human resolves it, as
// after a crash. The failure is recorded with it.
void loop_decider::in_doubt(const loop_wait& w, const effect_result_input& r) {
  effect(end_effect{r.effect});
  emit(event_type::effect_in_doubt, {{"effect", r.effect},
                                     {"tool", w.tool_name()},
                                     {"attempt", r.attempt},
                                     {"error", r.error},
                                     {"retryable", r.retryable}});
}

void loop_decider::restart(const loop_wait& w, uint32_t attempt, bool recovered) {
  const uint64_t eff = w.effect_id();
  if (w.on == wait_on::model) {
    if (auto why = over_budget(true, attempt); !why.empty()) return complete_turn("stopped", why);
    return request_model(eff, attempt, recovered, w.call_index.value_or(0));
  }
  if (w.on == wait_on::compensation) {
    const uint64_t for_effect = w.for_effect.value_or(0);
    const auto& done = turn().done;
    auto it = std::find_if(done.begin(), done.end(),
                           [&](const loop_done& d) { return d.effect == for_effect; });
    if (it == done.end()) {
      // Cannot happen: a done entry leaves only with its compensation.
      emit(event_type::compensation_completed, {{"effect", eff},
                                                {"for", for_effect},
                                                {"ok", false},
                                                {"error", "nothing to compensate"}});
      return advance();
    }
    const loop_done copy = *it;
    return start_compensation(eff, attempt, copy, recovered);
  }
  start_tool(w.call_no(), eff, attempt, recovered);
}

}  // namespace keel::agent::loop_detail
