#pragma once
// The closed sets inside persistence's values (values.hpp): where an agent
// came from, what an inbox entry holds, what an effect marker runs. On disk
// and on the wire each is a string; in memory, an enum. to_string and
// <name>_from_string convert at those edges; from_string gives nullopt for
// a string that names no value, and a caller reading it from disk reports
// corruption naming the field and what it read.

#include <cstdint>
#include <optional>
#include <string_view>

namespace keel::persistence {

// agent_meta::origin.
enum class agent_origin : uint8_t {
  spawned,   // "": spawned on this node (the field is not written)
  imported,  // "import": an exported ledger loaded for analysis; read-only
  forked,    // "fork": a copy of another agent's history up to a seq
};

constexpr std::string_view to_string(agent_origin o) {
  switch (o) {
    case agent_origin::spawned:
      return "";
    case agent_origin::imported:
      return "import";
    case agent_origin::forked:
      return "fork";
  }
  return "";
}

constexpr std::optional<agent_origin> agent_origin_from_string(std::string_view s) {
  if (s.empty()) return agent_origin::spawned;
  if (s == "import") return agent_origin::imported;
  if (s == "fork") return agent_origin::forked;
  return std::nullopt;
}

// inbox_entry::kind, and the kind of an item in a node's outbox.
enum class inbox_kind : uint8_t { message, signal };

constexpr std::string_view to_string(inbox_kind k) {
  return k == inbox_kind::signal ? "signal" : "message";
}

constexpr std::optional<inbox_kind> inbox_kind_from_string(std::string_view s) {
  if (s == "message") return inbox_kind::message;
  if (s == "signal") return inbox_kind::signal;
  return std::nullopt;
}

// effect_marker::kind: a model call, or a tool call by its tool's kind
// (config::tool_kind, whose strings these are). `unknown`: a tool the
// agent's type no longer names.
enum class effect_kind : uint8_t {
  model,
  http,
  exec,
  worker,
  send_message,
  spawn_agent,
  sleep,
  ask_human,
  unknown,
};

constexpr std::string_view to_string(effect_kind k) {
  switch (k) {
    case effect_kind::model:
      return "model";
    case effect_kind::http:
      return "http";
    case effect_kind::exec:
      return "exec";
    case effect_kind::worker:
      return "worker";
    case effect_kind::send_message:
      return "send_message";
    case effect_kind::spawn_agent:
      return "spawn_agent";
    case effect_kind::sleep:
      return "sleep";
    case effect_kind::ask_human:
      return "ask_human";
    case effect_kind::unknown:
      return "unknown";
  }
  return "unknown";
}

constexpr std::optional<effect_kind> effect_kind_from_string(std::string_view s) {
  for (auto k : {effect_kind::model, effect_kind::http, effect_kind::exec, effect_kind::worker,
                 effect_kind::send_message, effect_kind::spawn_agent, effect_kind::sleep,
                 effect_kind::ask_human, effect_kind::unknown})
    if (to_string(k) == s) return k;
  return std::nullopt;
}

}  // namespace keel::persistence
