#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/model_script.hpp"
#include "effects/scripted_model.hpp"
#include "support/temp_dir.hpp"

using keel::actors::effect_outcome;
using keel::actors::load_script;
using keel::actors::model_call_context;
using keel::actors::scripted_model;
using keel::config::model_spec;
using nlohmann::json;

namespace {

std::string write_script(const keel::test::temp_dir& dir, const std::string& name,
                         const std::string& text) {
  std::string path = (dir.path() / name).string();
  std::ofstream out(path);
  out << text;
  return path;
}

model_spec spec_for(const std::string& path) {
  model_spec s;
  s.provider = "scripted";
  s.model = "demo";
  s.script = path;
  return s;
}

model_call_context call(uint64_t index, uint32_t attempt = 1) {
  model_call_context ctx;
  ctx.agent = "acct/alice";
  ctx.call_index = index;
  ctx.key = "m-" + std::to_string(index);
  ctx.attempt = attempt;
  return ctx;
}

const json request = json::parse(R"({
  "messages": [{"role": "system", "content": "abcd"},
               {"role": "user", "content": "héllo"},
               {"role": "assistant", "content": null,
                "tool_calls": [{"id": "x", "type": "function",
                                "function": {"name": "f", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "x", "content": [{"type": "text", "text": "ok"}]}],
  "tools": []})");

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const char* refund_script = R"({
  "description": "refund demo",
  "replies": [
    {"tool_calls": [{"name": "refund", "arguments": {"amount": 5}},
                    {"name": "notify", "arguments": {"to": "alice"}, "id": "given"}]},
    {"content": "Refunded.", "usage": {"prompt_tokens": 100, "completion_tokens": 7}},
    {"error": "rate limited", "retryable": true},
    {"error": "bad request"},
    {"content": "cut", "finish_reason": "length"}
  ]})";

}  // namespace

TEST_CASE("replies are played in call order, normalized") {
  keel::test::temp_dir dir;
  auto spec = spec_for(write_script(dir, "refund.json", refund_script));
  scripted_model model;

  auto first = model.complete(spec, request, call(0));
  REQUIRE(first.ok);
  // Prompt: "abcd" + "héllo" + "ok" = 11 characters -> 3 tokens.
  // Completion: no content; {"amount":5} and {"to":"alice"} = 12 + 14 -> 7 tokens.
  CHECK(first.result == json::parse(R"({
    "content": null,
    "tool_calls": [{"id": "call_0_0", "name": "refund", "arguments": {"amount": 5}},
                   {"id": "given", "name": "notify", "arguments": {"to": "alice"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 7},
    "finish_reason": "tool_calls"})"));

  auto second = model.complete(spec, request, call(1));
  REQUIRE(second.ok);
  CHECK(second.result == json::parse(R"({
    "content": "Refunded.", "tool_calls": [],
    "usage": {"prompt_tokens": 100, "completion_tokens": 7},
    "finish_reason": "stop"})"));

  auto fifth = model.complete(spec, request, call(4));
  REQUIRE(fifth.ok);
  CHECK(fifth.result["finish_reason"] == "length");
  CHECK(fifth.result["usage"]["completion_tokens"] == 1);
}

TEST_CASE("the same call gets the same reply on every attempt and every provider") {
  keel::test::temp_dir dir;
  auto spec = spec_for(write_script(dir, "refund.json", refund_script));
  scripted_model a, b;
  auto x = a.complete(spec, request, call(0, 1));
  auto y = b.complete(spec, request, call(0, 3));
  REQUIRE(x.ok);
  CHECK(x.result == y.result);
}

TEST_CASE("error entries fail the call, retryable or not") {
  keel::test::temp_dir dir;
  auto spec = spec_for(write_script(dir, "refund.json", refund_script));
  scripted_model model;
  auto busy = model.complete(spec, request, call(2));
  CHECK_FALSE(busy.ok);
  CHECK(busy.retryable);
  CHECK(busy.error == "rate limited");
  auto bad = model.complete(spec, request, call(3));
  CHECK_FALSE(bad.ok);
  CHECK_FALSE(bad.retryable);
  CHECK(bad.error == "bad request");
}

TEST_CASE("a call past the last reply fails permanently unless the script cycles") {
  keel::test::temp_dir dir;
  scripted_model model;
  SUBCASE("no cycle") {
    auto path = write_script(dir, "short.json", R"({"replies": [{"content": "one"}]})");
    auto out = model.complete(spec_for(path), request, call(1));
    CHECK_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "script " + path + " has no reply #1"));
  }
  SUBCASE("cycle") {
    auto path = write_script(dir, "loop.json",
                             R"({"replies": [{"content": "one"}, {"content": "two"}],
                                 "cycle": true})");
    auto out = model.complete(spec_for(path), request, call(5));
    REQUIRE(out.ok);
    CHECK(out.result["content"] == "two");
  }
}

