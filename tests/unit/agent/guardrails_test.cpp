#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/guardrails.hpp"
#include "config/agent_spec.hpp"

using keel::agent::check_tool_call;
using keel::agent::guardrail_verdict;
using nlohmann::json;
using kind = guardrail_verdict::kind;
namespace cfg = keel::config;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A spec with the given tools and guardrails, parsed the way a file is.
std::shared_ptr<const cfg::agent_spec> spec(json tools, const char* guardrails = "{}") {
  json j = {{"name", "guarded"},
            {"model", {{"provider", "openai"}, {"base_url", "http://127.0.0.1:1/v1"}}},
            {"tools", std::move(tools)},
            {"guardrails", json::parse(guardrails)}};
  auto r = cfg::parse_agent_spec(j, "guarded.json", ".");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return *r;
}

json tool(const std::string& name, json extra = json::object()) {
  json t = {{"name", name}, {"kind", "http"}, {"url", "http://127.0.0.1:1/" + name}};
  t.update(extra);
  return t;
}

// Parameters that pin each named property to one type, and nothing else:
// the schema a guardrail rule needs.
json strict(const std::map<std::string, std::string>& props) {
  json p = json::object();
  for (const auto& [name, type] : props) p[name] = {{"type", type}};
  return {{"type", "object"}, {"additionalProperties", false}, {"properties", p}};
}

json pinned_tool(const std::string& name, const std::map<std::string, std::string>& props,
                 json extra = json::object()) {
  extra["parameters"] = strict(props);
  return tool(name, std::move(extra));
}

// The error of a spec that must not load.
std::string refused(json tools, const char* guardrails) {
  json j = {{"name", "guarded"},
            {"model", {{"provider", "openai"}, {"base_url", "http://127.0.0.1:1/v1"}}},
            {"tools", std::move(tools)},
            {"guardrails", json::parse(guardrails)}};
  auto r = cfg::parse_agent_spec(j, "guarded.json", ".");
  REQUIRE_FALSE(r.is_ok());
  return r.error().message();
}

}  // namespace

TEST_CASE("a call to a declared tool with no guardrails is allowed") {
  auto s = spec({tool("lookup")});
  auto v = check_tool_call(*s, "lookup", {{"q", "x"}});
  CHECK(v.verdict == kind::allow);
  CHECK(v.rule.empty());
  CHECK(std::string(keel::agent::to_string(v.verdict)) == "allow");
}

TEST_CASE("a call to an undeclared tool is invalid") {
  auto s = spec({tool("lookup")});
  auto v = check_tool_call(*s, "delete_everything", json::object());
  CHECK(v.verdict == kind::invalid);
  CHECK(v.rule == "unknown_tool");
  CHECK(contains(v.reason, "delete_everything"));
  CHECK(contains(v.reason, "lookup"));
  CHECK(std::string(keel::agent::to_string(v.verdict)) == "invalid");
}

