#pragma once
// Internal to agent/: one decision of the agent loop (loop_decider.cpp).
// It holds a copy of the control state with every event it emits folded
// in, so each step sees the state the previous one left, as apply() will.

#include <cstdint>
#include <optional>
#include <string>

#include "agent/core.hpp"
#include "agent/loop.hpp"
#include "agent/loop_fold.hpp"
#include "agent/loop_state.hpp"

namespace keel::agent::loop_detail {

// The control state of `s`; an idle one when it has none (a loop whose
// spawned data did not decode decides as if nothing happened yet).
const loop_state& control_of(const agent_state& s);

struct loop_decider {
  const loop_type& type;
  const config::agent_spec& spec;
  const agent_state& s;
  int64_t now;
  decision& out;
  loop_state ctl;  // control_of(s) with every event of `out` applied
  uint64_t next_timer;

  // The generic event (message_received, signal_received, timer_fired) is
  // already in `o`; the loop's view includes it.
  loop_decider(const loop_type& t, const agent_state& st, int64_t n, decision& o);

  uint64_t next_seq() const { return s.last_seq + out.events.size() + 1; }
  bool in_turn() const { return ctl.turn.has_value(); }
  // REQUIRES: in_turn().
  loop_turn& turn() { return *ctl.turn; }
  // What the turn waits for; nullptr when no turn runs or it waits for nothing.
  loop_wait* wait() { return in_turn() && turn().wait ? &*turn().wait : nullptr; }
  std::optional<wait_on> wait_on_now() const { return wait_of(ctl); }

  // The conversation as the state holds it (the decider does not fold it).
  const json& conversation() const { return member(s.data, "conversation"); }

  void emit(event_type t, json data);
  void effect(agent::effect fx) { out.effects.push_back(std::move(fx)); }

  // effect_completed for the call `w` waited on, with the compensating tool
  // recorded, so folding never depends on the spec of the day.
  void complete_call(const loop_wait& w, json result, const char* who_key = nullptr,
                     const std::string& who = {});
  // The reason the turn must stop before another model call (model=true)
  // or tool call, or "" when it may go on.
  std::string over_budget(bool model, uint32_t attempt = 1);
  // Ends the turn and answers the input that started it.
  void complete_turn(const std::string& status, const std::string& reason);
  void request_model(uint64_t effect_id, uint32_t attempt, bool recovered, uint64_t call_index);
  void start_tool(uint64_t i, uint64_t effect_id, uint32_t attempt, bool recovered);
  void start_compensation(uint64_t effect_id, uint32_t attempt, const loop_done& done,
                          bool recovered);
  void set_timer(int64_t due, json payload);
  void decide_call(uint64_t i);
  // Takes the turn as far as it goes without waiting.
  void advance();
  // A failed attempt: retry after a durable backoff, or give up.
  void attempt_failed(const config::retry_policy& p, const effect_result_input& r,
                      bool compensation);
  // A failed call that may have been applied: in doubt until resolved.
  void in_doubt(const loop_wait& w, const effect_result_input& r);
  // Starts attempt `attempt` of what `w` waited for (a retry or a recovery).
  void restart(const loop_wait& w, uint32_t attempt, bool recovered);
};

void reply_to(decision& out, json body);

}  // namespace keel::agent::loop_detail
