#include "agent/event.hpp"

namespace keel::agent {

std::string_view to_string(event_type t) {
  switch (t) {
    case event_type::spawned:
      return "spawned";
    case event_type::message_received:
      return "message_received";
    case event_type::state_changed:
      return "state_changed";
    case event_type::timer_set:
      return "timer_set";
    case event_type::timer_fired:
      return "timer_fired";
    case event_type::signal_received:
      return "signal_received";
    case event_type::failed:
      return "failed";
    case event_type::terminated:
      return "terminated";
    case event_type::message_rejected:
      return "message_rejected";
    case event_type::turn_started:
      return "turn_started";
    case event_type::model_requested:
      return "model_requested";
    case event_type::model_replied:
      return "model_replied";
    case event_type::guardrail_decided:
      return "guardrail_decided";
    case event_type::approval_requested:
      return "approval_requested";
    case event_type::effect_started:
      return "effect_started";
    case event_type::effect_completed:
      return "effect_completed";
    case event_type::effect_failed:
      return "effect_failed";
    case event_type::effect_in_doubt:
      return "effect_in_doubt";
    case event_type::compensation_started:
      return "compensation_started";
    case event_type::compensation_completed:
      return "compensation_completed";
    case event_type::turn_completed:
      return "turn_completed";
    case event_type::paused:
      return "paused";
    case event_type::resumed:
      return "resumed";
    case event_type::forked:
      return "forked";
    case event_type::fork_started:
      return "fork_started";
    case event_type::salvaged:
      return "salvaged";
    case event_type::upgraded:
      return "upgraded";
  }
  return "unknown";
}

std::optional<event_type> event_type_from_name(std::string_view name) {
  for (uint16_t c = 1; c <= max_event_code; ++c)
    if (to_string(static_cast<event_type>(c)) == name) return static_cast<event_type>(c);
  return std::nullopt;
}

std::optional<event_type> event_type_from_code(uint16_t code) {
  if (code >= 1 && code <= max_event_code) return static_cast<event_type>(code);
  return std::nullopt;
}

}  // namespace keel::agent
