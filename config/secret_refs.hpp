#pragma once
// Named secrets as agent types refer to them. A spec never holds a
// secret's value, only a reference to it in a string field that allows
// one (http tool header values, exec tool env values, the openai model's
// api_key and header values):
//   "Authorization": "Bearer ${secret:crm}"
// `${secret:NAME}` is replaced by the value of secret NAME on the node
// running the call, at call time; `$${` is a literal `${`; any other
// text, a `$` or a `${` not followed by `secret:` included, is itself.
// The spec (and so its hash, the version) keeps the reference text.
//
// Format: docs/agent-types.md ("Secrets"). Pure functions, thread-safe.

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"

namespace keel::config {

inline constexpr std::size_t max_secret_name = 64;

// [A-Za-z0-9_.-]{1,64}
bool is_secret_name(std::string_view name);
// ok, or invalid_argument: "secret name \"a b\" must be 1 to 64 of
// [A-Za-z0-9_.-]".
status check_secret_name(std::string_view name);

// The names `text` refers to, in order of appearance (repeats kept), or
// invalid_argument saying what is wrong ("${secret: has no closing }"
// ...); the caller names the field.
result<std::vector<std::string>> secret_references(std::string_view text);

// Whether `text` holds a reference or an escape, and so must go through
// expand_secrets before use.
bool needs_expansion(std::string_view text);

// What a reference is replaced by: the value, or null when the node has
// no secret of that name.
using secret_lookup = std::function<const std::string*(std::string_view name)>;

// `text` with every reference replaced by its value and every `$${` by
// `${`. Errors: not_found "secret \"crm\" is not set on this node" for
// the first name `lookup` does not know; invalid_argument for bad syntax.
result<std::string> expand_secrets(std::string_view text, const secret_lookup& lookup);

}  // namespace keel::config
