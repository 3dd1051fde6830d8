#pragma once
// Placeholders in a scripted model's replies (docs/agent-types.md,
// "Scripted model"), so that a script's answers follow what happened in the
// turn: the input, the arguments of a call and the result the model was
// given for it.
//
//   {{input}}              the text of the message (or signal) that started
//                          the turn; {{input/PTR}} a JSON pointer into it
//                          when that text is JSON
//   {{args.TOOL}}          the arguments of this turn's latest call of TOOL
//   {{args.TOOL/PTR}}      ... a JSON pointer into them
//   {{result.TOOL}}        what the model was told about that call: the
//                          tool's result, or a refusal {"error": "refused",
//                          "verdict", "rule", "reason"}
//   {{result.TOOL/PTR}}    ... a JSON pointer into it
//
// A string that is one placeholder and nothing else becomes the value
// itself (a number stays a number); in other text a string value is
// inserted as is and any other value as compact JSON. The "turn" is what
// the request holds after its last user message.
//
// Pure functions of their arguments; thread-safe.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::config {

// Checks the placeholders of one string. Errors: invalid_argument naming
// the bad placeholder and what is expected.
status check_template_text(std::string_view text);

// Checks a condition path (a placeholder without braces, "result.refund/refunded").
status check_template_path(std::string_view path);

// Whether a string holds a placeholder at all.
bool has_placeholder(std::string_view text);

// The turn a model request is about: what placeholders are resolved from.
class template_scope {
 public:
  // `request` is an OpenAI-style chat request ({"messages": [...]}); it must
  // outlive the scope.
  explicit template_scope(const nlohmann::json& request);

  // The value of a path, or not_found naming what is missing ("no call of
  // refund in this turn").
  result<nlohmann::json> resolve(std::string_view path) const;

  // Renders every placeholder in `value`'s strings (objects and arrays
  // recursively). Errors as resolve, with the placeholder named.
  result<nlohmann::json> render(const nlohmann::json& value) const;

  // A condition holds when its path resolves to something other than null,
  // false, 0 or "" (a missing value does not hold).
  bool holds(std::string_view path) const;

 private:
  result<std::string> render_text(std::string_view text) const;

  const nlohmann::json* input_ = nullptr;  // the user message's content
  const nlohmann::json* messages_ = nullptr;
  std::size_t turn_begin_ = 0;  // index of the first message after the user's
};

}  // namespace keel::config
