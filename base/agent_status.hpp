#pragma once
// Where an agent is in its life: the status of its state (agent/) and of
// its directory entry (persistence/), one closed set shared by both. On
// disk and on the wire it is a string ("active", "terminated", "failed");
// in memory, this enum. to_string/agent_status_from_string convert at those
// edges.

#include <cstdint>
#include <optional>
#include <string_view>

namespace keel {

enum class agent_status : uint8_t {
  active,      // takes input
  terminated,  // ended by an operator (terminate): refuses input
  failed,      // stopped by a bug in its type (a `failed` event): refuses input
};

constexpr std::string_view to_string(agent_status s) {
  switch (s) {
    case agent_status::active:
      return "active";
    case agent_status::terminated:
      return "terminated";
    case agent_status::failed:
      return "failed";
  }
  return "active";
}

// nullopt for a string that names no status: a caller reading it from disk
// reports corruption naming what it read.
constexpr std::optional<agent_status> agent_status_from_string(std::string_view s) {
  if (s == "active") return agent_status::active;
  if (s == "terminated") return agent_status::terminated;
  if (s == "failed") return agent_status::failed;
  return std::nullopt;
}

}  // namespace keel
