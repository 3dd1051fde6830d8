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
  }
  return "unknown";
}

std::optional<event_type> event_type_from_code(uint16_t code) {
  if (code >= 1 && code <= 9) return static_cast<event_type>(code);
  return std::nullopt;
}

}  // namespace keel::agent
