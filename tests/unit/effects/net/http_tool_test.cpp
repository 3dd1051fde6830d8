// effects/http_tool.hpp against the fake tool API on 127.0.0.1, and the fake's
// own idempotency and hold behaviour that later tests rely on.

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "base/abort_signal.hpp"
#include "effects/http_tool.hpp"
#include "http/client.hpp"
#include "support/aborted_call.hpp"
#include "support/fake_tool_server.hpp"
#include "support/refused_port.hpp"
#include "support/wait.hpp"

using namespace keel;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

config::tool_spec tool_at(const std::string& name, const std::string& url) {
  config::tool_spec t;
  t.name = name;
  t.kind = config::tool_kind::http;
  t.url = url;
  return t;
}

actors::tool_call_context call_ctx(std::string key, uint32_t attempt = 1,
                                   uint32_t timeout_ms = 10'000) {
  actors::tool_call_context c;
  c.agent = "acct/alice";
  c.idempotency_key = std::move(key);
  c.attempt = attempt;
  c.timeout_ms = timeout_ms;
  return c;
}

const json refund_args = {{"order", "A-1"}, {"amount", 12.5}};

}  // namespace

TEST_CASE(
    "an http tool posts the arguments with the idempotency key, agent, attempt and tool headers") {
  test::fake_tool_server api;
  auto tool = tool_at("refund", api.url("refund"));
  tool.headers = {{"X-Api-Key", "k-123"}, {"Idempotency-Key", "overridden"}};
  net::http_tool runner;
  auto out = runner.run(tool, refund_args, call_ctx("eff-1", 3));
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(out.result == json{{"ok", true}, {"tool", "refund"}, {"args", refund_args}});

  auto call = api.last_call("refund");
  CHECK(call.args == refund_args);
  CHECK(call.idempotency_key == "eff-1");
  CHECK(call.header("X-Keel-Agent") == "acct/alice");
  CHECK(call.header("X-Keel-Attempt") == "3");
  CHECK(call.header("X-Api-Key") == "k-123");
  CHECK(call.header("Content-Type") == "application/json");
  CHECK(api.calls_for_key("eff-1") == 1);
  CHECK(api.applied("refund") == 1);
}

TEST_CASE("a repeated idempotency key reaches the tool twice but is applied once") {
  test::fake_tool_server api;
  auto tool = tool_at("refund", api.url("refund"));
  net::http_tool runner;
  auto first = runner.run(tool, refund_args, call_ctx("eff-7", 1));
  auto again = runner.run(tool, refund_args, call_ctx("eff-7", 2));
  auto other = runner.run(tool, refund_args, call_ctx("eff-8", 1));
  REQUIRE(first.ok);
  REQUIRE(again.ok);
  REQUIRE(other.ok);
  CHECK(again.result == first.result);
  CHECK(api.calls("refund") == 3);
  CHECK(api.calls_for_key("eff-7") == 2);
  CHECK(api.applied("refund") == 2);
  CHECK(api.last_call("refund").idempotency_key == "eff-8");
  auto log = api.log();
  REQUIRE(log.size() == 3);
  CHECK(log[1].replayed);
  CHECK_FALSE(log[1].applied);
}

TEST_CASE("a 5xx is retryable and the retry with the same key is applied once") {
  test::fake_tool_server api;
  test::tool_behaviour b;
  b.fail_first = 2;
  b.fail_status = 503;
  api.set_behaviour("refund", b);
  auto tool = tool_at("refund", api.url("refund"));
  net::http_tool runner;
  for (uint32_t attempt = 1; attempt <= 2; ++attempt) {
    auto out = runner.run(tool, refund_args, call_ctx("eff-1", attempt));
    REQUIRE_FALSE(out.ok);
    CHECK(out.retryable);
    CHECK(contains(out.error, "HTTP 503"));
  }
  CHECK(api.applied("refund") == 0);
  auto out = runner.run(tool, refund_args, call_ctx("eff-1", 3));
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(api.calls_for_key("eff-1") == 3);
  CHECK(api.applied("refund") == 1);
}

TEST_CASE("a 4xx is a permanent failure with the status and a bounded piece of the body") {
  test::fake_tool_server api;
  test::tool_behaviour b;
  b.status = 422;
  b.raw_body = "order A-1 cannot be refused twice" + std::string(5000, 'x');
  api.set_behaviour("refund", b);
  net::http_tool runner;
  auto out = runner.run(tool_at("refund", api.url("refund")), refund_args, call_ctx("eff-1"));
  REQUIRE_FALSE(out.ok);
  CHECK_FALSE(out.retryable);
  CHECK(contains(out.error, "HTTP 422"));
  CHECK(contains(out.error, "order A-1 cannot be refused twice"));
  CHECK(out.error.size() < 1000);
  CHECK(api.applied("refund") == 0);
}

