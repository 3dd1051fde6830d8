// Streamed answers: http/server.hpp's stream_sink end to end with
// http_client::stream and http/sse.hpp's parser; what a client that leaves
// and a server that stops do to the producer; the raw wire format (chunked,
// HTTP/1.0 close-delimited); and the SSE parser on its own.

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/node_config.hpp"
#include "http/client.hpp"
#include "http/server.hpp"
#include "http/sse.hpp"
#include "support/raw_http.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

net::server_options options(std::chrono::milliseconds idle_timeout = 60s) {
  net::server_options o;
  o.threads = 2;
  // Long on purpose: a stream must not make stop() wait for it.
  o.stop_grace = 10s;
  o.idle_timeout = idle_timeout;
  return o;
}

// A server on 127.0.0.1 answering GET /plain with "plain", GET /events with
// a text/event-stream whose sink it hands to the test (next_sink()), and
// everything else with 404.
class stream_server {
 public:
  explicit stream_server(net::server_options opts = options()) {
    config::node_config cfg;
    cfg.http_host = "127.0.0.1";
    cfg.http_port = 0;
    auto s = net::http_server::open(cfg, std::move(opts));
    REQUIRE_MESSAGE(s, s.error().to_string());
    server = std::move(*s);
    server->start([this](net::http_request req, net::respond_fn respond) {
      if (req.target == "/plain") return respond({200, "text/plain", "plain", {}});
      if (req.target != "/events")
        return respond({404, "application/json", net::error_json("not_found", "no such path"), {}});
      net::http_response r;
      r.content_type = "text/event-stream";
      r.headers.emplace_back("X-Stream", "yes");
      r.on_stream = [this](std::shared_ptr<net::stream_sink> sink) {
        std::lock_guard lock(mu_);
        sinks_.push_back(std::move(sink));
        cv_.notify_all();
      };
      respond(std::move(r));
    });
  }

  uint16_t port() const { return server->port(); }

  // The sink of the next stream opened; fails the test after 10 s.
  std::shared_ptr<net::stream_sink> next_sink() {
    std::unique_lock lock(mu_);
    bool got = cv_.wait_for(lock, 10s, [&] { return !sinks_.empty(); });
    REQUIRE_MESSAGE(got, "no stream was opened");
    auto s = std::move(sinks_.front());
    sinks_.pop_front();
    return s;
  }

  std::unique_ptr<net::http_server> server;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<net::stream_sink>> sinks_;
};

