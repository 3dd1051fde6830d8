// effects/openai_model.hpp against the fake OpenAI server on 127.0.0.1.

#include <doctest/doctest.h>

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/abort_signal.hpp"
#include "effects/openai_model.hpp"
#include "support/aborted_call.hpp"
#include "support/fake_openai_server.hpp"
#include "support/refused_port.hpp"
#include "support/wait.hpp"

using namespace keel;
using nlohmann::json;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

config::model_spec spec_for(const std::string& base_url) {
  config::model_spec s;
  s.provider = "openai";
  s.model = "gpt-test";
  s.base_url = base_url;
  return s;
}

actors::model_call_context call_ctx(uint32_t timeout_ms = 10'000) {
  actors::model_call_context c;
  c.agent = "acct/alice";
  c.key = "m-1";
  c.timeout_ms = timeout_ms;
  return c;
}

json refund_request() {
  return {{"messages",
           {{{"role", "system"}, {"content", "You issue refunds."}},
            {{"role", "user"}, {"content", "Refund order A-1"}}}},
          {"tools",
           {{{"type", "function"},
             {"function",
              {{"name", "refund"},
               {"description", "Refund an order"},
               {"parameters",
                {{"type", "object"}, {"properties", {{"order", {{"type", "string"}}}}}}}}}}}}};
}

}  // namespace

TEST_CASE("an openai model sends the request with the model settings and returns the tool calls") {
  test::fake_openai_server ai;
  test::scripted_reply reply;
  reply.tool_calls.push_back({"call_a", "refund", {{"order", "A-1"}, {"amount", 12.5}}, {}});
  reply.tool_calls.push_back({"call_b", "notify", {{"to", "alice"}}, {}});
  reply.prompt_tokens = 42;
  reply.completion_tokens = 7;
  ai.push(reply);

  auto spec = spec_for(ai.base_url() + "/");  // a trailing slash changes nothing
  spec.temperature = 0.25;
  spec.max_tokens = 100;
  net::openai_model model;
  auto out = model.complete(spec, refund_request(), call_ctx());
  REQUIRE_MESSAGE(out.ok, out.error);

  const json& r = out.result;
  CHECK(r["content"].is_null());
  REQUIRE(r["tool_calls"].size() == 2);
  CHECK(r["tool_calls"][0] == json{{"id", "call_a"},
                                   {"name", "refund"},
                                   {"arguments", {{"order", "A-1"}, {"amount", 12.5}}}});
  CHECK(r["tool_calls"][1]["id"] == "call_b");
  CHECK(r["tool_calls"][1]["arguments"] == json{{"to", "alice"}});
  CHECK(r["usage"] == json{{"prompt_tokens", 42}, {"completion_tokens", 7}});
  CHECK(r["finish_reason"] == "tool_calls");

  REQUIRE(ai.calls() == 1);
  json sent = ai.last_request().body;
  CHECK(sent["model"] == "gpt-test");
  CHECK(sent["temperature"] == 0.25);
  CHECK(sent["max_tokens"] == 100);
  CHECK(sent["messages"] == refund_request()["messages"]);
  CHECK(sent["tools"] == refund_request()["tools"]);
}

TEST_CASE("an openai model returns a text reply as content and leaves unset settings out") {
  test::fake_openai_server ai;
  ai.push_text("Done: order A-1 refunded.");
  json request = refund_request();
  request["tools"] = json::array();
  net::openai_model model;
  auto out = model.complete(spec_for(ai.base_url()), request, call_ctx());
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(out.result["content"] == "Done: order A-1 refunded.");
  CHECK(out.result["tool_calls"] == json::array());
  CHECK(out.result["finish_reason"] == "stop");

  json sent = ai.last_request().body;
  CHECK_FALSE(sent.contains("temperature"));
  CHECK_FALSE(sent.contains("max_tokens"));
  CHECK_FALSE(sent.contains("tools"));  // OpenAI refuses an empty tools array
}

TEST_CASE("tool call arguments that are not JSON come back as $unparsed and empty ones as {}") {
  test::fake_openai_server ai;
  test::scripted_reply reply;
  reply.tool_calls.push_back({"c1", "refund", json::object(), std::string("{\"order\": A-1")});
  reply.tool_calls.push_back({"c2", "ping", json::object(), std::string("")});
  ai.push(reply);
  net::openai_model model;
  auto out = model.complete(spec_for(ai.base_url()), refund_request(), call_ctx());
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(out.result["tool_calls"][0]["arguments"] == json{{"$unparsed", "{\"order\": A-1"}});
  CHECK(out.result["tool_calls"][1]["arguments"] == json::object());
}