TEST_CASE("408 and 429 are retryable") {
  for (unsigned status : {408u, 429u}) {
    CAPTURE(status);
    test::fake_tool_server api;
    test::tool_behaviour b;
    b.status = status;
    api.set_behaviour("refund", b);
    net::http_tool runner;
    auto out = runner.run(tool_at("refund", api.url("refund")), refund_args, call_ctx("eff-1"));
    REQUIRE_FALSE(out.ok);
    CHECK(out.retryable);
    CHECK(contains(out.error, "HTTP " + std::to_string(status)));
  }
}

TEST_CASE("a 2xx body that is not JSON comes back as text, and an empty one as null") {
  test::fake_tool_server api;
  test::tool_behaviour text;
  text.raw_body = "refunded \xff";  // not JSON, not even UTF-8
  api.set_behaviour("text", text);
  test::tool_behaviour empty;
  empty.status = 204;
  empty.raw_body = "";
  api.set_behaviour("empty", empty);
  net::http_tool runner;

  auto t = runner.run(tool_at("text", api.url("text")), json::object(), call_ctx("k1"));
  REQUIRE_MESSAGE(t.ok, t.error);
  REQUIRE(t.result.contains("text"));
  CHECK(contains(t.result["text"].get<std::string>(), "refunded "));
  CHECK_NOTHROW(t.result.dump());  // the invalid byte was replaced

  auto e = runner.run(tool_at("empty", api.url("empty")), json::object(), call_ctx("k2"));
  REQUIRE_MESSAGE(e.ok, e.error);
  CHECK(e.result.is_null());
}

TEST_CASE("a tool slower than the timeout is a retryable failure, though the work was applied") {
  test::fake_tool_server api;
  test::tool_behaviour b;
  b.delay = 3s;
  api.set_behaviour("slow", b);
  net::http_tool runner;
  auto start = std::chrono::steady_clock::now();
  auto out = runner.run(tool_at("slow", api.url("slow")), refund_args, call_ctx("eff-1", 1, 200));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  REQUIRE_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK(contains(out.error, "timed out"));
  CHECK(api.applied("slow") == 1);
}

TEST_CASE("a tool that refuses connections is a retryable failure and a bad url a permanent one") {
  test::refused_port closed;
  net::http_tool runner;
  auto refused = runner.run(
      tool_at("refund", "http://127.0.0.1:" + std::to_string(closed.port()) + "/tools/refund"),
      refund_args, call_ctx("eff-1"));
  REQUIRE_FALSE(refused.ok);
  CHECK(refused.retryable);

  auto bad = runner.run(tool_at("refund", "gopher://h/refund"), refund_args, call_ctx("eff-1"));
  REQUIRE_FALSE(bad.ok);
  CHECK_FALSE(bad.retryable);
}

TEST_CASE("a failure says whether it proves the call did nothing") {
  test::fake_tool_server api;
  net::http_tool runner;
  auto tool = [&](const std::string& name) {
    auto t = tool_at(name, api.url(name));
    t.idempotent = false;
    return t;
  };
  auto status = [&](const std::string& name, unsigned code, std::string retry_after = "") {
    test::tool_behaviour b;
    b.fail_first = 1;
    b.fail_status = code;
    b.retry_after = std::move(retry_after);
    api.set_behaviour(name, b);
    return runner.run(tool(name), refund_args, call_ctx("k-" + name));
  };
  // Proven not applied: retried when retryable, never in doubt.
  for (auto [name, code, after] :
       {std::tuple{"timeout", 408u, ""}, {"limited", 429u, ""}, {"busy", 503u, "2"}}) {
    CAPTURE(name);
    auto o = status(name, code, after);
    CHECK(o.retryable);
    CHECK_FALSE(o.maybe_applied);
  }
  // Nothing proves it: maybe applied.
  auto five = status("five", 500);
  CHECK(five.retryable);
  CHECK(five.maybe_applied);
  auto plain503 = status("plain503", 503);
  CHECK(plain503.maybe_applied);
  auto four = status("four", 400);
  CHECK_FALSE(four.retryable);
  CHECK(four.maybe_applied);
  // ... unless the tool declares that status as "not applied".
  test::tool_behaviour conflict;
  conflict.status = 409;
  api.set_behaviour("declared", conflict);
  auto declared = tool("declared");
  declared.not_applied.http_statuses = {409};
  auto d = runner.run(declared, refund_args, call_ctx("k-d"));
  CHECK_FALSE(d.retryable);
  CHECK_FALSE(d.maybe_applied);
  // No connection: nothing sent. A timeout after sending: maybe.
  test::refused_port closed;
  auto refused = runner.run(
      tool_at("refund", "http://127.0.0.1:" + std::to_string(closed.port()) + "/tools/refund"),
      refund_args, call_ctx("k-r"));
  CHECK_FALSE(refused.maybe_applied);
  test::tool_behaviour slow;
  slow.delay = 3s;
  api.set_behaviour("slow2", slow);
  auto late = runner.run(tool("slow2"), refund_args, call_ctx("k-s", 1, 200));
  CHECK(late.retryable);
  CHECK(late.maybe_applied);
}

