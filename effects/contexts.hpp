#pragma once
// The seam between the runtime and the outside world: model providers and
// tool runners. The runtime calls them on its effect threads (never on
// scheduler threads), only after the event that asks for the call is
// durable, and records what they return before acting on it.
//
// Implementations, all in effects/: the scripted model, the exec tool, the
// OpenAI-compatible provider and the http tool (the last two need the HTTP
// client and are handed to the node by keeld). Tests swap in in-process
// fakes.
//
// Thread-safety: complete() and run() are called concurrently from several
// effect threads and must be safe to do so. They block for at most the
// timeout they are given (plus a little).
//
// Aborting: a call's context may carry an abort signal (`abort`, null: the
// call is never aborted), raised from another thread when the node stops
// leading the agent's group, so that a new leader re-running the call never
// overlaps with this one. A runner must then stop as soon as it can (kill
// the process, drop the connection: never return it to a keep-alive pool)
// and return effect_outcome::unknown("... aborted ...", true): retryable,
// maybe applied. Only a runner that can prove nothing was sent (the signal
// was raised before it connected or started anything) returns
// failure("... aborted ...", true) instead. A runner that blocks should
// hook a wake-up on the signal (base/abort_signal.hpp) rather than poll
// it; the context shares ownership of it, so it lives as long as the
// runner holds the context.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/abort_signal.hpp"
#include "config/agent_spec.hpp"

namespace keel::actors {

using json = nlohmann::json;

// What one attempt of an effect came to.
struct effect_outcome {
  bool ok = false;
  json result;             // ok: the tool's result, or the normalized model reply
  std::string error;       // !ok: a sentence saying what went wrong
  bool retryable = false;  // !ok: another attempt may succeed (timeout, 5xx, 429)
  // !ok: nothing proves the call was not applied (it was sent and no answer
  // came, a 5xx, a tool killed mid-run, a failure the tool did not declare
  // as "not applied"). A non-idempotent tool's call then ends in doubt,
  // never retried; an idempotent one is retried as `retryable` says.
  bool maybe_applied = false;

  static effect_outcome success(json r) { return {true, std::move(r), {}, false, false}; }
  // A failure that proves nothing was applied.
  static effect_outcome failure(std::string e, bool retryable) {
    return {false, nullptr, std::move(e), retryable, false};
  }
  // A failure after which the call may have been applied.
  static effect_outcome unknown(std::string e, bool retryable) {
    return {false, nullptr, std::move(e), retryable, true};
  }
};

struct model_call_context {
  std::string agent;        // the agent's name
  uint64_t call_index = 0;  // model calls this agent made before this one (0-based)
  std::string key;          // stable across attempts of this call
  uint32_t attempt = 1;
  uint32_t timeout_ms = 30'000;
  // Raised when the call must stop (see "Aborting" above); null: never.
  std::shared_ptr<const abort_signal> abort;
};

// `request` is an OpenAI chat-completions body without the model settings:
//   {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content",
//                  "tool_calls"?, "tool_call_id"?}...],
//    "tools": [{"type": "function", "function": {"name", "description",
//                                                "parameters"}}...]}
// A successful outcome's result is the normalized reply:
//   {"content": string or null,
//    "tool_calls": [{"id": string, "name": string, "arguments": any JSON}],
//    "usage": {"prompt_tokens": n, "completion_tokens": n},
//    "finish_reason": string}
// Arguments the model sent that are not JSON come back as
// {"$unparsed": "<text>"}, for the runtime to refuse as invalid.
class model_provider {
 public:
  virtual ~model_provider() = default;
  virtual effect_outcome complete(const config::model_spec& spec, const json& request,
                                  const model_call_context& ctx) = 0;
};

struct tool_call_context {
  std::string agent;
  std::string idempotency_key;  // the effect id: stable across attempts
  uint32_t attempt = 1;
  uint32_t timeout_ms = 30'000;
  // Raised when the call must stop (see "Aborting" above); null: never.
  std::shared_ptr<const abort_signal> abort;
};

// The spec a runner (or a model provider) gets has its secret references
// expanded for this call (an http tool's headers, an exec tool's env, a
// model's api_key and headers; effects/secret_table.hpp); what it returns
// is redacted by the runtime before anything records it.
class tool_runner {
 public:
  virtual ~tool_runner() = default;
  virtual effect_outcome run(const config::tool_spec& tool, const json& arguments,
                             const tool_call_context& ctx) = 0;
};

// Handed to node::start. Providers by spec.model.provider ("scripted",
// "openai"); runners by tool kind (http, exec). The node adds the scripted
// provider and the exec runner itself when they are missing.
struct effect_plugins {
  std::map<std::string, std::shared_ptr<model_provider>> providers;
  std::map<config::tool_kind, std::shared_ptr<tool_runner>> runners;
};

}  // namespace keel::actors