TEST_CASE("a reply without usage counts zero tokens") {
  test::fake_openai_server ai;
  auto reply = test::scripted_reply::text("hi");
  reply.omit_usage = true;
  ai.push(reply);
  net::openai_model model;
  auto out = model.complete(spec_for(ai.base_url()), refund_request(), call_ctx());
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(out.result["usage"] == json{{"prompt_tokens", 0}, {"completion_tokens", 0}});
}

TEST_CASE("server errors and rate limits are retryable and the retry gets the reply") {
  for (unsigned status : {500u, 502u, 503u, 429u, 408u}) {
    CAPTURE(status);
    test::fake_openai_server ai;
    ai.push_text("after the failure");
    ai.fail_next(1, status, "try again later");
    net::openai_model model;
    auto spec = spec_for(ai.base_url());
    auto first = model.complete(spec, refund_request(), call_ctx());
    REQUIRE_FALSE(first.ok);
    CHECK(first.retryable);
    CHECK(contains(first.error, "HTTP " + std::to_string(status)));
    CHECK(contains(first.error, "try again later"));
    auto second = model.complete(spec, refund_request(), call_ctx());
    REQUIRE_MESSAGE(second.ok, second.error);
    CHECK(second.result["content"] == "after the failure");
    CHECK(ai.calls() == 2);
  }
}

TEST_CASE("a 400 is a permanent failure carrying the server's message") {
  for (unsigned status : {400u, 401u, 404u}) {
    CAPTURE(status);
    test::fake_openai_server ai;
    ai.fail_next(1, status, "The model `gpt-test` does not exist");
    net::openai_model model;
    auto out = model.complete(spec_for(ai.base_url()), refund_request(), call_ctx());
    REQUIRE_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "HTTP " + std::to_string(status)));
    CHECK(contains(out.error, "The model `gpt-test` does not exist"));
    CHECK(contains(out.error, ai.base_url()));
  }
}

TEST_CASE("a 2xx body that is not a chat completion is a permanent failure") {
  for (const char* body : {"not json", "{}", R"({"choices": []})", R"({"choices": [{}]})",
                           R"({"choices": [{"message": {"content": 5}}]})",
                           R"({"choices": [{"message": {"tool_calls": [{"function": {}}]}}]})"}) {
    CAPTURE(body);
    test::fake_openai_server ai;
    test::scripted_reply reply;
    reply.raw_body = body;
    ai.push(reply);
    net::openai_model model;
    auto out = model.complete(spec_for(ai.base_url()), refund_request(), call_ctx());
    REQUIRE_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "malformed chat completion"));
  }
}

TEST_CASE("a reply slower than the timeout is a retryable failure within about the timeout") {
  test::fake_openai_server ai;
  ai.push_text("too late");
  ai.delay_next(1, std::chrono::seconds(3));
  net::openai_model model;
  auto start = std::chrono::steady_clock::now();
  auto out = model.complete(spec_for(ai.base_url()), refund_request(), call_ctx(200));
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK(contains(out.error, "timed out"));
  CHECK(took < std::chrono::milliseconds(2000));
}

