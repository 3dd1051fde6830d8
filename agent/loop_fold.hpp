#pragma once
// Internal to agent/: how the agent loop folds events into its state
// (loop_fold.cpp) and the small readers decide() shares with it. The control
// state is agent_state::loop (agent/loop_state.hpp); the conversation is the
// data's "conversation".

#include <cstdint>
#include <optional>
#include <string>

#include "agent/core.hpp"
#include "agent/event.hpp"
#include "agent/loop_state.hpp"
#include "config/agent_spec.hpp"

namespace keel::agent::loop_detail {

// Signals the loop interprets itself (config::loop_signals) and the node's;
// any other signal starts a turn.
bool is_control_signal(const std::string& name);

// Why a retry cannot start now ("" when it can): a turn runs or waits, or
// the last turn neither failed nor was stopped. `conv`: the conversation,
// where the failed turn's input is.
std::string retry_refusal(const loop_state& ctl, const json& conv);

// Whether a signal the loop interprets applies to its control state `ctl`
// as it was before the signal (`conv`: its conversation): ok, conflict
// with the reason, or invalid_argument for a resolve without an outcome.
// The one check of the node's acceptance (loop_type::signal_applies) and
// of the decision, which refuses what was accepted behind other input and
// no longer applies.
status check_loop_signal(const loop_state& ctl, const json& conv, const signal_input& sig);

// Fields of JSON from outside, never trusted to have a shape: "" / 0 when
// absent, of another type, or `j` is no object.
std::string str(const json& j, const char* key);
uint64_t u64(const json& j, const char* key);

// The member `key` of `j` by reference (a shared null when absent): reads
// of the state without copying it.
const json& member(const json& j, const char* key);

bool is_builtin_idempotent(config::tool_kind k);
// Waits with an effect marker: something runs or is queued for them.
bool is_running_wait(wait_on on);
// Waits nothing in this process works on: a cancel may drop them.
bool is_passive_wait(wait_on on);
// What the turn waits on; nullopt when no turn runs or it waits for nothing.
std::optional<wait_on> wait_of(const loop_state& ctl);

// Time `turn` has been busy at `now`, not counting waits for people.
uint64_t busy_ms(const loop_turn& turn, int64_t now);

// Folds `e` into the control state. `conv` is the conversation before `e`;
// only a retry's signal_received reads it (for the failed turn's input),
// and that is always the first event of its decision, so a decider may
// pass the state's conversation for every event it emits.
void apply_ctl(loop_state& ctl, const event& e, const json& conv);
// Folds `e` into the conversation; call before apply_ctl (it reads the turn
// as it was before the event).
void apply_conversation(json& conv, const loop_state& ctl, const event& e);

}  // namespace keel::agent::loop_detail
