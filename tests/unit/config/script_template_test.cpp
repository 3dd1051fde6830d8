#include <doctest/doctest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "config/model_script.hpp"
#include "config/script_template.hpp"

using keel::config::check_model_script;
using keel::config::check_template_text;
using keel::config::template_scope;
using nlohmann::json;

namespace {

// A refund turn as the model sees it: an earlier turn, then this turn's
// input, a lookup, and a refund the human rejected.
const json rejected_turn = json::parse(R"({"messages": [
  {"role": "system", "content": "You are a refund desk."},
  {"role": "user", "content": "an earlier turn"},
  {"role": "assistant", "content": null, "tool_calls": [{"id": "old", "type": "function",
    "function": {"name": "refund", "arguments": "{\"order\": 1, \"amount\": 5}"}}]},
  {"role": "tool", "tool_call_id": "old", "content": "{\"refunded\": true}"},
  {"role": "user", "content": "{\"customer\": 42, \"text\": \"refund order 9\"}"},
  {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function",
    "function": {"name": "lookup_order", "arguments": "{\"order\": 9}"}}]},
  {"role": "tool", "tool_call_id": "a", "content": "{\"order\": 9, \"amount\": 120}"},
  {"role": "assistant", "content": null, "tool_calls": [{"id": "b", "type": "function",
    "function": {"name": "refund", "arguments": "{\"order\": 9, \"amount\": 120}"}}]},
  {"role": "tool", "tool_call_id": "b",
   "content": "{\"error\": \"refused\", \"verdict\": \"rejected\", \"reason\": \"duplicate\"}"}
]})");

}  // namespace

TEST_CASE("placeholders take this turn's input, arguments and results") {
  const template_scope scope(rejected_turn);
  CHECK(*scope.resolve("input/customer") == 42);
  CHECK(*scope.resolve("args.refund/amount") == 120);
  CHECK(*scope.resolve("result.lookup_order") == json{{"order", 9}, {"amount", 120}});
  CHECK(*scope.resolve("result.refund/reason") == "duplicate");
  SUBCASE("a string that is one placeholder keeps the value's type") {
    auto args = scope.render(json{{"amount", "{{result.lookup_order/amount}}"}});
    REQUIRE(args);
    CHECK((*args)["amount"] == 120);
  }
  SUBCASE("text around placeholders is interpolated") {
    auto text = scope.render(
        "not refunded {{ args.refund/amount }} on {{args.refund}}: "
        "{{result.refund/reason}}");
    REQUIRE(text);
    CHECK(*text == R"(not refunded 120 on {"amount":120,"order":9}: duplicate)");
  }
  SUBCASE("conditions hold on present, non-empty values only") {
    CHECK(scope.holds("result.refund/error"));
    CHECK_FALSE(scope.holds("result.refund/refunded"));
    CHECK_FALSE(scope.holds("result.ask_human"));
  }
}

TEST_CASE("a placeholder the turn cannot fill is an error naming it") {
  const template_scope scope(rejected_turn);
  auto missing = scope.render("{{result.refund/refund_id}}");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message().find("nothing at /refund_id") != std::string::npos);
  auto none = scope.resolve("args.ask_human");
  REQUIRE_FALSE(none);
  CHECK(none.error().message().find("no call of ask_human in this turn") != std::string::npos);
  // The earlier turn's refund is not this turn's.
  const json only_input = json::parse(
      R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null,
      "tool_calls": [{"id": "c", "type": "function", "function": {"name": "refund",
      "arguments": "{}"}}]}, {"role": "user", "content": "plain text"}]})");
  const template_scope next(only_input);
  CHECK_FALSE(next.resolve("args.refund"));
  CHECK(*next.resolve("input") == "plain text");
  CHECK_FALSE(next.resolve("input/x"));
}

TEST_CASE("malformed placeholders fail the script's load") {
  CHECK(check_template_text("Refunded {{args.refund/amount}}."));
  CHECK_FALSE(check_template_text("Refunded {{arg.refund/amount}}."));
  CHECK_FALSE(check_template_text("Refunded {{args.refund/amount."));
  CHECK_FALSE(check_template_text("{{result.refund/~2}}"));
  auto bad = check_model_script(json::parse(R"({"replies": [{"content": "{{results.refund}}"}]})"),
                                "s.json");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("s.json: /replies/0/content: placeholder 'results.refund'") ==
        0);
  auto bad_if = check_model_script(
      json::parse(R"({"replies": [{"choose": [{"if": "refund", "content": "x"}]}]})"), "s.json");
  REQUIRE_FALSE(bad_if);
  CHECK(bad_if.error().message().find("/replies/0/choose/0/if") != std::string::npos);
  auto stray_if =
      check_model_script(json::parse(R"({"replies": [{"if": "input", "content": "x"}]})"), "s");
  CHECK_FALSE(stray_if);
}

TEST_CASE("a script without placeholders or alternatives checks as before") {
  // Versions of types are hashed over the checked script: it must not change.
  const json plain = json::parse(R"({"replies": [{"content": "hi"}, {"error": "down"}]})");
  auto checked = check_model_script(plain, "s.json");
  REQUIRE(checked);
  CHECK(*checked == json::parse(R"({"replies": [{"content": "hi", "tool_calls": []},
      {"error": "down", "retryable": false}], "cycle": false})"));
  auto alts = check_model_script(
      json::parse(
          R"({"replies": [{"choose": [{"if": "input", "content": "a"}, {"error": "e"}]}]})"),
      "s.json");
  REQUIRE(alts);
  CHECK((*alts)["replies"][0] == json::parse(R"({"choose": [
      {"if": "input", "content": "a", "tool_calls": []}, {"error": "e", "retryable": false}]})"));
}
