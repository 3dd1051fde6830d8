#pragma once
// The scripted model provider's replies (docs/agent-types.md, "Scripted
// model"), checked once when the agent type is loaded, so that a typo in a
// script fails the load and never a running agent. The checked script is
// part of the type's version: an agent keeps the replies it was spawned
// with, whatever happens to the file later.
//
// Format (JSON):
//   {"description"?: "free text",
//    "replies": [<reply>...],   // at least one
//    "cycle"?: false}           // true: call n uses replies[n % size]
// where a <reply> is either a model answer
//   {"content"?: "text" | null,                       // default null
//    "tool_calls"?: [{"name": "refund", "arguments"?: {...}, "id"?: "c1"}],
//    "usage"?: {"prompt_tokens": n, "completion_tokens": n},
//    "finish_reason"?: "stop"}
// or a failure of the call
//   {"error": "text", "retryable"?: false},
// or alternatives, the first whose condition holds being the reply
//   {"choose": [{"if"?: PATH, "unless"?: PATH, <reply or failure>}...]}.
// Strings in content and tool call arguments may hold placeholders
// ({{result.lookup_order/amount}}, config/script_template.hpp); a PATH is
// a placeholder without its braces.
// Unknown keys are errors (a typo must not silently change a test).

#include <string>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::config {

// Checks a script and returns it with defaults filled in: "cycle" present;
// every reply either {"error", "retryable"} or with "content" and
// "tool_calls" (each call with "arguments"). Checking a checked script
// gives it back unchanged. Errors: invalid_argument ("<source>: <JSON
// pointer>: <what is wrong>", e.g. "s.json: /replies/2/tool_calls/0/name:
// must be a non-empty string").
result<nlohmann::json> check_model_script(const nlohmann::json& j, const std::string& source);

// Reads and checks a script file. Errors: io_error ("cannot read script
// <path>: <why>"), invalid_argument ("<path>: not valid JSON: <parser
// message>", or as check_model_script).
result<nlohmann::json> load_model_script(const std::string& path);

}  // namespace keel::config
