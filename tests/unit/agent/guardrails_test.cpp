#include <doctest/doctest.h>

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
  auto s = spec({tool("a"), tool("b"), tool("c")}, R"({
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
  auto s = spec({tool("query")}, R"({"rules": [{"name": "no-destructive-sql", "tool": "query",
                                      "pointer": "/sql", "pattern": "(?i)\\b(drop|truncate)\\b"}]})");
  for (const char* sql : {"DROP TABLE x", "drop table x", "DrOp\ttable", " truncate  t",
                          "x; DROP TABLE y --", "select 1;\nTRUNCATE accounts"}) {
    auto v = check_tool_call(*s, "query", {{"sql", sql}});
    CHECK_MESSAGE(v.verdict == kind::deny, sql);
    CHECK(v.rule == "no-destructive-sql");
    CHECK(v.reason == "denied by rule no-destructive-sql");
  }
  SUBCASE("hiding the statement inside an array or object does not help") {
    for (const char* sql : {R"(["select 1", "DROP TABLE y"])", R"(["select 1", "drop\ttable y"])",
                            R"({"then": ["Truncate t"]})", R"({"DROP TABLE y": 1})"}) {
      CHECK_MESSAGE(check_tool_call(*s, "query", {{"sql", json::parse(sql)}}).verdict == kind::deny,
                    sql);
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
  auto s = spec({tool("refund")}, R"({"rules": [{"name": "big-refund", "tool": "refund",
      "pointer": "/amount", "above": 100, "action": "require_approval",
      "reason": "refunds over 100 need a human"}]})");
  for (const char* amount : {"120", R"("120")", "1.2e2", "100.5", R"(" 1.2e2 ")", R"("0x78")"}) {
    auto v = check_tool_call(*s, "refund", {{"amount", json::parse(amount)}});
    CHECK_MESSAGE(v.verdict == kind::require_approval, amount);
    CHECK(v.rule == "big-refund");
    CHECK(v.reason == "refunds over 100 need a human");
  }
  for (const char* amount :
       {"100", R"("99")", "-500", R"("lots")", R"("120 EUR")", "true", "null", "[500]"}) {
    auto v = check_tool_call(*s, "refund", {{"amount", json::parse(amount)}});
    CHECK_MESSAGE(v.verdict == kind::allow, amount);
  }
  CHECK(std::string(keel::agent::to_string(kind::require_approval)) == "require_approval");
}

TEST_CASE("a rule applies only to its tool, or to every tool with \"*\"") {
  auto s = spec({tool("a"), tool("b")}, R"({"rules": [
    {"name": "only-a", "tool": "a", "pointer": "/n", "above": 1},
    {"name": "any", "tool": "*", "pointer": "/secret", "pattern": "."}]})");
  CHECK(check_tool_call(*s, "a", {{"n", 5}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "b", {{"n", 5}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"secret", "x"}}).rule == "any");
  CHECK(check_tool_call(*s, "b", {{"secret", "x"}}).rule == "any");
}

TEST_CASE("a rule whose pointer is absent from the arguments does not match") {
  auto s =
      spec({tool("a")}, R"({"rules": [{"name": "r", "pointer": "/items/3/qty", "above": 1}]})");
  for (const char* args :
       {"{}", R"({"items": [1, 2]})", R"({"items": "x"})", R"({"items": {"3": {"qty": 0}}})"})
    CHECK_MESSAGE(check_tool_call(*s, "a", json::parse(args)).verdict == kind::allow, args);
  CHECK(check_tool_call(*s, "a", json::parse(R"({"items": [0, 0, 0, {"qty": 5}]})")).verdict ==
        kind::deny);
  CHECK(check_tool_call(*s, "a", json::parse(R"({"items": {"3": {"qty": 5}}})")).verdict ==
        kind::deny);
}

TEST_CASE("above and below together match the open range between them") {
  auto s = spec({tool("a")},
                R"({"rules": [{"name": "mid", "pointer": "/n", "above": 10, "below": 20}]})");
  CHECK(check_tool_call(*s, "a", {{"n", 15}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "a", {{"n", "15"}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "a", {{"n", 10}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"n", 20}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "a", {{"n", "-3"}}).verdict == kind::allow);
}

TEST_CASE("a pattern rule also sees numbers and booleans as their JSON text") {
  auto s = spec({tool("pay")}, R"({"rules": [
    {"name": "test-card", "pointer": "/card", "pattern": "^4111"},
    {"name": "no-force", "pointer": "/force", "pattern": "true"}]})");
  CHECK(check_tool_call(*s, "pay", {{"card", 4111111111111111ull}}).rule == "test-card");
  CHECK(check_tool_call(*s, "pay", {{"card", "4111-1111"}}).rule == "test-card");
  CHECK(check_tool_call(*s, "pay", {{"force", true}}).rule == "no-force");
  CHECK(check_tool_call(*s, "pay", {{"force", false}}).verdict == kind::allow);
}

TEST_CASE("a matching deny rule wins over an approval rule listed before it") {
  auto s = spec({tool("refund")}, R"({"rules": [
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
  auto s = spec({tool("wire", {{"require_approval", true}})},
                R"({"rules": [{"name": "no-offshore", "pointer": "/to", "pattern": "^KY"}]})");
  auto v = check_tool_call(*s, "wire", {{"to", "DE89"}});
  CHECK(v.verdict == kind::require_approval);
  CHECK(v.rule == "require_approval");
  CHECK(contains(v.reason, "wire"));
  CHECK(check_tool_call(*s, "wire", {{"to", "KY12"}}).verdict == kind::deny);
}

TEST_CASE("a long argument is checked against a pattern rule without crashing") {
  auto s = spec({tool("query")}, R"({"rules": [
    {"name": "no-drop", "pointer": "/sql", "pattern": "(?i)\\bdrop\\b"},
    {"name": "only-letters", "pointer": "/word", "pattern": "^[a-z]+$"}]})");
  std::string padding(50'000, 'a');
  CHECK(check_tool_call(*s, "query", {{"sql", padding + " drop x"}}).verdict == kind::deny);
  CHECK(check_tool_call(*s, "query", {{"sql", padding}}).verdict == kind::allow);
  CHECK(check_tool_call(*s, "query", {{"word", padding}}).verdict == kind::deny);
}