TEST_CASE("arguments that fail the tool's schema are invalid, with the violation") {
  auto s = spec({tool("refund", {{"parameters", json::parse(R"({"type": "object",
      "required": ["amount"], "properties": {"amount": {"type": "number", "maximum": 1000}}})")}})});
  auto v = check_tool_call(*s, "refund", {{"amount", 5000}});
  CHECK(v.verdict == kind::invalid);
  CHECK(v.rule == "schema");
  CHECK(contains(v.reason, "/amount: must be <= 1000"));
  v = check_tool_call(*s, "refund", json::object());
  CHECK(v.verdict == kind::invalid);
  CHECK(contains(v.reason, "/amount: is required"));
  v = check_tool_call(*s, "refund", json::array());
  CHECK(v.verdict == kind::invalid);
  CHECK(check_tool_call(*s, "refund", {{"amount", 10}}).verdict == kind::allow);
}

TEST_CASE("deny_tools and allow_tools decide before any argument rule") {
  auto s = spec({pinned_tool("a", {{"x", "number"}}), pinned_tool("b", {{"x", "number"}}),
                 pinned_tool("c", {{"x", "number"}})},
                R"({
    "allow_tools": ["a", "b"], "deny_tools": ["b"],
    "rules": [{"name": "approve-all", "pointer": "/x", "above": 0, "action": "require_approval"}]
  })");
  auto va = check_tool_call(*s, "a", {{"x", 1}});
  CHECK(va.verdict == kind::require_approval);
  CHECK(va.rule == "approve-all");
  auto vb = check_tool_call(*s, "b", {{"x", 1}});
  CHECK(vb.verdict == kind::deny);
  CHECK(vb.rule == "deny_tools");
  auto vc = check_tool_call(*s, "c", {{"x", 1}});
  CHECK(vc.verdict == kind::deny);
  CHECK(vc.rule == "allow_tools");
  CHECK(std::string(keel::agent::to_string(vc.verdict)) == "deny");
}

TEST_CASE("a schema failure is reported before a denied tool") {
  auto s = spec({tool("a", {{"parameters", json::parse(R"({"required": ["x"]})")}})},
                R"({"deny_tools": ["a"]})");
  CHECK(check_tool_call(*s, "a", json::object()).verdict == kind::invalid);
  CHECK(check_tool_call(*s, "a", {{"x", 1}}).verdict == kind::deny);
}

TEST_CASE(
    "a model that repeats a denied call does not get it through by rephrasing the arguments") {
  auto s = spec({pinned_tool("query", {{"sql", "string"}})},
                R"({"rules": [{"name": "no-destructive-sql", "tool": "query",
                                      "pointer": "/sql", "pattern": "(?i)\\b(drop|truncate)\\b"}]})");
  for (const char* sql : {"DROP TABLE x", "drop table x", "DrOp\ttable", " truncate  t",
                          "x; DROP TABLE y --", "select 1;\nTRUNCATE accounts"}) {
    auto v = check_tool_call(*s, "query", {{"sql", sql}});
    CHECK_MESSAGE(v.verdict == kind::deny, sql);
    CHECK(v.rule == "no-destructive-sql");
    CHECK(v.reason == "denied by rule no-destructive-sql");
  }
  SUBCASE("hiding the statement inside an array or object is refused by the schema") {
    for (const char* sql : {R"(["select 1", "DROP TABLE y"])", R"(["select 1", "drop\ttable y"])",
                            R"({"then": ["Truncate t"]})", R"({"DROP TABLE y": 1})"}) {
      CHECK_MESSAGE(
          check_tool_call(*s, "query", {{"sql", json::parse(sql)}}).verdict == kind::invalid, sql);
    }
  }
  SUBCASE("a statement that only looks different is still the statement") {
    // Fullwidth letters, a zero-width space, no-break spaces, a Greek
    // omicron and a Cyrillic es in place of Latin letters, a soft hyphen.
    for (const char* sql : {"\xEF\xBC\xA4\xEF\xBC\xB2\xEF\xBC\xAF\xEF\xBC\xB0 table x",
                            "DR\xE2\x80\x8BOP table x", "drop\xC2\xA0table", "DR\xCE\x9FP TABLE x",
                            "trun\xD1\x81"
                            "ate t",
                            "dr\xC2\xADop table"}) {
      CHECK_MESSAGE(check_tool_call(*s, "query", {{"sql", sql}}).verdict == kind::deny, sql);
    }
  }
  SUBCASE("harmless statements and words that merely contain the keyword pass") {
    for (const char* sql : {"select * from dropbox", "select 1", "update backdrop set x=1"})
      CHECK_MESSAGE(check_tool_call(*s, "query", {{"sql", sql}}).verdict == kind::allow, sql);
  }
  SUBCASE("the same call always gets the same verdict") {
    json args = {{"sql", "DROP TABLE x"}};
    for (int i = 0; i < 3; ++i) CHECK(check_tool_call(*s, "query", args).verdict == kind::deny);
  }
}

