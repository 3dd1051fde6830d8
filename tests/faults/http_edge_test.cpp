// The HTTP edge under hostile or careless clients: no request smuggling,
// no silently reinterpreted bodies, a bound on connections and on how long
// one may idle before saying anything, and no body read for a client that
// has no token.

#include <doctest/doctest.h>

#include <fstream>
#include <vector>

#include "faults/fault_support.hpp"
#include "support/raw_http.hpp"

using namespace keel::test;

namespace {

std::string post(const std::string& target, const std::string& body,
                 const std::string& extra_headers = "") {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The status code of each response in `raw`, in order.
std::vector<int> statuses(const std::string& raw) {
  std::vector<int> out;
  for (std::size_t at = raw.find("HTTP/1.1 "); at != std::string::npos;
       at = raw.find("HTTP/1.1 ", at + 1))
    out.push_back(std::stoi(raw.substr(at + 9, 3)));
  return out;
}

}  // namespace

TEST_CASE("a body framed any way but chunked or by length is refused, never read as a request") {
  temp_dir dir("keel-http");
  fault_node n(dir.path() / "data");
  REQUIRE_MESSAGE(n.start(), n.process().output());
  REQUIRE(n.spawn("edge/a").status == 201);
  const std::string smuggled = post("/v1/agents/edge%2Fa/messages", R"({"body": {"add": 1000}})");

  SUBCASE("Transfer-Encoding other than chunked") {
    raw_connection c;
    REQUIRE(c.connect(n.process().port()));
    REQUIRE(
        c.send("POST /v1/agents/edge%2Fa/messages HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: gzip\r\n\r\n" +
               smuggled));
    bool closed = false;
    const std::string raw = c.read_all(std::chrono::seconds(10), &closed);
    CHECK(statuses(raw) == std::vector<int>{400});
    CHECK_MESSAGE(raw.find("Transfer-Encoding") != std::string::npos, raw);
    CHECK(closed);
  }
  SUBCASE("Transfer-Encoding beside a Content-Length") {
    raw_connection c;
    REQUIRE(c.connect(n.process().port()));
    const std::string body = "0\r\n\r\n" + smuggled;
    REQUIRE(
        c.send("POST /v1/agents/edge%2Fa/messages HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: " +
               std::to_string(body.size()) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + body));
    bool closed = false;
    const std::string raw = c.read_all(std::chrono::seconds(10), &closed);
    CHECK(statuses(raw) == std::vector<int>{400});
    CHECK(closed);
  }
  // Neither smuggled message ever reached the agent.
  CHECK(n.total("edge/a") == 0);
  CHECK(n.ledger("edge/a").size() == 1);  // spawned, nothing else
}

TEST_CASE("bodies and ids that would be read some other way than meant are refused") {
  temp_dir dir("keel-http");
  fault_node n(dir.path() / "data");
  REQUIRE_MESSAGE(n.start(), n.process().output());
  REQUIRE(n.spawn("edge/b").status == 201);
  const std::string messages = fault_node::path("edge/b") + "/messages";

  auto dup = n.call("POST", messages, R"({"body": {"add": 1}, "body": {"add": 1000}})");
  CHECK(dup.status == 400);
  CHECK_MESSAGE(dup.raw.find("appears twice") != std::string::npos, dup.raw);
  auto nested = n.call("POST", messages, R"({"body": {"add": 1, "add": 1000}})");
  CHECK(nested.status == 400);
  auto empty_id = n.call("POST", messages, R"({"id": "", "body": {"add": 1}})");
  CHECK(empty_id.status == 400);
  CHECK_MESSAGE(empty_id.raw.find("empty") != std::string::npos, empty_id.raw);
  auto nul_id = n.call("POST", messages, R"({"id": "a\u0000b", "body": {"add": 1}})");
  CHECK(nul_id.status == 400);
  CHECK_MESSAGE(nul_id.raw.find("control character") != std::string::npos, nul_id.raw);
  auto nul_signal = n.call("POST", fault_node::path("edge/b") + "/signals/re%00set", "{}");
  CHECK(nul_signal.status == 400);
  auto spaced_signal = n.call("POST", fault_node::path("edge/b") + "/signals/re%20set", "{}");
  CHECK(spaced_signal.status == 400);
  // A body that means one thing still works, and the refused ones did nothing.
  CHECK(n.call("POST", messages, R"({"id": "ok-1", "body": {"add": 2}})").status == 202);
  CHECK(n.total("edge/b") == 2);
  // Keys may repeat in different objects.
  CHECK(n.call("POST", messages, R"({"id": "ok-2", "body": {"add": 3}, "from": "x"})").status ==
        202);
  CHECK(n.total("edge/b") == 5);
}

TEST_CASE("past the connection limit new connections get 503 at once, and idle ones time out") {
  temp_dir dir("keel-http");
  write_config(dir.path() / "keeld.json",
               {{"max_connections", 8}, {"http_header_timeout_ms", 1000}});
  fault_node n(dir.path() / "data", {"--config", (dir.path() / "keeld.json").string()});
  REQUIRE_MESSAGE(n.start(), n.process().output());
  REQUIRE(n.spawn("edge/c").status == 201);  // and the helper's connection closes below

  std::vector<raw_connection> idle(8);
  for (auto& c : idle) REQUIRE(c.connect(n.process().port()));
  // Wait until the server holds all eight (the helper's own went idle too).
  REQUIRE(eventually([&] {
    raw_connection probe;
    if (!probe.connect(n.process().port())) return false;
    const std::string raw = probe.read_all(std::chrono::milliseconds(500));
    return raw.find("503") != std::string::npos;
  }));
  raw_connection over;
  REQUIRE(over.connect(n.process().port()));
  bool closed = false;
  // Answered before it said anything.
  const std::string raw = over.read_all(std::chrono::seconds(5), &closed);
  CHECK(statuses(raw) == std::vector<int>{503});
  CHECK(closed);

  // Connections that never send a request are closed after the header
  // timeout, which frees the slots.
  for (auto& c : idle) {
    bool gone = false;
    c.read_all(std::chrono::seconds(10), &gone);
    CHECK(gone);
  }
  CHECK(n.send("edge/c", {{"id", "after"}, {"body", {{"add", 4}}}}).status == 202);
  CHECK(n.total("edge/c") == 4);
  CHECK(n.metric("keel_http_connections_refused_total").value_or(0) >= 1);
}

TEST_CASE("without the token, a request is refused on its headers, before its body is read") {
  temp_dir dir("keel-http");
  fault_node n(dir.path() / "data", {"--token", "s3cret"});
  REQUIRE_MESSAGE(n.start(), n.process().output());
  n.no_replay_check();  // the helper carries no token
  raw_connection c;
  REQUIRE(c.connect(n.process().port()));
  // Announces a megabyte and sends none of it: the answer comes anyway.
  REQUIRE(c.send("POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"));
  const std::string raw = c.read_all(std::chrono::seconds(5));
  CHECK(statuses(raw) == std::vector<int>{401});
}