// What a client thread parsed, for the test thread to wait on.
class event_log {
 public:
  void add(const net::sse_event& e) {
    std::lock_guard lock(mu_);
    events_.push_back(e);
    cv_.notify_all();
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
  }
  std::vector<net::sse_event> events() {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<net::sse_event> events_;
};

using stream_result = result<net::http_client::response>;

// Reads GET /events into `log` on its own connection; `keep_going` decides
// after each event whether to read on.
stream_result read_events(uint16_t port, event_log& log, std::chrono::milliseconds idle_timeout,
                          std::function<bool(const net::sse_event&)> keep_going = {}) {
  net::http_client client;
  if (auto s = client.connect("127.0.0.1", port); !s) return s;
  net::sse_parser parser;
  return client.stream(
      "GET", "/events",
      [&](std::string_view bytes) {
        bool more = true;
        parser.feed(bytes, [&](const net::sse_event& e) {
          log.add(e);
          if (keep_going && !keep_going(e)) more = false;
        });
        return more;
      },
      idle_timeout);
}

net::sse_event event(std::string id, std::string type, std::string data) {
  net::sse_event e;
  e.id = std::move(id);
  e.event = std::move(type);
  e.data = std::move(data);
  return e;
}

// Writes `data` and waits for its report; nullopt when none came in 10 s.
std::optional<bool> write_and_wait(net::stream_sink& sink, std::string data) {
  auto ok = std::make_shared<test::future_value<bool>>();
  sink.write(std::move(data), [ok](bool b) { ok->set(b); });
  return ok->wait();
}

// A plain TCP connection to 127.0.0.1, to see the bytes on the wire.
class raw_connection {
 public:
  explicit raw_connection(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~raw_connection() { ::close(fd_); }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  void send(std::string_view s) {
    while (!s.empty()) {
      auto n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      REQUIRE(n > 0);
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  // Reads until `done(all read so far)` holds, the peer closes or 10 s pass;
  // returns whether the peer closed.
  template <class Done>
  bool read_until(Done&& done) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done(received)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buf[4096];
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
      received.append(buf, static_cast<std::size_t>(n));
    }
    return false;
  }
  bool read_to_end() {
    return read_until([](const std::string&) { return false; });
  }

  std::string received;

 private:
  int fd_ = -1;
};

}  // namespace

TEST_CASE("a streamed response reaches the client event by event, in order") {
  std::jthread client;
  stream_server srv;
  event_log log;
  test::future_value<stream_result> result;
  client = std::jthread([&] { result.set(read_events(srv.port(), log, 10s)); });
  auto sink = srv.next_sink();

  SUBCASE("each event arrives before the next is written") {
    // The producer waits for the client to have parsed each event: nothing
    // is held back until the body ends.
    std::jthread producer([&] {
      for (int i = 0; i < 5; ++i) {
        sink->write(net::format_sse(event(std::to_string(i), "tick", "n " + std::to_string(i))));
        if (!log.wait_for(static_cast<std::size_t>(i) + 1)) return;
      }
      sink->close();
    });
    auto r = result.wait();
    REQUIRE(r.has_value());
    REQUIRE_MESSAGE(*r, r->error().to_string());
    CHECK((*r)->status == 200);
    CHECK((*r)->content_type == "text/event-stream");
    CHECK((*r)->body.empty());
    auto events = log.events();
    REQUIRE(events.size() == 5);
    for (int i = 0; i < 5; ++i) {
      CHECK(events[i].id == std::to_string(i));
      CHECK(events[i].event == "tick");
      CHECK(events[i].data == "n " + std::to_string(i));
    }
  }

  SUBCASE("many writes from a producer thread keep their order and report in order") {
    constexpr int n = 500;
    std::mutex mu;
    std::vector<int> reported;
    std::atomic<int> failed{0};
    std::jthread producer([&] {
      for (int i = 0; i < n; ++i) {
        sink->write(net::format_sse(event(std::to_string(i), "message",
                                          "line one of " + std::to_string(i) + "\nline two")),
                    [&, i](bool ok) {
                      if (!ok) ++failed;
                      std::lock_guard lock(mu);
                      reported.push_back(i);
                    });
      }
      sink->close();
    });
    auto r = result.wait();
    REQUIRE(r.has_value());
    REQUIRE_MESSAGE(*r, r->error().to_string());
    CHECK((*r)->status == 200);
    auto events = log.events();
    REQUIRE(events.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      REQUIRE(events[i].id == std::to_string(i));
      REQUIRE(events[i].data == "line one of " + std::to_string(i) + "\nline two");
    }
    producer.join();
    // Every write reports once it completed on the server, which may be
    // after the client has read it all: bounded wait for the last report.
    CHECK(test::eventually(
        [&] {
          std::lock_guard lock(mu);
          return reported.size() == static_cast<std::size_t>(n);
        },
        10s));
    std::lock_guard lock(mu);
    CHECK(failed.load() == 0);
    REQUIRE(reported.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) CHECK(reported[i] == i);
  }

  // Once closed, the sink takes nothing more.
  CHECK(sink->closed());
  CHECK(write_and_wait(*sink, "late") == false);
}

TEST_CASE("a client that stops reading makes the stream report closed and writes fail") {
  std::jthread client;
  stream_server srv;
  event_log log;
  test::future_value<stream_result> result;
  client = std::jthread([&] {
    result.set(read_events(srv.port(), log, 10s, [](const net::sse_event&) { return false; }));
  });
  auto sink = srv.next_sink();
  CHECK(write_and_wait(*sink, net::format_sse(event("1", "message", "first"))) == true);
  auto r = result.wait();
  REQUIRE(r.has_value());
  REQUIRE_MESSAGE(*r, r->error().to_string());
  CHECK((*r)->status == 200);
  CHECK(log.events().size() == 1);

  // Noticed without a write: the server watches the client's end.
  CHECK(test::eventually([&] { return sink->closed(); }));
  CHECK(write_and_wait(*sink, ": heartbeat\n") == false);
  // The connection is gone from the server too: stop() has nothing to wait for.
  auto start = std::chrono::steady_clock::now();
  srv.server->stop();
  CHECK(std::chrono::steady_clock::now() - start < 2s);
}

TEST_CASE("stop() ends an open stream at once and the client's stream call returns") {
  std::jthread client;
  stream_server srv;  // stop_grace 10 s
  event_log log;
  test::future_value<stream_result> result;
  client = std::jthread([&] { result.set(read_events(srv.port(), log, 30s)); });
  auto sink = srv.next_sink();
  std::atomic<int> reported_ok{0};
  sink->write(net::format_sse(event("1", "message", "before stop")),
              [&](bool ok) { reported_ok += ok ? 1 : 0; });
  REQUIRE(log.wait_for(1));

  auto start = std::chrono::steady_clock::now();
  srv.server->stop();
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(sink->closed());
  CHECK(reported_ok.load() == 1);
  // Refused on the calling thread: the server's threads are gone.
  bool refused = false;
  sink->write("after stop", [&](bool ok) { refused = !ok; });
  CHECK(refused);
  sink->close();  // harmless

  // The stream was between writes, so its body got a proper end.
  auto r = result.wait(5s);
  REQUIRE(r.has_value());
  REQUIRE_MESSAGE(*r, r->error().to_string());
  CHECK((*r)->status == 200);
  CHECK(log.events().size() == 1);

  // A sink may outlive the server.
  srv.server.reset();
  CHECK(sink->closed());
  CHECK(write_and_wait(*sink, "after the server is gone") == false);
}

TEST_CASE("ordinary requests work beside an open stream, whose idle time is not limited") {
  std::jthread client;
  // Idle keep-alive connections are closed after 200 ms.
  stream_server srv(options(200ms));
  event_log log;
  test::future_value<stream_result> result;
  client = std::jthread([&] { result.set(read_events(srv.port(), log, 30s)); });
  auto sink = srv.next_sink();

  net::http_client plain;
  REQUIRE(plain.connect("127.0.0.1", srv.port()));
  auto res = plain.request("GET", "/plain");
  REQUIRE_MESSAGE(res, res.error().to_string());
  CHECK(res->status == 200);
  CHECK(res->body == "plain");

  // A connection opened after the stream and left idle is closed by the
  // idle timeout; the stream, quiet for longer, lives on.
  raw_connection idle(srv.port());
  idle.send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(idle.read_to_end());
  CHECK(contains(idle.received, "plain"));
  CHECK_FALSE(sink->closed());
  CHECK(write_and_wait(*sink, net::format_sse(event("", "message", "still here"))) == true);
  REQUIRE(log.wait_for(1));
  CHECK(log.events()[0].data == "still here");

  sink->close();
  auto r = result.wait();
  REQUIRE(r.has_value());
  CHECK(r->is_ok());
}

TEST_CASE("a streamed response is chunked with no-cache and no length, and ends the connection") {
  stream_server srv;

  SUBCASE("HTTP/1.1: chunked") {
    raw_connection c(srv.port());
    c.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
    auto sink = srv.next_sink();
    sink->write("data: a\n\n");
    sink->write("");  // sends nothing: an empty chunk would end the body
    sink->write("data: bc\n\n");
    sink->close();
    CHECK(c.read_to_end());
    const auto& got = c.received;
    CHECK(got.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(contains(got, "Content-Type: text/event-stream\r\n"));
    CHECK(contains(got, "Cache-Control: no-cache\r\n"));
    CHECK(contains(got, "Transfer-Encoding: chunked\r\n"));
    CHECK(contains(got, "Connection: close\r\n"));
    CHECK(contains(got, "X-Stream: yes\r\n"));
    CHECK_FALSE(contains(got, "Content-Length"));
    auto body = got.substr(got.find("\r\n\r\n") + 4);
    // The writes may go out as one chunk or two.
    CHECK((body == "9\r\ndata: a\n\n\r\na\r\ndata: bc\n\n\r\n0\r\n\r\n" ||
           body == "13\r\ndata: a\n\ndata: bc\n\n\r\n0\r\n\r\n"));
  }

  SUBCASE("HTTP/1.0: the body ends with the connection") {
    raw_connection c(srv.port());
    c.send("GET /events HTTP/1.0\r\n\r\n");
    auto sink = srv.next_sink();
    sink->write("data: a\n\n");
    sink->close();
    CHECK(c.read_to_end());
    CHECK(c.received.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
    CHECK_FALSE(contains(c.received, "chunked"));
    CHECK(c.received.substr(c.received.find("\r\n\r\n") + 4) == "data: a\n\n");
  }
}

TEST_CASE("a stream that goes quiet for longer than the client's idle timeout is a timeout") {
  std::jthread client;
  stream_server srv;
  event_log log;
  test::future_value<stream_result> result;
  client = std::jthread([&] { result.set(read_events(srv.port(), log, 200ms)); });
  auto sink = srv.next_sink();
  auto r = result.wait();
  REQUIRE(r.has_value());
  REQUIRE_FALSE(r->is_ok());
  CHECK(r->error().error_code() == code::timeout);
  CHECK(contains(r->error().message(), "nothing arrived for 200 ms"));
  // The client dropped the connection.
  CHECK(test::eventually([&] { return sink->closed(); }));
}

TEST_CASE("a non-2xx answer to a stream request comes back whole, without on_data") {
  stream_server srv;
  net::http_client client;
  REQUIRE(client.connect("127.0.0.1", srv.port()));
  bool called = false;
  auto r = client.stream(
      "GET", "/nowhere",
      [&](std::string_view) {
        called = true;
        return true;
      },
      10s);
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK(r->status == 404);
  CHECK(contains(r->body, "not_found"));
  CHECK_FALSE(called);
  // The connection is kept for the next request.
  auto again = client.request("GET", "/plain");
  REQUIRE_MESSAGE(again, again.error().to_string());
  CHECK(again->body == "plain");
}

TEST_CASE("the client reads a body that ends with the connection as it arrives") {
  test::raw_listener listener;
  event_log log;
  test::future_value<stream_result> result;
  std::jthread client([&] { result.set(read_events(listener.port(), log, 10s)); });
  test::raw_connection conn = listener.accept();
  const int fd = conn.fd();
  REQUIRE(fd >= 0);
  std::string request;
  char buf[4096];
  while (!contains(request, "\r\n\r\n")) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    REQUIRE(n > 0);
    request.append(buf, static_cast<std::size_t>(n));
  }
  CHECK(request.rfind("GET /events HTTP/1.1\r\n", 0) == 0);
  std::string first = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: one\r\n\r\n";
  CHECK(::send(fd, first.data(), first.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(first.size()));
  // Delivered while the connection is still open.
  CHECK(log.wait_for(1));
  std::string second = "data: two\r\n\r\n";
  CHECK(::send(fd, second.data(), second.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(second.size()));
  conn.close();
  auto r = result.wait();
  REQUIRE(r.has_value());
  REQUIRE_MESSAGE(*r, r->error().to_string());
  CHECK((*r)->status == 200);
  auto events = log.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0].data == "one");
  CHECK(events[1].data == "two");
}

namespace {

std::vector<net::sse_event> parse_all(std::string_view text) {
  net::sse_parser p;
  std::vector<net::sse_event> out;
  p.feed(text, [&](const net::sse_event& e) { out.push_back(e); });
  return out;
}

}  // namespace

TEST_CASE("the SSE parser joins data lines, skips comments and keeps the last id") {
  auto events = parse_all(
      ": a comment\n"
      "data: first\n"
      "data:second\n"
      "data\n"
      "\n"
      "id: 7\n"
      "event: update\n"
      "data:  two spaces\n"
      "\n"
      "data: no id of its own\n"
      "unknown: field\n"
      "\n");
  REQUIRE(events.size() == 3);
  CHECK(events[0].data == "first\nsecond\n");
  CHECK(events[0].event == "message");
  CHECK(events[0].id == "");
  CHECK(events[1].id == "7");
  CHECK(events[1].event == "update");
  CHECK(events[1].data == " two spaces");
  // The id carries over; the event type does not.
  CHECK(events[2].id == "7");
  CHECK(events[2].event == "message");
  CHECK(events[2].data == "no id of its own");
}

TEST_CASE("the SSE parser dispatches nothing for comments, empty events and unfinished ones") {
  net::sse_parser p;
  int n = 0;
  auto count = [&](const net::sse_event&) { ++n; };
  p.feed(":heartbeat\n\n: another\n\n", count);
  p.feed("event: lost\n\n", count);  // no data: dropped, and its type with it
  p.feed("id: 3\ndata: not finished\n", count);
  CHECK(n == 0);
  CHECK(p.last_event_id() == "3");
  p.feed("retry: 2500\nretry: soon\n", count);
  CHECK(p.retry_ms() == 2500u);
  p.feed("\n", count);
  CHECK(n == 1);
}

TEST_CASE("the SSE parser takes CRLF, CR and LF line ends cut anywhere between feeds") {
  std::string text =
      "\xEF\xBB\xBFid: 1\r\nevent: a\r\ndata: x\r\ndata: y\r\n\r\n"
      "data: cr\rdata: only\r\r"
      "data: lf\n\n";
  auto check = [](const std::vector<net::sse_event>& events) {
    REQUIRE(events.size() == 3);
    CHECK(events[0].id == "1");
    CHECK(events[0].event == "a");
    CHECK(events[0].data == "x\ny");
    CHECK(events[1].data == "cr\nonly");
    CHECK(events[1].id == "1");
    CHECK(events[2].data == "lf");
  };
  SUBCASE("at once") {
    check(parse_all(text));
  }
  SUBCASE("byte by byte") {
    net::sse_parser p;
    std::vector<net::sse_event> out;
    for (char c : text) p.feed(std::string_view(&c, 1), [&](const auto& e) { out.push_back(e); });
    check(out);
  }
  SUBCASE("split between CR and LF") {
    net::sse_parser p;
    std::vector<net::sse_event> out;
    auto cut = text.find("\r\n") + 1;
    p.feed(std::string_view(text).substr(0, cut), [&](const auto& e) { out.push_back(e); });
    p.feed(std::string_view(text).substr(cut), [&](const auto& e) { out.push_back(e); });
    check(out);
  }
}

TEST_CASE("format_sse writes what the SSE parser reads back") {
  auto wire = net::format_sse(event("42", "ledger", "line 1\r\nline 2\nline 3"));
  CHECK(wire == "id: 42\nevent: ledger\ndata: line 1\ndata: line 2\ndata: line 3\n\n");
  auto events = parse_all(wire + net::format_sse(event("", "message", "")));
  REQUIRE(events.size() == 2);
  CHECK(events[0].id == "42");
  CHECK(events[0].event == "ledger");
  CHECK(events[0].data == "line 1\nline 2\nline 3");
  CHECK(events[1].event == "message");
  CHECK(events[1].data == "");
  CHECK(events[1].id == "42");
}