TEST_CASE("an amount above the limit needs approval however it is written") {
  auto s = spec({pinned_tool("refund", {{"amount", "number"}})},
                R"({"rules": [{"name": "big-refund", "tool": "refund",
      "pointer": "/amount", "above": 100, "action": "require_approval",
      "reason": "refunds over 100 need a human"}]})");
  for (const char* amount : {"120", "1.2e2", "100.5", "1e9"}) {
    auto v = check_tool_call(*s, "refund", {{"amount", json::parse(amount)}});
    CHECK_MESSAGE(v.verdict == kind::require_approval, amount);
    CHECK(v.rule == "big-refund");
    CHECK(v.reason == "refunds over 100 need a human");
  }
  for (const char* amount : {"100", "-500", "0"})
    CHECK_MESSAGE(
        check_tool_call(*s, "refund", {{"amount", json::parse(amount)}}).verdict == kind::allow,
        amount);
  // Every other way of writing an amount is not a number the schema takes:
  // the call is refused before any rule, so no form slips past one.
  for (const char* amount :
       {R"("120")", R"(" 1.2e2 ")", R"("0x78")", R"("1_000")", R"("1000\u00a0")", "[1000]",
        R"("\uff11\uff10\uff10\uff10")", R"("\u0661\u0660\u0660\u0660")", "true", "null"}) {
    auto v = check_tool_call(*s, "refund", {{"amount", json::parse(amount)}});
    CHECK_MESSAGE(v.verdict == kind::invalid, amount);
  }
  // Lookalike keys are not the amount, and not allowed at all.
  for (const char* key : {"Amount", "\xD0\xB0mount", "amount "})
    CHECK_MESSAGE(check_tool_call(*s, "refund", {{key, 5000}}).verdict == kind::invalid, key);
  CHECK(std::string(keel::agent::to_string(kind::require_approval)) == "require_approval");
}

TEST_CASE("a rule on a place its tool's schema does not pin down is refused at load") {
  const char* rule = R"({"rules": [{"name": "big", "tool": "refund", "pointer": "/amount",
                         "above": 100}]})";
  // No schema, an open object, a property without a type, several types.
  for (const char* params :
       {R"({})", R"({"type": "object"})",
        R"({"type": "object", "properties": {"amount": {"type": "number"}}})",
        R"({"type": "object", "additionalProperties": false, "properties": {"amount": {}}})",
        R"({"type": "object", "additionalProperties": false,
            "properties": {"amount": {"type": ["number", "string"]}}})"}) {
    const std::string why = refused({tool("refund", {{"parameters", json::parse(params)}})}, rule);
    CHECK_MESSAGE(contains(why, "/guardrails/rules/0/pointer"), why);
    CHECK_MESSAGE(contains(why, "do not pin down /amount"), why);
  }
  // A number rule on text, a pattern on a number, a place no call can have.
  CHECK(contains(refused({pinned_tool("refund", {{"amount", "string"}})}, rule),
                 "compares numbers, but tool refund takes /amount as type string"));
  CHECK(contains(refused({pinned_tool("pay", {{"card", "integer"}})},
                         R"({"rules": [{"name": "t", "pointer": "/card", "pattern": "^4111"}]})"),
                 "matches text, but tool pay takes /card as type integer"));
  CHECK(contains(refused({pinned_tool("refund", {{"total", "number"}})}, rule),
                 "allow no /amount, so the rule never matches"));
  CHECK(contains(refused({pinned_tool("a", {{"x", "number"}})},
                         R"({"rules": [{"name": "t", "tool": "*", "pointer": "/y", "above": 1}]})"),
                 "no tool's parameters allow /y"));
}

TEST_CASE("a rule applies only to its tool, or to every tool with \"*\"") {
  auto s = spec({pinned_tool("a", {{"n", "number"}, {"secret", "string"}}),
                 pinned_tool("b", {{"n", "number"}, {"secret", "string"}})},
                R"({"rules": [
    {"name": "only-a", "tool": "a", "pointer": "/n", "above": 1},
    {"name": "any", "tool": "*", "pointer": "/secret", "pattern": "."}]})");
  CHECK(check_tool_call(*s, "a", {{"n", 5}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "b", {{"n", 5}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"secret", "x"}}).rule == "any");
  CHECK(check_tool_call(*s, "b", {{"secret", "x"}}).rule == "any");
}