TEST_CASE("replies loaded with the type are what the model answers, whatever the file says later") {
  keel::test::temp_dir dir;
  auto path = write_script(dir, "s.json", R"({"replies": [{"content": "before"}]})");
  auto spec = spec_for(path);
  spec.script_content = *keel::config::load_model_script(path);  // as parsing a type does
  scripted_model model;
  REQUIRE(model.complete(spec, request, call(0)).result["content"] == "before");
  write_script(dir, "s.json", R"({"replies": [{"content": "after"}]})");
  CHECK(model.complete(spec, request, call(0)).result["content"] == "before");
}

TEST_CASE("a broken script fails calls permanently, naming the file") {
  keel::test::temp_dir dir;
  scripted_model model;
  auto path = write_script(dir, "broken.json", R"({"replies": [)");
  auto out = model.complete(spec_for(path), request, call(0));
  CHECK_FALSE(out.ok);
  CHECK_FALSE(out.retryable);
  CHECK(contains(out.error, path + ": not valid JSON"));

  SUBCASE("and works once the file is fixed, since failures are not cached") {
    write_script(dir, "broken.json", R"({"replies": [{"content": "fixed"}]})");
    auto again = model.complete(spec_for(path), request, call(0));
    REQUIRE(again.ok);
    CHECK(again.result["content"] == "fixed");
  }
  SUBCASE("a spec without a script") {
    auto none = model.complete(spec_for(""), request, call(0));
    CHECK_FALSE(none.ok);
    CHECK_FALSE(none.retryable);
  }
}

TEST_CASE("load_script names the file and the JSON pointer of what is wrong") {
  keel::test::temp_dir dir;
  struct bad_case {
    const char* text;
    const char* message;
  };
  const bad_case cases[] = {
      {R"([])", ": /: must be an object"},
      {R"({})", ": /replies: must be a non-empty array"},
      {R"({"replies": []})", ": /replies: must be a non-empty array"},
      {R"({"replies": [{}], "cycle": "yes"})", ": /cycle: must be true or false"},
      {R"({"replies": [{}], "loop": true})", ": /loop: unknown key"},
      {R"({"replies": [{}, 3]})", ": /replies/1: must be an object"},
      {R"({"replies": [{"content": 5}]})", ": /replies/0/content: must be a string or null"},
      {R"({"replies": [{"tool_call": []}]})", ": /replies/0/tool_call: unknown key"},
      {R"({"replies": [{"tool_calls": {}}]})", ": /replies/0/tool_calls: must be an array"},
      {R"({"replies": [{}, {"tool_calls": [{"arguments": {}}]}]})",
       ": /replies/1/tool_calls/0/name: must be a non-empty string"},
      {R"({"replies": [{"tool_calls": [{"name": "f", "id": 3}]}]})",
       ": /replies/0/tool_calls/0/id: must be a non-empty string"},
      {R"({"replies": [{"usage": {"prompt_tokens": -1, "completion_tokens": 1}}]})",
       ": /replies/0/usage/prompt_tokens: must be an integer >= 0"},
      {R"({"replies": [{"usage": {"prompt_tokens": 1}}]})",
       ": /replies/0/usage/completion_tokens: must be an integer >= 0"},
      {R"({"replies": [{"error": ""}]})", ": /replies/0/error: must be a non-empty string"},
      {R"({"replies": [{"error": "x", "retryable": 1}]})",
       ": /replies/0/retryable: must be true or false"},
      {R"({"replies": [{"error": "x", "content": "y"}]})", ": /replies/0/content: unknown key"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    auto path = write_script(dir, "bad.json", c.text);
    auto r = load_script(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == keel::code::invalid_argument);
    CHECK(r.error().message().starts_with(path + c.message));
  }

  SUBCASE("JSON syntax errors say where") {
    auto path = write_script(dir, "bad.json", "{\n  \"replies\": [,]\n}");
    auto r = load_script(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == keel::code::invalid_argument);
    CHECK(contains(r.error().message(), path + ": not valid JSON: parse error at line 2"));
  }
  SUBCASE("a missing file is an io_error") {
    auto r = load_script((dir.path() / "nope.json").string());
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == keel::code::io_error);
    CHECK(contains(r.error().message(), "nope.json"));
  }
}

TEST_CASE("load_script fills in the defaults") {
  keel::test::temp_dir dir;
  auto r = load_script(write_script(dir, "s.json", R"({"replies": [
      {"tool_calls": [{"name": "f"}]}, {"error": "e"}]})"));
  REQUIRE(r.is_ok());
  CHECK(*r == json::parse(R"({"cycle": false, "replies": [
      {"content": null, "tool_calls": [{"name": "f", "arguments": {}}]},
      {"error": "e", "retryable": false}]})"));
}

TEST_CASE("concurrent calls on one provider agree") {
  keel::test::temp_dir dir;
  auto spec = spec_for(write_script(dir, "refund.json", refund_script));
  scripted_model model;
  std::vector<json> results(8);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < results.size(); ++i)
    threads.emplace_back(
        [&, i] { results[i] = model.complete(spec, request, call(i % 2)).result; });
  for (auto& t : threads) t.join();
  for (std::size_t i = 2; i < results.size(); ++i) CHECK(results[i] == results[i % 2]);
  CHECK(results[1]["content"] == "Refunded.");
}
