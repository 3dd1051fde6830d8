// At most once, really: a call of a non-idempotent tool that fails in any
// way that does not prove nothing was applied ends in doubt and waits for a
// human; it is never run again on its own. Only failures that prove
// nothing happened are retried. Every case counts the real executions.

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "support/fake_tool_server.hpp"
#include "support/loop_node.hpp"

using namespace keel;
using namespace keel::test::loop;
namespace fs = std::filesystem;

namespace {

// A type whose model calls `tool` once with {"amount": 5}, then answers
// "done".
json one_amount_call(loop_node& n, const std::string& type, const json& tool) {
  return one_call_type(n, type, tool, {{"amount", 5}});
}

json with_retry(json tool, int attempts, int timeout_ms = 20'000) {
  tool["retry"] = {{"attempts", attempts}, {"backoff_ms", 20}, {"timeout_ms", timeout_ms}};
  return tool;
}

// `writable`, if given, is granted to the tool (which sees only the
// system's files and a private /tmp otherwise).
json exec_tool(const std::string& name, const std::string& script, bool idempotent,
               const fs::path& writable = {}) {
  json tool = {{"name", name},
               {"parameters", {{"type", "object"}}},
               {"kind", "exec"},
               {"argv", {"/bin/sh", "-c", "cat >/dev/null; " + script}},
               {"idempotent", idempotent}};
  if (!writable.empty()) tool["paths"] = {{"write", {writable.string()}}};
  return tool;
}

// A directory the tools of a test may write to, also as the unprivileged
// uid they run as under root.
fs::path marks_dir(const fs::path& under) {
  fs::create_directories(under / "marks");
  fs::permissions(under / "marks", fs::perms::all);
  return under / "marks";
}

int lines_in(const fs::path& p) {
  std::ifstream in(p);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// Takes a request on 127.0.0.1 and closes the connection without an answer:
// the request arrived, and the caller cannot know what came of it.
class black_hole {
 public:
  black_hole() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    REQUIRE(::listen(fd_, 16) == 0);
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // closed by the destructor
        char buf[4096];
        std::string got;
        while (got.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = ::recv(c, buf, sizeof buf, 0);
          if (n <= 0) break;
          got.append(buf, static_cast<std::size_t>(n));
        }
        ++requests_;
        ::close(c);
      }
    });
  }
  ~black_hole() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/pay"; }
  int requests() const { return requests_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

// Waits for the turn to settle in `phase`.
json settle(loop_node& n, const std::string& agent, const std::string& phase) {
  return n.wait_phase(agent, phase);
}

}  // namespace

TEST_CASE("an http call that may have been applied ends in doubt and runs once, then resolves") {
  test::fake_tool_server tools;
  loop_node n;
  // Each case is one tool of one type; all non-idempotent, 3 attempts.
  test::tool_behaviour slow;  // takes the call, answers after the timeout
  slow.hold = true;
  slow.hold_timeout = std::chrono::milliseconds(5000);
  tools.set_behaviour("slow", slow);
  test::tool_behaviour broke;  // does the work, then answers 500
  broke.fail_first = 1;
  broke.fail_applied = true;
  tools.set_behaviour("broke", broke);
  black_hole hole;
  json cut = with_retry({{"name", "cut"},
                         {"parameters", {{"type", "object"}}},
                         {"kind", "http"},
                         {"url", hole.url()},
                         {"idempotent", false}},
                        3);
  n.write_spec(one_amount_call(n, "p-slow", with_retry(http_tool(tools, "slow", false), 3, 300)));
  n.write_spec(one_amount_call(n, "p-broke", with_retry(http_tool(tools, "broke", false), 3)));
  n.write_spec(one_amount_call(n, "p-cut", cut));
  n.start();

  SUBCASE("a timeout after the request was taken") {
    n.spawn("pay/slow", "p-slow");
    n.send("pay/slow", "pay");
    settle(n, "pay/slow", "in_doubt");
    CHECK(tools.calls("slow") == 1);
    auto doubt = of_type(n.ledger("pay/slow"), "effect_in_doubt");
    REQUIRE(doubt.size() == 1);
    CHECK_MESSAGE(doubt[0]["error"].get<std::string>().find("timed out") != std::string::npos,
                  doubt[0].dump());
    // The human looked it up: it went through.
    n.signal("pay/slow", "resolve", {{"outcome", "succeeded"}, {"result", {{"paid", 5}}}});
    n.wait_turns("pay/slow");
    CHECK(tools.calls("slow") == 1);
  }
  SUBCASE("a 5xx from a server that did the work") {
    n.spawn("pay/broke", "p-broke");
    n.send("pay/broke", "pay");
    settle(n, "pay/broke", "in_doubt");
    CHECK(tools.calls("broke") == 1);
    CHECK(tools.applied("broke") == 1);
    // "retry" is the human's word: now it runs again, once.
    n.signal("pay/broke", "resolve", {{"outcome", "retry"}});
    n.wait_turns("pay/broke");
    CHECK(tools.calls("broke") == 2);
  }
  SUBCASE("a connection cut after the request was sent") {
    n.spawn("pay/cut", "p-cut");
    n.send("pay/cut", "pay");
    settle(n, "pay/cut", "in_doubt");
    CHECK(hole.requests() == 1);
    n.signal("pay/cut", "resolve", {{"outcome", "failed"}});
    auto v = n.wait_turns("pay/cut");
    CHECK(v["state"]["last"]["status"] == "failed");
    CHECK(hole.requests() == 1);
  }
}

