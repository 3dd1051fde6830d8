#pragma once
// Ledger events: everything that happens to an agent, in the order it
// happened. Codes are stored on disk and never reused; names appear in the
// HTTP API. New kinds (model and tool steps) append codes.

#include <cstdint>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::agent {

using json = nlohmann::json;

enum class event_type : uint16_t {
  spawned = 1,           // {"type", "input"}: the agent was created
  message_received = 2,  // {"arrival", "id", "from", "body"}
  state_changed = 3,     // type-specific new state fields, e.g. {"total": 5}
  timer_set = 4,         // {"timer", "due_ms", "payload"}
  timer_fired = 5,       // {"timer"}
  signal_received = 6,   // {"arrival", "signal", "payload"}
  failed = 7,            // {"reason"}: the agent stopped on an internal error
  terminated = 8,        // {"by"}
  message_rejected = 9,  // {"id", "code", "reason"}: recorded, answered with an error
  // The agent loop (agent/loop.hpp); payloads in docs/formats.md.
  turn_started = 10,            // {"turn", "id", "from", "input"}
  model_requested = 11,         // {"effect", "attempt", "step"}
  model_replied = 12,           // {"effect", "content", "tool_calls", "usage", "finish_reason"}
  guardrail_decided = 13,       // {"call", "tool", "verdict", "rule", "reason"}
  approval_requested = 14,      // {"call", "tool", "arguments", "rule", "reason"}
  effect_started = 15,          // {"effect", "call", "tool", "kind", "arguments", "attempt"}
  effect_completed = 16,        // {"effect", "result"}
  effect_failed = 17,           // {"effect", "attempt", "error", "retryable", "final"}
  effect_in_doubt = 18,         // {"effect", "tool", "attempt"}
  compensation_started = 19,    // {"effect", "for", "tool", "arguments", "attempt"}
  compensation_completed = 20,  // {"effect", "for", "ok", "result" | "error"}
  turn_completed = 21,          // {"turn", "status", "answer" | "reason"}
  // Operator controls, for every type (agent/core.hpp): recorded after the
  // signal_received of the signal of the same name.
  paused = 22,   // {"by"}: no new input or effect until resumed
  resumed = 23,  // {"by"}
  forked = 24,   // {"as", "at", "by"}: agent `as` was forked from this one at seq `at`
  // The first event of a fork after the history it copied: {"parent", "at",
  // "by", "gap_ms"}; gap_ms, the time between the copied step and the fork,
  // is not counted as time the turn was busy.
  fork_started = 25,
  // After `keeld --salvage` dropped what a damaged write-ahead log held for
  // this agent: {"report", "damage", "ledger_lost", "messages_lost",
  // "message_ids_lost", "by"}. Recorded after the signal_received of
  // "salvaged"; changes no state.
  salvaged = 26,
  // The agent runs another version of its type from here on: {"from",
  // "to", "by", "reason"?} (versions are spec hashes; keel upgrade, or the
  // node moving an agent off a version it does not have). A decision of its
  // own, taken between two steps.
  upgraded = 27,
};
inline constexpr uint16_t max_event_code = 27;

std::string_view to_string(event_type t);
std::optional<event_type> event_type_from_code(uint16_t code);
// The type named `name` (as to_string gives it); nullopt when none is.
std::optional<event_type> event_type_from_name(std::string_view name);

struct event {
  event_type type;
  int64_t time_ms = 0;
  json data;

  friend bool operator==(const event&, const event&) = default;
};

}  // namespace keel::agent
