// The normalized form pattern rules also match, and which places of a
// schema pin a value down enough for a rule.

#include <doctest/doctest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "config/json_schema.hpp"
#include "config/patterns.hpp"

namespace cfg = keel::config;
using nlohmann::json;
using place = cfg::pinned_place::kind;

TEST_CASE("normalized text folds what looks alike and drops what does not show") {
  CHECK(cfg::normalized_text("vip-7") == "vip-7");
  CHECK(cfg::normalized_text("  vip-7 \t") == "vip-7");
  CHECK(cfg::normalized_text("a \xC2\xA0\xE2\x80\x83 b") == "a b");   // NBSP, em space
  CHECK(cfg::normalized_text("d\xE2\x80\x8Br\xC2\xADop") == "drop");  // ZWSP, soft hyphen
  CHECK(cfg::normalized_text("\xE2\x80\xAE"
                             "abc") == "abc");                                    // bidi override
  CHECK(cfg::normalized_text("\xEF\xBC\xB6\xEF\xBC\xA9\xEF\xBC\xB0") == "VIP");   // fullwidth
  CHECK(cfg::normalized_text("\xD9\xA1\xD9\xA0\xDB\xB5\xE0\xA5\xAA") == "1054");  // other digits
  CHECK(cfg::normalized_text("\xD0\xB0\xD0\xA0\xCE\xBF\xCE\x9A") == "aPoK");      // Cyrillic, Greek
  // Text without anything to fold is unchanged, invalid UTF-8 included.
  CHECK(cfg::normalized_text("caf\xC3\xA9 \xE2\x82\xAC") == "caf\xC3\xA9 \xE2\x82\xAC");
  CHECK(cfg::normalized_text(std::string("a\xFF"
                                         "b")) == std::string("a\xFF"
                                                              "b"));
  CHECK(cfg::normalized_text("") == "");
}

TEST_CASE("a place is pinned only by closed objects and one type all the way down") {
  const json schema = json::parse(R"({"type": "object", "additionalProperties": false,
    "properties": {
      "amount": {"type": "number"},
      "loose": {},
      "either": {"type": ["number", "string"]},
      "one": {"type": ["string"]},
      "lines": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                                           "properties": {"qty": {"type": "integer"}}}},
      "bag": {"type": "array"},
      "open": {"type": "object", "properties": {"x": {"type": "number"}}}}})");
  auto pinned = cfg::pin_of(schema, "/amount");
  CHECK(pinned.state == place::pinned);
  CHECK(pinned.type == "number");
  CHECK(cfg::pin_of(schema, "/one").type == "string");
  CHECK(cfg::pin_of(schema, "/lines/3/qty").type == "integer");
  CHECK(cfg::pin_of(schema, "/nope").state == place::absent);
  CHECK(cfg::pin_of(schema, "/lines/x/qty").state == place::absent);
  CHECK(cfg::pin_of(schema, "/lines/0/price").state == place::absent);
  for (const char* p : {"/loose", "/either", "/bag/0", "/open/x", "/amount/x"}) {
    const auto r = cfg::pin_of(schema, p);
    CHECK_MESSAGE(r.state == place::loose, p);
    CHECK_MESSAGE(!r.why.empty(), p);
  }
  CHECK(cfg::pin_of(json::object(), "/amount").state == place::loose);
  CHECK(cfg::pin_of(json{{"type", "object"}}, "/amount").why.find("additionalProperties") !=
        std::string::npos);
}
