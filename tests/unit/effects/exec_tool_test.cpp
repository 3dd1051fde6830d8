#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "effects/exec_sandbox.hpp"
#include "effects/exec_tool.hpp"
#include "support/aborted_call.hpp"
#include "support/process_scan.hpp"
#include "support/wait.hpp"

using keel::actors::effect_outcome;
using keel::actors::exec_tool;
using keel::actors::tool_call_context;
using keel::config::tool_kind;
using keel::config::tool_spec;
using nlohmann::json;

namespace {

tool_spec shell_tool(const std::string& script) {
  tool_spec t;
  t.name = "lookup";
  t.kind = tool_kind::exec;
  t.argv = {"/bin/sh", "-c", script};
  return t;
}

tool_call_context context(uint32_t timeout_ms = 20'000) {
  tool_call_context ctx;
  ctx.agent = "acct/alice";
  ctx.idempotency_key = "eff-42";
  ctx.attempt = 2;
  ctx.timeout_ms = timeout_ms;
  return ctx;
}

effect_outcome run(const tool_spec& tool, const json& args = json::object(),
                   const tool_call_context& ctx = context()) {
  exec_tool runner;
  return runner.run(tool, args, ctx);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("the tool reads its arguments, key, attempt and agent as JSON on stdin") {
  auto out = run(shell_tool("cat"), json{{"order", "A-17"}, {"amount", 12.5}});
  REQUIRE(out.ok);
  CHECK(out.result == json{{"arguments", {{"order", "A-17"}, {"amount", 12.5}}},
                           {"idempotency_key", "eff-42"},
                           {"attempt", 2},
                           {"agent", "acct/alice"}});
}

TEST_CASE("stdout that is one JSON document is the result") {
  auto out = run(shell_tool(R"(printf '  {"status": "refunded", "id": 7}\n\n')"));
  REQUIRE(out.ok);
  CHECK(out.result == json{{"status", "refunded"}, {"id", 7}});

  SUBCASE("a scalar document counts") {
    auto n = run(shell_tool("echo 42"));
    REQUIRE(n.ok);
    CHECK(n.result == json(42));
  }
}

TEST_CASE("stdout that is not one JSON document comes back as text") {
  SUBCASE("plain text") {
    auto out = run(shell_tool("echo hello world"));
    REQUIRE(out.ok);
    CHECK(out.result == json{{"output", "hello world\n"}});
  }
  SUBCASE("two documents") {
    auto out = run(shell_tool("echo '{}'; echo '{}'"));
    REQUIRE(out.ok);
    CHECK(out.result == json{{"output", "{}\n{}\n"}});
  }
  SUBCASE("nothing") {
    auto out = run(shell_tool("true"));
    REQUIRE(out.ok);
    CHECK(out.result == json{{"output", ""}});
  }
  SUBCASE("bytes that are not UTF-8 are replaced, so the result serializes") {
    auto out = run(shell_tool(R"(printf 'caf\351\n')"));
    REQUIRE(out.ok);
    CHECK(out.result["output"] == "caf\xEF\xBF\xBD\n");
    CHECK_NOTHROW(out.result.dump());
  }
}

TEST_CASE("cut-off stdout is text flagged as truncated, even when the cut part parses") {
  auto tool = shell_tool("echo 1234567890");
  tool.limits.max_output_bytes = 4;
  auto out = run(tool);
  REQUIRE(out.ok);
  CHECK(out.result == json{{"output", "1234"}, {"output_truncated", true}});
}

TEST_CASE("a tool that runs past the timeout fails retryably") {
  auto out = run(shell_tool("sleep 30"), json::object(), context(300));
  CHECK_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK(contains(out.error, "timed out after 300 ms"));
}

TEST_CASE("a tool aborted while it runs is killed at once and may have been applied") {
  const std::string token = "keel-tool-aborted-" + std::to_string(::getpid());
  auto abort = std::make_shared<keel::abort_signal>();
  auto ctx = context(60'000);
  ctx.abort = abort;
  keel::test::abort_while_running(
      "exec tool", *abort, [&] { return run(shell_tool("sleep 30; echo " + token), {}, ctx); },
      [&] {
        return keel::test::eventually([&] { return keel::test::processes_with(token) >= 1; });
      },
      "aborted");
  CHECK(keel::test::eventually([&] { return keel::test::processes_with(token) == 0; },
                               std::chrono::seconds(5)));
}

TEST_CASE("a tool aborted before it starts is not run and not applied") {
  auto abort = std::make_shared<keel::abort_signal>();
  abort->raise();
  auto ctx = context();
  ctx.abort = abort;
  auto out = run(shell_tool("echo ran"), {}, ctx);
  CHECK_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK_FALSE(out.maybe_applied);
  CHECK(contains(out.error, "aborted before it started"));
}

TEST_CASE("exit code 75 asks for a retry") {
  auto out = run(shell_tool("echo 'upstream busy' >&2; exit 75"));
  CHECK_FALSE(out.ok);
  CHECK(out.retryable);
  CHECK(contains(out.error, "EX_TEMPFAIL"));
  CHECK(contains(out.error, "upstream busy"));
}

TEST_CASE("other failures are permanent and say why") {
  SUBCASE("a non-zero exit code, with the end of stderr") {
    auto out = run(shell_tool("echo 'order not found' >&2; exit 2"));
    CHECK_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "exec tool lookup exited with code 2"));
    CHECK(contains(out.error, "order not found"));
  }
  SUBCASE("only the last 2 KiB of a long stderr") {
    auto out = run(shell_tool(
        "echo FIRST-LINE >&2; head -c 10000 /dev/zero | tr '\\0' x >&2; echo LAST-LINE >&2; "
        "exit 1"));
    CHECK_FALSE(out.ok);
    CHECK(contains(out.error, "LAST-LINE"));
    CHECK_FALSE(contains(out.error, "FIRST-LINE"));
    CHECK(out.error.size() < 2200);
  }
  SUBCASE("a signal") {
    auto out = run(shell_tool("kill -SEGV $$"));
    CHECK_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "killed by signal 11 (SIGSEGV)"));
  }
  SUBCASE("a missing program") {
    tool_spec t = shell_tool("");
    t.argv = {"/nonexistent/refund-tool"};
    auto out = run(t);
    CHECK_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "exited with code 127"));
    CHECK(contains(out.error, "cannot execute /nonexistent/refund-tool"));
  }
  SUBCASE("no argv") {
    tool_spec t = shell_tool("");
    t.argv.clear();
    auto out = run(t);
    CHECK_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "has no argv"));
  }
}

TEST_CASE("a failure says whether it proves the tool did nothing") {
  // The tool ran, and nothing says it did not act: maybe applied.
  CHECK(run(shell_tool("sleep 30"), json::object(), context(300)).maybe_applied);
  CHECK(run(shell_tool("exit 2")).maybe_applied);
  CHECK(run(shell_tool("kill -KILL $$")).maybe_applied);
  // Proven not applied: the tool's own word, or it never ran.
  CHECK_FALSE(run(shell_tool("exit 75")).maybe_applied);
  tool_spec declared = shell_tool("exit 64");
  declared.not_applied.exit_codes = {64};
  auto d = run(declared);
  CHECK_FALSE(d.maybe_applied);
  CHECK_FALSE(d.retryable);
  CHECK(contains(d.error, "declares as not applied"));
  tool_spec missing = shell_tool("");
  missing.argv = {"/nonexistent/refund-tool"};
  CHECK_FALSE(run(missing).maybe_applied);
}

TEST_CASE("the tool's limits apply to its process") {
  auto tool = shell_tool("ulimit -n");
  tool.limits.max_open_files = 21;
  auto out = run(tool);
  REQUIRE(out.ok);
  CHECK(out.result == json(21));
}
