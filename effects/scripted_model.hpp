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
//   {"error": "text", "retryable"?: false},
// or alternatives, the first whose condition holds being the reply
//   {"choose": [{"if"?: PATH, "unless"?: PATH, <reply or failure>}...]}.
// Strings in content and tool call arguments may hold placeholders
// ({{result.lookup_order/amount}}, config/script_template.hpp); a PATH is
// a placeholder without its braces.
// Unknown keys are errors (a typo must not silently change a test).
//
// Model call n of an agent (model_call_context::call_index, 0-based) gets
// replies[n]; past the end without "cycle" the call fails permanently
// ("script <file> has no reply #n"). Every attempt of a call gets the same
// reply, so a retryable error entry fails every attempt. The result is the
// normalized reply of effects/contexts.hpp, with:
//   - missing tool call ids filled as "call_<call_index>_<i>";
//   - missing usage estimated from text, about 4 characters (UTF-8 code
//     points) a token, rounded up: prompt_tokens from the contents of all
//     request messages, completion_tokens from the content plus each tool
//     call's arguments serialized compactly. Budgets thus behave the same
//     on every run.
//
// Thread-safe and stateless: the replies are part of the agent's type
// (config::model_spec::script_content), read and checked when the type
// was loaded, so an agent keeps the replies of the version it runs.

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.hpp"
#include "effects/contexts.hpp"

namespace keel::actors {

class scripted_model final : public model_provider {
 public:
  effect_outcome complete(const config::model_spec& spec, const json& request,
                          const model_call_context& ctx) override;
};

// Reads and validates a script file: config::load_model_script.
result<json> load_script(const std::string& path);

}  // namespace keel::actors
