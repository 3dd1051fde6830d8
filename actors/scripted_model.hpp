#pragma once
// A deterministic model provider for tests, demos and replay: replies come
// from a script file (model_spec::script) and never from the network.
//
// Script format (JSON):
//   {"description"?: "free text",
//    "replies": [<reply>...],   // at least one
//    "cycle"?: false}           // true: call n uses replies[n % size]
// where a <reply> is either a model answer
//   {"content"?: "text" | null,                       // default null
//    "tool_calls"?: [{"name": "refund", "arguments"?: {...}, "id"?: "c1"}],
//    "usage"?: {"prompt_tokens": n, "completion_tokens": n},
//    "finish_reason"?: "stop"}   // default "tool_calls" when there are
//                                // tool calls, else "stop"
// or a failure of the call
//   {"error": "text", "retryable"?: false}.
// Unknown keys are errors (a typo must not silently change a test).
//
// Model call n of an agent (model_call_context::call_index, 0-based) gets
// replies[n]; past the end without "cycle" the call fails permanently
// ("script <file> has no reply #n"). Every attempt of a call gets the same
// reply, so a retryable error entry fails every attempt. The result is the
// normalized reply of actors/effects.hpp, with:
//   - missing tool call ids filled as "call_<call_index>_<i>";
//   - missing usage estimated from text, about 4 characters (UTF-8 code
//     points) a token, rounded up: prompt_tokens from the contents of all
//     request messages, completion_tokens from the content plus each tool
//     call's arguments serialized compactly. Budgets thus behave the same
//     on every run.
//
// Thread-safe. A script is read on first use and cached by path for the
// provider's lifetime (edits need a new provider, i.e. a node restart); a
// file that cannot be read or is invalid is not cached, and its calls fail
// permanently with load_script's message.

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "actors/effects.hpp"
#include "base/status.hpp"

namespace keel::actors {

class scripted_model final : public model_provider {
 public:
  effect_outcome complete(const config::model_spec& spec, const json& request,
                          const model_call_context& ctx) override;

 private:
  result<std::shared_ptr<const json>> script(const std::string& path);

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const json>> scripts_;  // guarded by mu_
};

// Reads and validates a script file. Returns it with defaults filled in:
// "cycle" present; every reply object either {"error", "retryable"} or with
// "content" and "tool_calls" (each call with "arguments"). Errors: io_error
// (unreadable: "cannot read script <path>: <why>"), invalid_argument
// ("<path>: not valid JSON: <parser message>" or "<path>: <JSON pointer>:
// <what is wrong>", e.g. "s.json: /replies/2/tool_calls/0/name: must be a
// non-empty string").
result<json> load_script(const std::string& path);

}  // namespace keel::actors
