#pragma once
// Internal to agent/: the strict walk over a recorded ledger that
// replay_strict() and replay_what_if() share (replay.cpp), and the small
// readers the what-if simulation (replay_sim.cpp) uses. See agent/replay.hpp.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/replay.hpp"

namespace keel::agent::replay_detail {

// Sees the decisions of a walk. `in` is nullptr for a recorded `failed`
// that began a decision (it is applied as recorded: its input is lost).
class walk_observer {
 public:
  virtual ~walk_observer() = default;
  // The input rebuilt from the event at `seq`, before it is decided on `st`.
  virtual void before(const input* in, const agent_state& st, uint64_t seq) = 0;
  // A decision whose every event matched the ledger, once applied to `st`.
  virtual void after(const input* in, const decision& d, const agent_state& st) = 0;
};

// Strict replay of `events` from `base` (agent/replay.hpp). With `stop_at`
// != 0 the walk stops before the first decision that begins at seq
// `stop_at` or later; `identical` then says the part walked matched.
// `obs` may be nullptr.
// Each decision runs the version its state (or its spawn) names; one that
// `vs` does not have is a divergence.
strict_result walk(const type_versions& vs, agent_state base,
                   const std::vector<recorded_event>& events, uint64_t stop_at, walk_observer* obs);

// The input that the recorded event `first`, beginning a decision on `st`,
// stands for; an error message (a divergence's reason) when none does.
result<input> input_of(const agent_type& t, const agent_state& st, const event& first);

// True for the events that carry an effect's outcome and may begin a
// decision: model_replied, effect_completed, effect_failed,
// compensation_completed.
bool is_outcome(event_type type);

// An override or script entry (what_if_options) as the input answering
// attempt `attempt` of effect `effect`; `model` picks the reply format.
result<effect_result_input> parse_outcome(const json& replacement, bool model, uint64_t effect,
                                          uint32_t attempt);

// {"seq", "type", "time", "data"}: an event as a divergence shows it.
json event_json(uint64_t seq, const event& e);

// `s` cut to about `max` bytes, on a UTF-8 boundary, with "..." appended
// when cut: texts for people, which must stay valid JSON strings.
std::string shorten(std::string s, std::size_t max = 160);

}  // namespace keel::agent::replay_detail