TEST_CASE("a held call is applied on arrival and answered only when released") {
  test::fake_tool_server api;
  test::tool_behaviour b;
  b.hold = true;
  api.set_behaviour("refund", b);
  auto tool = tool_at("refund", api.url("refund"));
  net::http_tool runner;
  test::future_value<actors::effect_outcome> done;
  std::thread caller([&] { done.set(runner.run(tool, refund_args, call_ctx("eff-1"))); });
  REQUIRE(api.wait_for_held(1, 10s));
  CHECK(api.wait_for_calls("refund", 1, 10s));
  CHECK(api.applied("refund") == 1);
  CHECK_FALSE(done.wait(50ms).has_value());  // still waiting for its answer

  // The same key while the first is held: answered at once, not applied again.
  auto replay = runner.run(tool, refund_args, call_ctx("eff-1", 2));
  REQUIRE(replay.ok);
  CHECK(api.applied("refund") == 1);

  api.release();
  auto out = done.wait(10s);
  caller.join();
  REQUIRE(out.has_value());
  REQUIRE_MESSAGE(out->ok, out->error);
  CHECK(out->result == replay.result);
  CHECK(api.held() == 0);
}

TEST_CASE("a held call is answered when its hold times out") {
  test::fake_tool_server api;
  test::tool_behaviour b;
  b.hold = true;
  b.hold_timeout = 100ms;
  api.set_behaviour("refund", b);
  net::http_tool runner;
  auto out = runner.run(tool_at("refund", api.url("refund")), refund_args, call_ctx("eff-1"));
  REQUIRE_MESSAGE(out.ok, out.error);
  CHECK(api.held() == 0);
}

TEST_CASE(
    "an aborted call returns at once, may have been applied, and its connection is not kept") {
  test::fake_tool_server api;
  test::tool_behaviour b;
  b.hold = true;  // applied on arrival, answered only at release
  api.set_behaviour("refund", b);
  net::http_tool runner;
  auto abort = std::make_shared<abort_signal>();
  auto ctx = call_ctx("eff-1", 1, 60'000);
  ctx.abort = abort;
  test::abort_while_running(
      "http tool", *abort,
      [&] { return runner.run(tool_at("refund", api.url("refund")), refund_args, ctx); },
      [&] { return api.wait_for_held(1, 10s); }, "was aborted");
  CHECK(api.applied("refund") == 1);

  // The held connection still waits for its answer: a call that went out
  // on it would wait too. The next call gets a connection of its own.
  auto next =
      runner.run(tool_at("lookup", api.url("lookup")), refund_args, call_ctx("eff-2", 1, 5'000));
  CHECK_MESSAGE(next.ok, next.error);
}

TEST_CASE("a call aborted before it is sent does not reach the tool") {
  test::fake_tool_server api;
  net::http_tool runner;
  auto abort = std::make_shared<abort_signal>();
  abort->raise();
  auto ctx = call_ctx("eff-1");
  ctx.abort = abort;
  auto tool = tool_at("refund", api.url("refund"));
  tool.idempotent = false;  // the pool says whether it sent
  auto out = runner.run(tool, refund_args, ctx);
  CHECK_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK_FALSE(out.maybe_applied);
  CHECK(contains(out.error, "before it was sent"));
  CHECK(api.total_calls() == 0);
}

TEST_CASE(
    "the fake tool API reports calls per tool and key on GET /stats and is configurable over "
    "HTTP") {
  test::fake_tool_server api;
  net::http_client c;
  REQUIRE(c.connect("127.0.0.1", api.port()).is_ok());
  auto put = c.request("PUT", "/behaviours/refund", R"({"status": 400})");
  REQUIRE(put.is_ok());
  CHECK(put->status == 200);
  net::http_tool runner;
  auto out = runner.run(tool_at("refund", api.url("refund")), refund_args, call_ctx("eff-9"));
  CHECK_FALSE(out.ok);
  CHECK_FALSE(out.retryable);

  auto stats = c.request("GET", "/stats");
  REQUIRE(stats.is_ok());
  auto j = json::parse(stats->body);
  CHECK(j["tools"]["refund"] == json{{"calls", 1}, {"applied", 0}});
  CHECK(j["keys"]["eff-9"] == 1);
  CHECK(j["held"] == 0);
}