TEST_CASE("a rule whose pointer is absent from the arguments does not match") {
  const json params = json::parse(R"({"type": "object", "additionalProperties": false,
    "properties": {"items": {"type": "array", "items": {"type": "object",
      "additionalProperties": false, "properties": {"qty": {"type": "number"}}}}}})");
  auto s = spec({tool("a", {{"parameters", params}})},
                R"({"rules": [{"name": "r", "pointer": "/items/3/qty", "above": 1}]})");
  for (const char* args : {"{}", R"({"items": []})", R"({"items": [{}, {}, {}, {}]})",
                           R"({"items": [{"qty": 9}, {}, {}]})"})
    CHECK_MESSAGE(check_tool_call(*s, "a", json::parse(args)).verdict == kind::allow, args);
  CHECK(check_tool_call(*s, "a", json::parse(R"({"items": [{}, {}, {}, {"qty": 5}]})")).verdict ==
        kind::deny);
  // An object keyed "3" is not the array the rule watches: the schema
  // refuses it.
  CHECK(check_tool_call(*s, "a", json::parse(R"({"items": {"3": {"qty": 5}}})")).verdict ==
        kind::invalid);
}

TEST_CASE("above and below together match the open range between them") {
  auto s = spec({pinned_tool("a", {{"n", "number"}})},
                R"({"rules": [{"name": "mid", "pointer": "/n", "above": 10, "below": 20}]})");
  CHECK(check_tool_call(*s, "a", {{"n", 15}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "a", {{"n", 10}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"n", 20}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"n", -3}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"n", "15"}}).verdict == kind::invalid);
}

TEST_CASE("a pattern rule matches the text as sent or in its normalized form") {
  auto s = spec({pinned_tool("tag", {{"code", "string"}})},
                R"({"rules": [{"name": "no-vip", "pointer": "/code", "pattern": "(?i)^vip-"}]})");
  // Leading spaces of any kind, fullwidth, lookalike letters, zero-width.
  for (const char* code : {"vip-7", "VIP-7", " vip-7", "\xC2\xA0vip-7", "\xE3\x80\x80VIP-7",
                           "\xEF\xBD\x96\xEF\xBD\x89\xEF\xBD\x90-7", "v\xD1\x96p-7",
                           "\xE2\x80\x8Bvip-7", "\xCE\xBD\xCE\xB9p-7"})
    CHECK_MESSAGE(check_tool_call(*s, "tag", {{"code", code}}).verdict == kind::deny, code);
  for (const char* code : {"vip7", "my-vip-7", "v ip-7"})
    CHECK_MESSAGE(check_tool_call(*s, "tag", {{"code", code}}).verdict == kind::allow, code);
}

TEST_CASE("a matching deny rule wins over an approval rule listed before it") {
  auto s = spec({pinned_tool("refund", {{"amount", "number"}})}, R"({"rules": [
    {"name": "big", "pointer": "/amount", "above": 100, "action": "require_approval"},
    {"name": "huge", "pointer": "/amount", "above": 10000, "reason": "far too large"}]})");
  auto v = check_tool_call(*s, "refund", {{"amount", 50000}});
  CHECK(v.verdict == kind::deny);
  CHECK(v.rule == "huge");
  CHECK(v.reason == "far too large");
  v = check_tool_call(*s, "refund", {{"amount", 500}});
  CHECK(v.verdict == kind::require_approval);
  CHECK(v.rule == "big");
  CHECK(contains(v.reason, "big"));
}

TEST_CASE("the tool's require_approval flag applies when no rule decided") {
  auto s = spec({pinned_tool("wire", {{"to", "string"}}, json{{"require_approval", true}})},
                R"({"rules": [{"name": "no-offshore", "pointer": "/to", "pattern": "^KY"}]})");
  auto v = check_tool_call(*s, "wire", {{"to", "DE89"}});
  CHECK(v.verdict == kind::require_approval);
  CHECK(v.rule == "require_approval");
  CHECK(contains(v.reason, "wire"));
  CHECK(check_tool_call(*s, "wire", {{"to", "KY12"}}).verdict == kind::deny);
}

TEST_CASE("a long argument is checked against a pattern rule without crashing") {
  auto s = spec({pinned_tool("query", {{"sql", "string"}, {"word", "string"}})}, R"({"rules": [
    {"name": "no-drop", "pointer": "/sql", "pattern": "(?i)\\bdrop\\b"},
    {"name": "only-letters", "pointer": "/word", "pattern": "^[a-z]+$"}]})");
  std::string padding(50'000, 'a');
  CHECK(check_tool_call(*s, "query", {{"sql", padding + " drop x"}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "query", {{"sql", padding}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "query", {{"word", padding}}).verdict == kind::deny);
}