TEST_CASE("http failures that prove nothing was applied are retried, or fail plainly") {
  test::fake_tool_server tools;
  loop_node n;
  test::tool_behaviour busy;  // 503 with Retry-After twice, then applies
  busy.fail_first = 2;
  busy.fail_status = 503;
  busy.retry_after = "1";
  tools.set_behaviour("busy", busy);
  test::tool_behaviour limited;  // 429 once
  limited.fail_first = 1;
  limited.fail_status = 429;
  tools.set_behaviour("limited", limited);
  test::tool_behaviour refuses;  // a 409 the tool declares as "not applied"
  refuses.status = 409;
  tools.set_behaviour("refuses", refuses);
  json declared = with_retry(http_tool(tools, "refuses", false), 3);
  declared["not_applied"] = {{"http_statuses", {409}}};
  json nobody = with_retry({{"name", "nobody"},
                            {"parameters", {{"type", "object"}}},
                            {"kind", "http"},
                            {"url", "http://127.0.0.1:1/closed"},  // nothing listens
                            {"idempotent", false}},
                           3);
  n.write_spec(one_amount_call(n, "q-busy", with_retry(http_tool(tools, "busy", false), 3)));
  n.write_spec(one_amount_call(n, "q-limited", with_retry(http_tool(tools, "limited", false), 3)));
  n.write_spec(one_amount_call(n, "q-refuses", declared));
  n.write_spec(one_amount_call(n, "q-nobody", nobody));
  n.start();

  SUBCASE("503 with Retry-After and 429: retried, applied once") {
    n.spawn("q/busy", "q-busy");
    n.spawn("q/limited", "q-limited");
    n.send("q/busy", "pay");
    n.send("q/limited", "pay");
    CHECK(n.wait_turns("q/busy")["state"]["last"]["status"] == "completed");
    CHECK(n.wait_turns("q/limited")["state"]["last"]["status"] == "completed");
    CHECK(tools.calls("busy") == 3);
    CHECK(tools.applied("busy") == 1);
    CHECK(tools.applied("limited") == 1);
  }
  SUBCASE("a declared 'not applied' status fails the call without doubt") {
    n.spawn("q/refuses", "q-refuses");
    n.send("q/refuses", "pay");
    CHECK(n.wait_turns("q/refuses")["state"]["last"]["status"] == "failed");
    CHECK(tools.calls("refuses") == 1);
    CHECK(of_type(n.ledger("q/refuses"), "effect_in_doubt").empty());
  }
  SUBCASE("no connection at all: retried, then failed, never in doubt") {
    n.spawn("q/nobody", "q-nobody");
    n.send("q/nobody", "pay");
    CHECK(n.wait_turns("q/nobody")["state"]["last"]["status"] == "failed");
    CHECK(of_type(n.ledger("q/nobody"), "effect_failed").size() == 3);
    CHECK(of_type(n.ledger("q/nobody"), "effect_in_doubt").empty());
  }
}

