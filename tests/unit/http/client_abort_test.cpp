// Aborting the HTTP client's calls (http_client::set_abort and the pool's
// `abort`) against a hand-written server that takes a request and never
// answers: the call returns at once, its connection is closed and never
// used again.

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "base/abort_signal.hpp"
#include "http/client.hpp"
#include "support/raw_http.hpp"
#include "support/refused_port.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;

namespace {

using response_result = result<net::http_client::response>;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

net::server_address loopback(uint16_t port) {
  return {"http", "127.0.0.1", port};
}

// The peer closed the connection: a read sees the end within `timeout`.
bool closed_by_client(test::raw_connection& c, std::chrono::milliseconds timeout = 5s) {
  bool closed = false;
  c.read_all(timeout, &closed);
  return closed;
}

// Raises `signal` while `done`'s call waits on `conn`, and checks the call
// returns at once (it would have waited a minute), failed as aborted, and
// closed its connection. Returns its result for further checks.
response_result check_aborted(const char* what, abort_signal& signal,
                              test::future_value<response_result>& done,
                              test::raw_connection& conn) {
  auto raised_at = std::chrono::steady_clock::now();
  signal.raise();
  auto r = done.wait(10s);
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - raised_at);
  REQUIRE_MESSAGE(r.has_value(), what << " did not return within 10 s of the raise");
  MESSAGE("aborted " << what << " returned " << took.count() << " us after the raise");
  CHECK(took < 2s);
  REQUIRE_FALSE(r->is_ok());
  CHECK(contains(r->error().message(), "was aborted"));
  CHECK(closed_by_client(conn));
  return std::move(*r);
}

}  // namespace

TEST_CASE("an aborted request returns at once and closes its connection") {
  test::raw_listener server;
  abort_signal abort;
  test::future_value<response_result> done;
  std::jthread caller([&] {
    net::http_client c;
    c.set_timeout(60s);
    c.set_abort(&abort);
    auto s = c.connect("127.0.0.1", server.port());
    done.set(s ? c.request("POST", "/slow", R"({"n": 1})") : response_result(s));
  });
  test::raw_connection conn = server.accept();
  REQUIRE(conn.fd() >= 0);
  REQUIRE_FALSE(conn.read_until("\r\n\r\n", 10s).empty());  // the request is in

  auto r = check_aborted("request", abort, done, conn);
  CHECK(r.error().error_code() == code::unavailable);
  CHECK(contains(r.error().message(), "POST /slow on 127.0.0.1:"));
  CHECK_FALSE(contains(r.error().message(), "before it was sent"));
}

TEST_CASE("a client whose signal was raised sends nothing") {
  test::raw_listener server;
  abort_signal abort;
  net::http_client c;
  REQUIRE(c.connect("127.0.0.1", server.port()).is_ok());
  test::raw_connection conn = server.accept();
  REQUIRE(conn.fd() >= 0);
  c.set_abort(&abort);
  abort.raise();
  auto r = c.request("GET", "/x");
  REQUIRE_FALSE(r.is_ok());
  CHECK(contains(r.error().message(), "was aborted before it was sent"));
  CHECK(conn.read_all(200ms).empty());

  SUBCASE("nor connects") {
    test::refused_port nowhere;  // a connect that got through would be refused instead
    net::http_client other;
    other.set_abort(&abort);
    auto s = other.connect("127.0.0.1", nowhere.port());
    REQUIRE_FALSE(s.is_ok());
    CHECK(contains(s.message(), "connecting to 127.0.0.1:"));
    CHECK(contains(s.message(), "was aborted"));
    CHECK_FALSE(other.connection_refused());
  }
}

TEST_CASE("the pool drops an aborted call's connection and the next call opens a new one") {
  test::raw_listener server;
  net::http_client_pool pool;
  abort_signal abort;
  test::future_value<response_result> first;
  std::jthread caller([&] {
    first.set(
        pool.request(loopback(server.port()), "POST", "/tools/t", "{}", {}, 60s, nullptr, &abort));
  });
  test::raw_connection held = server.accept();
  REQUIRE(held.fd() >= 0);
  REQUIRE_FALSE(held.read_until("\r\n\r\n", 10s).empty());

  (void)check_aborted("pool request", abort, first, held);

  // The next call of the pool cannot go out on the aborted connection: it
  // comes on a new one, and is answered there.
  test::future_value<response_result> second;
  std::jthread next([&] {
    second.set(pool.request(loopback(server.port()), "POST", "/tools/t", "{}", {}, 10s));
  });
  test::raw_connection fresh = server.accept();
  REQUIRE(fresh.fd() >= 0);
  REQUIRE_FALSE(fresh.read_until("\r\n\r\n", 10s).empty());
  REQUIRE(fresh.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
  auto answer = second.wait(10s);
  REQUIRE(answer.has_value());
  REQUIRE_MESSAGE(answer->is_ok(), answer->error().to_string());
  CHECK((*answer)->body == "ok");
}

TEST_CASE("an aborted stream returns at once and closes its connection") {
  test::raw_listener server;
  abort_signal abort;
  test::future_value<response_result> done;
  std::jthread caller([&] {
    net::http_client c;
    c.set_abort(&abort);
    auto s = c.connect("127.0.0.1", server.port());
    done.set(s ? c.stream(
                     "GET", "/events", [](std::string_view) { return true; }, 60s)
               : response_result(s));
  });
  test::raw_connection conn = server.accept();
  REQUIRE(conn.fd() >= 0);
  REQUIRE_FALSE(conn.read_until("\r\n\r\n", 10s).empty());
  // Headers and a first event, then silence: the client waits in the body.
  REQUIRE(conn.send(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "b\r\ndata: one\n\n\r\n"));

  (void)check_aborted("stream", abort, done, conn);
}