TEST_CASE("an aborted model call returns at once as retryable and maybe applied") {
  test::fake_openai_server ai;
  ai.push_text("too late");
  ai.delay_next(1, std::chrono::seconds(60));
  net::openai_model model;
  auto abort = std::make_shared<abort_signal>();
  auto ctx = call_ctx(60'000);
  ctx.abort = abort;
  test::abort_while_running(
      "model call", *abort,
      [&] { return model.complete(spec_for(ai.base_url()), refund_request(), ctx); },
      [&] { return ai.wait_for_calls(1, std::chrono::seconds(10)); }, "was aborted");
  // Abandoned, not tried again: the server saw the one call.
  CHECK(ai.calls() == 1);
}

TEST_CASE("an endpoint that refuses connections is a retryable failure") {
  test::refused_port closed;
  net::openai_model model;
  auto out = model.complete(spec_for("http://127.0.0.1:" + std::to_string(closed.port()) + "/v1"),
                            refund_request(), call_ctx());
  REQUIRE_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK(contains(out.error, std::to_string(closed.port())));
}

TEST_CASE("a bad base_url is a permanent failure") {
  net::openai_model model;
  auto out = model.complete(spec_for("ftp://models.example/v1"), refund_request(), call_ctx());
  REQUIRE_FALSE(out.ok);
  CHECK_FALSE(out.retryable);
  CHECK(contains(out.error, "base_url"));
}

TEST_CASE("an unset api key variable is a permanent failure naming it, and nothing is sent") {
  test::fake_openai_server ai;
  ai.push_text("unused");
  ::unsetenv("KEEL_TEST_UNSET_OPENAI_KEY");
  auto spec = spec_for(ai.base_url());
  spec.api_key_env = "KEEL_TEST_UNSET_OPENAI_KEY";
  net::openai_model model;
  auto out = model.complete(spec, refund_request(), call_ctx());
  REQUIRE_FALSE(out.ok);
  CHECK_FALSE(out.retryable);
  CHECK(contains(out.error, "KEEL_TEST_UNSET_OPENAI_KEY"));
  CHECK(ai.calls() == 0);
}

TEST_CASE("the api key is sent as a bearer token only when api_key_env is set") {
  test::fake_openai_server ai;
  ai.push_text("one");
  ai.push_text("two");
  ::setenv("KEEL_TEST_OPENAI_KEY", "sk-test-123", 1);
  net::openai_model model;
  auto spec = spec_for(ai.base_url());
  spec.api_key_env = "KEEL_TEST_OPENAI_KEY";
  auto with_key = model.complete(spec, refund_request(), call_ctx());
  REQUIRE_MESSAGE(with_key.ok, with_key.error);
  CHECK(ai.last_request().header("Authorization") == "Bearer sk-test-123");

  auto without = model.complete(spec_for(ai.base_url()), refund_request(), call_ctx());
  REQUIRE_MESSAGE(without.ok, without.error);
  CHECK(ai.last_request().header("Authorization").empty());
  ::unsetenv("KEEL_TEST_OPENAI_KEY");
}

TEST_CASE("an api_key (a secret the runtime expanded) and headers go with the request") {
  test::fake_openai_server ai;
  ai.push_text("one");
  net::openai_model model;
  auto spec = spec_for(ai.base_url());
  spec.api_key = "sk-from-secret";
  spec.headers = {{"OpenAI-Organization", "org-7"}, {"Authorization", "Bearer overridden"}};
  auto out = model.complete(spec, refund_request(), call_ctx());
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(ai.last_request().header("Authorization") == "Bearer sk-from-secret");
  CHECK(ai.last_request().header("OpenAI-Organization") == "org-7");
}

TEST_CASE("concurrent calls from several threads each get an answer") {
  test::fake_openai_server ai;
  ai.set_default_reply(test::scripted_reply::text("ok"));
  net::openai_model model;
  auto spec = spec_for(ai.base_url());
  constexpr int threads = 6, calls_each = 10;
  std::atomic<int> good{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&] {
      for (int i = 0; i < calls_each; ++i)
        if (model.complete(spec, refund_request(), call_ctx()).ok) ++good;
    });
  for (auto& w : workers) w.join();
  CHECK(good == threads * calls_each);
  CHECK(ai.calls() == threads * calls_each);
}

TEST_CASE("normalize_chat_completion fills in what compatible servers leave out") {
  SUBCASE("a tool call without id gets one from its index, object arguments pass as they are") {
    auto out = net::normalize_chat_completion(R"({"choices": [{"message": {"content": null,
        "tool_calls": [{"function": {"name": "refund", "arguments": {"order": "A-1"}}}]}}]})");
    REQUIRE_MESSAGE(out.ok, out.error);
    CHECK(out.result["tool_calls"][0] ==
          json{{"id", "call_0"}, {"name", "refund"}, {"arguments", {{"order", "A-1"}}}});
    CHECK(out.result["finish_reason"] == "tool_calls");
    CHECK(out.result["usage"] == json{{"prompt_tokens", 0}, {"completion_tokens", 0}});
  }
  SUBCASE("content given as parts is joined") {
    auto out = net::normalize_chat_completion(R"({"choices": [{"message": {"content":
        [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]},
        "finish_reason": "length"}]})");
    REQUIRE_MESSAGE(out.ok, out.error);
    CHECK(out.result["content"] == "Hello, world");
    CHECK(out.result["finish_reason"] == "length");
  }
}
