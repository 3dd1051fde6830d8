#pragma once
// Who is calling the HTTP API, and what they may do: a principal with
// scopes, optionally limited to agents whose names match a set of
// prefixes. The server authenticates a bearer token into one
// (net/api/auth_tokens.hpp); the API checks the scope each route needs.
//
// Scopes (admin implies every other):
//   read     GET: agents, ledgers, streams, audit, types, tasks, metrics
//   send     spawn agents, send messages and ordinary signals
//   approve  the approve and reject signals, and answer (a human's reply
//            to ask_human)
//   work     worker tasks: poll, complete, fail (/v1/tasks)
//   operate  pause, resume, cancel, resolve, fork, upgrade, replay,
//            compaction of one agent
//   admin    changing agent types and the cluster, DELETE, import, tokens,
//            secrets (listing their names too)
// A prefix limit ("ticket/*" or an exact name) applies to agent routes; a
// limited principal cannot use node-wide routes beyond read.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/status.hpp"

namespace keel {

enum class scope : uint32_t {
  read = 1,
  send = 2,
  approve = 4,
  operate = 8,
  admin = 16,
  work = 32,
};

inline constexpr uint32_t all_scopes = 63;

const char* to_string(scope s);
// "read", ... ; nullopt for anything else.
std::optional<scope> parse_scope(std::string_view name);
// "read,send" -> bits; nullopt (and the bad name in `bad`) on an unknown one.
std::optional<uint32_t> parse_scopes(std::string_view comma_list, std::string* bad = nullptr);
// A JSON array of scope names -> bits. Errors: invalid_argument naming the
// first entry that is not a scope (or the value, when not an array).
result<uint32_t> scopes_from_json(const nlohmann::json& list);
std::vector<std::string> scope_names(uint32_t bits);
// "read, send, approve, operate, admin, work": the choices, for messages.
extern const char* const scope_choices;

struct principal {
  std::string name;
  uint32_t scopes = 0;
  // Agent-name patterns: "ticket/*" (a prefix) or an exact name. Empty:
  // every agent.
  std::vector<std::string> agents;

  bool has(scope s) const;
  // Whether `s` is allowed on agent `agent` ("" for a node-wide route).
  bool may(scope s, std::string_view agent) const;
};

// A pattern as `agents` takes it: a non-empty name, '*' only at the end.
bool valid_agent_pattern(std::string_view pattern);

// Compares two secrets in time independent of where they differ.
bool same_secret(std::string_view a, std::string_view b);

}  // namespace keel
