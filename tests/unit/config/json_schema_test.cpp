#include <doctest/doctest.h>

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config/json_schema.hpp"

using keel::code;
using nlohmann::json;
namespace cfg = keel::config;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The message of check_schema's failure, or "" when the schema is accepted.
std::string schema_error(const char* schema_text) {
  auto s = cfg::check_schema(json::parse(schema_text));
  if (s) return "";
  CHECK(s.error_code() == code::invalid_argument);
  return s.message();
}

std::string violation(const char* schema_text, const char* value_text) {
  json schema = json::parse(schema_text);
  REQUIRE(cfg::check_schema(schema).is_ok());
  return cfg::schema_violation(schema, json::parse(value_text)).value_or("");
}

}  // namespace

TEST_CASE("check_schema accepts every keyword of the supported subset") {
  CHECK(schema_error(R"({
    "type": "object", "title": "refund", "description": "a refund",
    "required": ["amount"], "additionalProperties": false,
    "properties": {
      "amount": {"type": "number", "minimum": 0, "maximum": 1000,
                 "exclusiveMinimum": -1, "exclusiveMaximum": 1001, "default": 1},
      "currency": {"type": "string", "enum": ["EUR", "USD"], "minLength": 3, "maxLength": 3,
                   "pattern": "^[A-Z]+$", "examples": ["EUR"]},
      "lines": {"type": "array", "minItems": 1, "maxItems": 10,
                "items": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}},
      "kind": {"const": "refund"},
      "note": {"type": ["string", "null"]}
    }
  })") == "");
}

