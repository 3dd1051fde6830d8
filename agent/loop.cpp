#include "agent/loop.hpp"

#include <algorithm>
#include <cmath>

#include "agent/loop_decider.hpp"
#include "agent/loop_fold.hpp"

namespace keel::agent {

using namespace loop_detail;

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
  // The pre-signal turn: a cancel drops passive waits in apply_ctl.
  const loop_state& before = control_of(s);
  const bool had_turn = before.turn.has_value();
  const std::optional<loop_wait> before_wait = had_turn ? before.turn->wait : std::nullopt;
  if (status ok = check_loop_signal(before, member(s.data, "conversation"), sig); !ok) {
    out.effects.push_back(reply_error(
        ok.error_code() == code::conflict ? "conflict" : "invalid_argument", ok.message()));
    return;
  }
  loop_decider d(*this, s, now, out);
  const json& p = sig.payload;
  const std::string by = str(p, "by");

  if (sig.name == "approve" || sig.name == "reject") {
    const uint64_t i = d.wait()->call_no();
    const loop_call c = d.turn().calls.at(i);
    const bool ok = sig.name == "approve";
    json ev = {{"call", i},
               {"call_id", c.id},
               {"tool", c.name},
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
    return reply_to(out, {{"call", c.name}, {ok ? "approved" : "rejected", true}});
  }
  if (sig.name == "resolve") {
    const std::string outcome = str(p, "outcome");
    static const loop_wait none;
    const loop_wait prev = d.wait()->about() ? *d.wait()->about() : none;
    const uint64_t eff = prev.effect_id();
    const bool comp = prev.on == wait_on::compensation;
    if (outcome == "succeeded") {
      json result = p.is_object() ? p.value("result", json()) : json();
      if (comp)
        d.emit(event_type::compensation_completed, {{"effect", eff},
                                                    {"for", prev.for_effect.value_or(0)},
                                                    {"ok", true},
                                                    {"result", result},
                                                    {"resolved_by", by}});
      else
        d.complete_call(prev, result, "resolved_by", by);
    } else if (outcome == "failed") {
      if (comp) {
        d.emit(event_type::compensation_completed, {{"effect", eff},
                                                    {"for", prev.for_effect.value_or(0)},
                                                    {"ok", false},
                                                    {"error", "resolved as failed"},
                                                    {"resolved_by", by}});
      } else {
        d.emit(event_type::effect_failed,
               {{"effect", eff},
                {"attempt", prev.attempt_no()},
                {"error", "resolved as failed" + (by.empty() ? "" : " by " + by)},
                {"retryable", false},
                {"final", true},
                {"resolved_by", by}});
      }
    } else {  // "retry", as check_loop_signal made sure
      d.restart(prev, static_cast<uint32_t>(prev.attempt_no() + 1), false);
    }
    d.advance();
    return reply_to(out, {{"resolved", outcome}, {"effect", eff}});
  }
  if (sig.name == "answer") {
    const loop_wait w = *d.wait();
    d.complete_call(w, p, "answered_by", by);
    d.advance();
    return reply_to(out, {{"answered", true}});
  }
  if (sig.name == "cancel") {
    if (before_wait && before_wait->on == wait_on::worker)
      d.effect(end_effect{before_wait->effect_id()});
    d.advance();
    return reply_to(out, {{"cancelled", true}});
  }
  if (sig.name == "retry") {
    // The fold queued the failed turn's input: the turn starts now, and
    // its end answers the retry (as a message's turn answers the message).
    d.advance();
    return;
  }
  d.advance();
  reply_to(out, {{"status", had_turn ? "queued" : "started"}});
}

std::vector<std::string> loop_type::signals() const {
  std::vector<std::string> out(config::loop_signals.begin(), config::loop_signals.end());
  out.insert(out.end(), spec_->signals.begin(), spec_->signals.end());
  return out;
}

status loop_type::signal_applies(const agent_state& s, const signal_input& sig) const {
  return check_loop_signal(control_of(s), member(s.data, "conversation"), sig);
}

void loop_type::on_timer(const agent_state& s, const pending_timer& t, int64_t now,
                         decision& out) const {
  loop_decider d(*this, s, now, out);
  const json& p = t.payload;
  const loop_wait* w = d.wait();
  if (p.contains("sleep")) {
    if (!w || w->on != wait_on::sleep || w->effect_id() != u64(p, "sleep")) return;
    const loop_wait slept = *w;
    d.complete_call(slept, {{"slept_ms", p.value("ms", int64_t{0})}});
    return d.advance();
  }
  if (p.contains("retry")) {
    if (!w || w->on != wait_on::retry) return;
    static const loop_wait none;
    const loop_wait prev = w->about() ? *w->about() : none;
    if (prev.effect_id() != u64(p, "retry")) return;
    d.restart(prev, static_cast<uint32_t>(u64(p, "attempt")), false);
    return d.advance();
  }
}

void loop_type::on_effect_result(const agent_state& s, const effect_result_input& r, int64_t now,
                                 decision& out) const {
  loop_decider d(*this, s, now, out);
  const loop_wait* waiting = d.wait();
  if (!waiting || !is_running_wait(waiting->on) || waiting->effect_id() != r.effect ||
      waiting->attempt_no() != r.attempt) {
    out.effects.push_back(reply_error("conflict", "stale effect result"));
    return;
  }
  const loop_wait w = *waiting;
  if (w.on == wait_on::model) {
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
  const config::tool_spec* ts = spec_->find_tool(w.tool_name());
  const config::retry_policy policy = ts ? ts->retry : config::retry_policy{};
  // At most once: a non-idempotent call that may have happened is never run
  // again on its own, whatever the retry policy says.
  const bool idempotent = ts && (ts->idempotent || is_builtin_idempotent(ts->kind));
  if (!r.ok && r.maybe_applied && !idempotent) {
    d.in_doubt(w, r);
    return reply_to(out, {{"recorded", true}, {"in_doubt", true}});
  }
  if (w.on == wait_on::compensation) {
    if (!r.ok) return d.attempt_failed(policy, r, true);
    d.effect(end_effect{r.effect});
    d.emit(event_type::compensation_completed, {{"effect", r.effect},
                                                {"for", w.for_effect.value_or(0)},
                                                {"ok", true},
                                                {"result", r.result}});
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
  const std::optional<wait_on> on = wait_of(control_of(s));
  if (!on) return false;
  return on == wait_on::model || on == wait_on::tool ||
         (on == wait_on::compensation && control_of(s).turn->wait->kind != "worker");
}

void loop_type::on_recover(const agent_state& s, const recover_input& r, int64_t now,
                           decision& out) const {
  if (!needs_recovery(s)) return;
  const loop_wait w = *control_of(s).turn->wait;
  const uint64_t eff = w.effect_id();
  const auto attempt = static_cast<uint32_t>(w.attempt_no());
  const config::tool_spec* ts = spec_->find_tool(w.tool_name());
  const bool idempotent = ts && (ts->idempotent || is_builtin_idempotent(ts->kind));
  const bool model = w.on == wait_on::model;
  const auto crashes = r.node_crashes.find(eff);
  if ((model || idempotent) && r.max_crashes > 0 && crashes != r.node_crashes.end() &&
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
  if (model || idempotent) return d.restart(w, next, true);
  d.effect(end_effect{eff});
  d.emit(event_type::effect_in_doubt,
         {{"effect", eff}, {"tool", w.tool_name()}, {"attempt", w.attempt_no()}});
}

void loop_type::apply(agent_state& s, const event& e) const {
  if (!s.loop) s.loop.emplace();
  apply_conversation(s.data["conversation"], *s.loop, e);
  apply_ctl(*s.loop, e, s.data["conversation"]);
}

status loop_type::can_take_over(const agent_state& s) const {
  const loop_state& ctl = control_of(s);
  if (!ctl.turn || !ctl.turn->wait) return status::ok();
  const loop_turn& turn = *ctl.turn;
  const loop_wait& w = *turn.wait;
  // The tool of the call it waits in: named by the wait, by the call it
  // points at, or by the call in doubt.
  std::string tool = w.tool_name();
  if (tool.empty() && w.call && *w.call < turn.calls.size()) tool = turn.calls[*w.call].name;
  if (tool.empty() && w.about()) tool = w.about()->tool_name();
  if (tool.empty() || spec_->find_tool(tool)) return status::ok();
  return error(code::conflict, "the agent waits (" + phase(s) + ") in a call of tool " + tool +
                                   ", which version " + version_ + " does not have");
}

std::vector<uint64_t> loop_type::open_effects(const agent_state& s) const {
  const loop_state& ctl = control_of(s);
  if (!ctl.turn || !ctl.turn->wait || !is_running_wait(ctl.turn->wait->on)) return {};
  return {ctl.turn->wait->effect_id()};
}

namespace {

// The phase an agent loop shows while its turn waits on `on`.
const char* phase_of(wait_on on) {
  switch (on) {
    case wait_on::model:
      return "thinking";
    case wait_on::tool:
      return "running_tool";
    case wait_on::worker:
      return "waiting_worker";
    case wait_on::approval:
      return "waiting_approval";
    case wait_on::human:
      return "waiting_human";
    case wait_on::sleep:
      return "sleeping";
    case wait_on::in_doubt:
      return "in_doubt";
    case wait_on::retry:
      return "retrying";
    case wait_on::compensation:
      return "compensating";
  }
  return "running";
}

}  // namespace

std::string loop_type::phase(const agent_state& s) const {
  if (s.status != agent_status::active) return std::string(to_string(s.status));
  const loop_state& ctl = control_of(s);
  if (!ctl.turn) return "idle";
  if (!ctl.turn->wait) return "running";
  return phase_of(ctl.turn->wait->on);
}

std::string loop_type::turn_id(const agent_state& s) const {
  const loop_state& ctl = control_of(s);
  return ctl.turn ? ctl.turn->id : std::string();
}

json loop_type::view(const agent_state& s) const {
  const loop_state& ctl = control_of(s);
  json v = {{"phase", phase(s)},
            {"turns", ctl.turns},
            {"queued", ctl.queue.size()},
            {"usage", to_json(ctl.usage)},
            {"last", ctl.last ? to_json(*ctl.last) : json()}};
  if (ctl.turn) {
    const loop_turn& turn = *ctl.turn;
    json t = {{"turn", turn.n}, {"steps", turn.steps}, {"tool_calls", turn.tool_calls}};
    if (turn.wait) {
      const loop_wait& w = *turn.wait;
      json wait = to_json(w);
      if (w.call && *w.call < turn.calls.size()) {
        wait["tool"] = turn.calls[*w.call].name;
        wait["arguments"] = turn.calls[*w.call].arguments;
      }
      if (w.on == wait_on::in_doubt) {
        wait["effect"] = w.about() ? w.about()->effect_id() : 0;
        wait["tool"] = w.about() ? w.about()->tool_name() : std::string();
      }
      t["wait"] = std::move(wait);
    }
    if (turn.failing)
      t["failing"] = {{"status", turn.failing->status}, {"reason", turn.failing->reason}};
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