TEST_CASE("an exec call killed, timed out or failing on its own ends in doubt and ran once") {
  loop_node n;
  const fs::path marks = marks_dir(n.dir());
  const fs::path runs = marks / "runs";
  auto counted = [&](const std::string& rest) {
    return "echo run >> " + runs.string() + "; " + rest;
  };
  n.write_spec(one_amount_call(
      n, "e-timeout", with_retry(exec_tool("t", counted("sleep 30"), false, marks), 3, 300)));
  n.write_spec(
      one_amount_call(n, "e-exit", with_retry(exec_tool("x", counted("exit 1"), false, marks), 3)));
  n.write_spec(one_amount_call(n, "e-killed",
                               with_retry(exec_tool("k", counted("kill -9 $$"), false, marks), 3)));
  json declared = with_retry(exec_tool("d", counted("exit 3"), false, marks), 3);
  declared["not_applied"] = {{"exit_codes", {3}}};
  n.write_spec(one_amount_call(n, "e-declared", declared));
  n.write_spec(one_amount_call(n, "e-tempfail",
                               with_retry(exec_tool("f",
                                                    counted("[ $(wc -l < " + runs.string() +
                                                            ") -ge 2 ] || exit 75; "
                                                            "echo '{}'"),
                                                    false, marks),
                                          3)));
  n.start();

  for (const char* type : {"e-timeout", "e-exit", "e-killed"}) {
    CAPTURE(type);
    fs::remove(runs);
    const std::string agent = std::string("exec/") + type;
    n.spawn(agent, type);
    n.send(agent, "go");
    settle(n, agent, "in_doubt");
    CHECK(lines_in(runs) == 1);
    n.signal(agent, "resolve", {{"outcome", "failed"}});
    n.wait_turns(agent);
    CHECK(lines_in(runs) == 1);
  }
  // Declared as "not applied": failed plainly, once.
  fs::remove(runs);
  n.spawn("exec/declared", "e-declared");
  n.send("exec/declared", "go");
  CHECK(n.wait_turns("exec/declared")["state"]["last"]["status"] == "failed");
  CHECK(lines_in(runs) == 1);
  CHECK(of_type(n.ledger("exec/declared"), "effect_in_doubt").empty());
  // Exit 75 says "nothing done, try later": retried until it works.
  fs::remove(runs);
  n.spawn("exec/tempfail", "e-tempfail");
  n.send("exec/tempfail", "go");
  CHECK(n.wait_turns("exec/tempfail")["state"]["last"]["status"] == "completed");
  CHECK(lines_in(runs) == 2);
}

TEST_CASE(
    "a non-idempotent worker task whose worker vanishes ends in doubt, not with another worker") {
  loop_node n;
  n.write_spec({{"name", "payer"},
                {"model", scripted_model(n.write_script(
                              "payer", {calls_reply({tool_call("pay", {{"amount", 5}})}),
                                        text_reply("paid")}))},
                {"tools",
                 {{{"name", "pay"},
                   {"parameters", {{"type", "object"}}},
                   {"kind", "worker"},
                   {"queue", "payments"},
                   {"lease_ms", 300}}}}});
  n.start();
  n.spawn("pay/w", "payer");
  n.send("pay/w", "pay");
  n.wait_phase("pay/w", "waiting_worker");
  auto polled = n.post("/v1/tasks/poll", {{"queue", "payments"}, {"worker", "w1"}});
  REQUIRE_MESSAGE(polled.status == 200, polled.raw);
  REQUIRE(polled.body["task"].is_object());
  // w1 never reports. Its lease runs out: the call is in doubt.
  settle(n, "pay/w", "in_doubt");
  auto again = n.post("/v1/tasks/poll", {{"queue", "payments"}, {"worker", "w2"}});
  CHECK(again.body["task"].is_null());
  auto doubt = of_type(n.ledger("pay/w"), "effect_in_doubt");
  REQUIRE(doubt.size() == 1);
  CHECK_MESSAGE(doubt[0]["error"].get<std::string>().find("w1") != std::string::npos,
                doubt[0].dump());
}
