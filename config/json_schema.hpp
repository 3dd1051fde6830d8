#pragma once
// The subset of JSON Schema that tool parameters use, checked without any
// network or $ref resolution:
//   type (string or array of: object, array, string, number, integer,
//   boolean, null), properties, required, additionalProperties (bool or
//   schema), items, enum, const, minimum, maximum, exclusiveMinimum,
//   exclusiveMaximum, minLength, maxLength, pattern, minItems, maxItems,
//   description/title/default/examples (ignored).
// Any other keyword is rejected when the schema is loaded, so a spec never
// silently relies on a rule that is not enforced.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::config {

// Checks that `schema` only uses the supported keywords with values of the
// right shape, and that every pattern compiles. Errors: invalid_argument
// "<pointer>: <what>" naming the JSON pointer inside the schema (root shown
// as "/"), e.g. "/properties/amount/minimum: must be a number".
status check_schema(const nlohmann::json& schema);

// The first violation of `schema` by `value` as "<pointer>: <what>" (e.g.
// "/amount: must be <= 1000"), or nullopt when it conforms. The pointer is
// into `value`; the root is shown as "/"; a missing required property is
// reported at its own pointer ("/amount: is required"). "integer" accepts
// any number without a fractional part, "number" accepts integers, and
// booleans are never numbers. `pattern` is an unanchored ECMAScript search.
// Thread-safe. REQUIRES: check_schema(schema) succeeded.
std::optional<std::string> schema_violation(const nlohmann::json& schema,
                                            const nlohmann::json& value);

// How a schema constrains one place in the values that conform to it: what
// a guardrail rule on that place can rely on.
struct pinned_place {
  enum class kind {
    pinned,  // the value there, when present, has exactly `type`
    absent,  // no conforming value has anything there
    loose,   // anything may be there, in some form: `why` says what lets it
  } state = kind::loose;
  std::string type;  // pinned: "string", "number", "integer", "boolean", "object", ...
  std::string why;   // loose: e.g. "/properties/amount has no \"type\""
};
// The place `pointer` (RFC 6901, "/amount", "/items/0/price") under
// `schema`: pinned when every object on the way is "type": "object" with
// "additionalProperties": false and lists the next key in "properties",
// every array is "type": "array" with "items", and the value there has one
// "type". A key an object cannot have (not listed, no additional
// properties) makes it absent. REQUIRES: check_schema(schema) succeeded.
pinned_place pin_of(const nlohmann::json& schema, const std::string& pointer);

}  // namespace keel::config