TEST_CASE("check_schema rejects an unknown keyword at its pointer") {
  std::string e = schema_error(R"({"properties": {"a": {"type": "string", "format": "email"}}})");
  CHECK(contains(e, "/properties/a/format"));
  CHECK(contains(e, "unsupported"));
  CHECK(contains(schema_error(R"({"$ref": "#/x"})"), "/$ref"));
}

TEST_CASE("check_schema rejects keywords of the wrong shape, naming the pointer") {
  SUBCASE("a bound that is not a number") {
    std::string e = schema_error(R"({"properties": {"amount": {"minimum": "0"}}})");
    CHECK(contains(e, "/properties/amount/minimum: must be a number"));
  }
  SUBCASE("a boolean bound") {
    CHECK(contains(schema_error(R"({"maximum": true})"), "/maximum: must be a number"));
  }
  SUBCASE("an unknown type name") {
    CHECK(contains(schema_error(R"({"type": "float"})"), "/type: must be one of"));
    CHECK(contains(schema_error(R"({"type": ["string", "float"]})"), "/type/1:"));
    CHECK(contains(schema_error(R"({"type": []})"), "/type:"));
  }
  SUBCASE("required that is not an array of strings") {
    CHECK(contains(schema_error(R"({"required": "a"})"), "/required:"));
    CHECK(contains(schema_error(R"({"required": ["a", 1]})"), "/required/1: must be a string"));
  }
  SUBCASE("a negative or fractional length") {
    CHECK(contains(schema_error(R"({"minLength": -1})"), "/minLength: must be an integer >= 0"));
    CHECK(contains(schema_error(R"({"maxItems": 1.5})"), "/maxItems: must be an integer >= 0"));
  }
  SUBCASE("items as an array (tuple form is not supported)") {
    CHECK(contains(schema_error(R"({"items": [{"type": "string"}]})"),
                   "/items: must be a schema object"));
  }
  SUBCASE("additionalProperties that is neither a boolean nor a schema") {
    CHECK(contains(schema_error(R"({"additionalProperties": "no"})"), "/additionalProperties:"));
  }
  SUBCASE("an empty enum") {
    CHECK(contains(schema_error(R"({"enum": []})"), "/enum: must be a non-empty array"));
  }
  SUBCASE("a schema that is not an object") {
    CHECK(contains(schema_error(R"({"properties": {"a": true}})"), "/properties/a:"));
    CHECK(contains(schema_error("[]"), "/: must be a schema object"));
  }
  SUBCASE("bounds that nothing can satisfy") {
    CHECK(contains(schema_error(R"({"minimum": 5, "maximum": 1})"), "/minimum:"));
  }
  SUBCASE("a property name with a slash is escaped in the pointer") {
    CHECK(contains(schema_error(R"({"properties": {"a/b": {"minimum": "x"}}})"),
                   "/properties/a~1b/minimum"));
  }
}

TEST_CASE("a pattern that does not compile is a load error, not a runtime surprise") {
  std::string e = schema_error(R"({"properties": {"id": {"pattern": "([a-z"}}})");
  CHECK(contains(e, "/properties/id/pattern"));
  CHECK(contains(e, "regex"));
}

TEST_CASE("a value that conforms has no violation") {
  json schema = json::parse(R"({"type": "object", "required": ["amount"],
                                "properties": {"amount": {"type": "number", "maximum": 1000}}})");
  REQUIRE(cfg::check_schema(schema).is_ok());
  CHECK_FALSE(cfg::schema_violation(schema, json::parse(R"({"amount": 10, "note": "x"})")));
  CHECK_FALSE(cfg::schema_violation(json::object(), json::parse(R"([1, "a", null])")));
}

TEST_CASE("a violation names the pointer into the value and what is wrong") {
  CHECK(violation(R"({"properties": {"amount": {"maximum": 1000}}})", R"({"amount": 1001})") ==
        "/amount: must be <= 1000");
  CHECK(violation(R"({"type": "object"})", "[]") == "/: must be of type object");
  CHECK(violation(R"({"properties": {"a": {"items": {"properties": {"n": {"type": "string"}}}}}})",
                  R"({"a": [{"n": "x"}, {"n": "y"}, {"n": 3}]})") ==
        "/a/2/n: must be of type string");
  CHECK(violation(R"({"properties": {"a/b": {"type": "string"}}})", R"({"a/b": 1})") ==
        "/a~1b: must be of type string");
}

TEST_CASE("a missing required property is reported at its own pointer") {
  CHECK(violation(R"({"required": ["amount", "currency"]})", R"({"amount": 1})") ==
        "/currency: is required");
}

TEST_CASE("integer accepts whole numbers of any representation and nothing else") {
  const char* schema = R"({"type": "integer"})";
  CHECK(violation(schema, "3") == "");
  CHECK(violation(schema, "-3") == "");
  CHECK(violation(schema, "3.0") == "");
  CHECK(violation(schema, "3.5") == "/: must be of type integer");
  CHECK(violation(schema, "\"3\"") == "/: must be of type integer");
  CHECK(violation(schema, "true") == "/: must be of type integer");
}

TEST_CASE("number accepts integers and floats but never booleans") {
  const char* schema = R"({"type": "number"})";
  CHECK(violation(schema, "3") == "");
  CHECK(violation(schema, "-3.25") == "");
  CHECK(violation(schema, "true") == "/: must be of type number");
  CHECK(violation(schema, "false") == "/: must be of type number");
  CHECK(violation(schema, "null") == "/: must be of type number");
}

TEST_CASE("a list of types accepts any of them") {
  const char* schema = R"({"type": ["string", "null"]})";
  CHECK(violation(schema, "\"x\"") == "");
  CHECK(violation(schema, "null") == "");
  CHECK(violation(schema, "1") == "/: must be of type string or null");
}

TEST_CASE("numeric bounds apply to numbers only, inclusive and exclusive") {
  CHECK(violation(R"({"minimum": 0})", "-1") == "/: must be >= 0");
  CHECK(violation(R"({"minimum": 0})", "0") == "");
  CHECK(violation(R"({"exclusiveMinimum": 0})", "0") == "/: must be > 0");
  CHECK(violation(R"({"exclusiveMaximum": 10})", "10") == "/: must be < 10");
  CHECK(violation(R"({"maximum": 10})", "10") == "");
  CHECK(violation(R"({"maximum": 10.5})", "10.75") == "/: must be <= 10.5");
  CHECK(violation(R"({"maximum": 10})", "\"99\"") == "");
}

TEST_CASE("string lengths count characters, not bytes") {
  CHECK(violation(R"({"maxLength": 3})", "\"\u00e9\u00e9\u00e9\"") == "");
  CHECK(violation(R"({"maxLength": 3})", "\"abcd\"") == "/: must be at most 3 characters long");
  CHECK(violation(R"({"minLength": 2})", "\"a\"") == "/: must be at least 2 characters long");
}

TEST_CASE("pattern is an unanchored ECMAScript search") {
  CHECK(violation(R"({"pattern": "[0-9]+"})", "\"order 17\"") == "");
  CHECK(violation(R"({"pattern": "^[0-9]+$"})", "\"order 17\"") ==
        "/: must match the pattern ^[0-9]+$");
}

TEST_CASE("enum and const compare JSON values, numbers by value") {
  CHECK(violation(R"({"enum": ["EUR", 1]})", "1.0") == "");
  CHECK(violation(R"({"enum": ["EUR", "USD"]})", "\"GBP\"") ==
        R"(/: must be one of ["EUR","USD"])");
  CHECK(violation(R"({"const": {"a": 1}})", R"({"a": 1})") == "");
  CHECK(violation(R"({"const": "x"})", "\"y\"") == R"(/: must equal "x")");
}

TEST_CASE("item counts and item schemas apply to arrays") {
  CHECK(violation(R"({"minItems": 1})", "[]") == "/: must have at least 1 items");
  CHECK(violation(R"({"maxItems": 1})", "[1, 2]") == "/: must have at most 1 items");
  CHECK(violation(R"({"items": {"type": "string"}})", R"(["a", 2])") ==
        "/1: must be of type string");
}

TEST_CASE("additionalProperties refuses or checks properties that are not declared") {
  const char* closed = R"({"properties": {"a": {}}, "additionalProperties": false})";
  CHECK(violation(closed, R"({"a": 1})") == "");
  CHECK(violation(closed, R"({"a": 1, "b": 2})") == "/b: is not an allowed property");
  const char* typed = R"({"properties": {"a": {}}, "additionalProperties": {"type": "string"}})";
  CHECK(violation(typed, R"({"a": 1, "b": "x"})") == "");
  CHECK(violation(typed, R"({"a": 1, "b": 2})") == "/b: must be of type string");
}

TEST_CASE("a pattern checks a long string without exhausting the stack") {
  // libstdc++'s default regex matcher recursed once per character and
  // crashed at ~10 KB (less in debug builds); a model can send more than that.
  json schema = json::parse(R"({"pattern": "^[a-z]+$"})");
  REQUIRE(cfg::check_schema(schema).is_ok());
  std::string long_text(50'000, 'a');
  CHECK_FALSE(cfg::schema_violation(schema, long_text));
  CHECK(cfg::schema_violation(schema, long_text + "1") == "/: must match the pattern ^[a-z]+$");
}

TEST_CASE("a pattern with a back-reference is refused at load") {
  CHECK(contains(schema_error(R"({"pattern": "(a)\\1"})"), "/pattern: is not a valid"));
}
