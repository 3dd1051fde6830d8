// http/server.hpp over TLS, in process, with certificates the test makes
// (support/test_certs.hpp) and http/client.hpp as the client: the
// handshake under the header timeout, no answer to plain HTTP, the limits
// and the token as over TCP, 503 past the connection limit, streams (and
// stop() ending them), client certificates, and files that do not load.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config/node_config.hpp"
#include "http/client.hpp"
#include "http/server.hpp"
#include "support/raw_http.hpp"
#include "support/temp_dir.hpp"
#include "support/test_certs.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

using pki = test::test_pki;

// A server config on 127.0.0.1 (a free port) with p's server certificate.
config::node_config tls_config(const pki& p) {
  config::node_config cfg;
  cfg.http_host = "127.0.0.1";
  cfg.http_port = 0;
  cfg.tls_cert = p.server.cert;
  cfg.tls_key = p.server.key;
  return cfg;
}

// A TLS server answering GET /plain with "plain", POST /echo with the body,
// and GET /events with a stream whose sink it hands to the test.
class tls_server {
 public:
  explicit tls_server(const config::node_config& cfg, net::server_options opts = {}) {
    opts.stop_grace = 10s;  // a stream must not make stop() wait for it
    auto s = net::http_server::open(cfg, std::move(opts));
    REQUIRE_MESSAGE(s, s.error().to_string());
    server = std::move(*s);
    REQUIRE(server->tls());
    server->start([this](net::http_request req, net::respond_fn respond) {
      if (req.target == "/plain") return respond({200, "text/plain", "plain", {}});
      if (req.target == "/echo") return respond({200, "text/plain", req.body, {}});
      net::http_response r;
      r.content_type = "text/event-stream";
      r.on_stream = [this](std::shared_ptr<net::stream_sink> sink) { sink_.set(std::move(sink)); };
      respond(std::move(r));
    });
  }

  uint16_t port() const { return server->port(); }
  std::shared_ptr<net::stream_sink> next_sink() {
    auto s = sink_.wait();
    REQUIRE_MESSAGE(s.has_value(), "no stream was opened");
    return *s;
  }

  std::unique_ptr<net::http_server> server;

 private:
  test::future_value<std::shared_ptr<net::stream_sink>> sink_;
};

// A client of 127.0.0.1:port over TLS that trusts `ca`.
net::http_client tls_client(const std::string& ca, uint16_t port) {
  net::http_client c;
  c.set_ca_file(ca);
  c.set_timeout(10s);
  REQUIRE(c.connect(net::server_address{"https", "127.0.0.1", port}).is_ok());
  return c;
}

// Some bytes on a chunk of a stream, for the test thread to wait on.
class received {
 public:
  void add(std::string_view bytes) {
    std::lock_guard lock(mu_);
    text_ += bytes;
    cv_.notify_all();
  }
  bool wait_for(const std::string& part) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return contains(text_, part); });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
};

}  // namespace

TEST_CASE("over TLS, requests, keep-alive, the body limit and the token work as over TCP") {
  pki p;
  auto cfg = tls_config(p);
  cfg.token = "s3cret";
  cfg.max_body_bytes = 1024;
  tls_server srv(cfg);
  auto c = tls_client(p.ca.cert(), srv.port());

  auto denied = c.request("GET", "/plain");
  REQUIRE_MESSAGE(denied, denied.error().to_string());
  CHECK(denied->status == 401);
  c.set_header("Authorization", "Bearer s3cret");
  for (int i = 0; i < 3; ++i) {
    auto r = c.request("POST", "/echo", "hello " + std::to_string(i));
    REQUIRE_MESSAGE(r, r.error().to_string());
    CHECK(r->status == 200);
    CHECK(r->body == "hello " + std::to_string(i));
  }
  auto big = c.request("POST", "/echo", std::string(2048, 'x'));
  REQUIRE_MESSAGE(big, big.error().to_string());
  CHECK(big->status == 413);
  // The 401 closed its connection; the three that followed shared one.
  CHECK(srv.server->stats().accepted == 2);
}

TEST_CASE("over TLS, a client that never completes the handshake is closed at the header timeout") {
  pki p;
  auto cfg = tls_config(p);
  cfg.http_header_timeout_ms = 300;
  tls_server srv(cfg);

  test::raw_connection silent;
  REQUIRE(silent.connect(srv.port()));
  auto start = std::chrono::steady_clock::now();
  bool closed = false;
  silent.read_all(10s, &closed);
  CHECK(closed);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(test::eventually([&] { return srv.server->stats().tls_handshake_failures == 1; }));
  CHECK(test::eventually([&] { return srv.server->stats().open == 0; }));
}

TEST_CASE("plain HTTP to a TLS port is closed without an answer") {
  pki p;
  tls_server srv(tls_config(p));
  test::raw_connection plain;
  REQUIRE(plain.connect(srv.port()));
  REQUIRE(plain.send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"));
  bool closed = false;
  const std::string raw = plain.read_all(10s, &closed);
  CHECK(closed);
  CHECK_FALSE(contains(raw, "HTTP/1."));
  CHECK_FALSE(contains(raw, "plain"));
  CHECK(test::eventually([&] { return srv.server->stats().tls_handshake_failures == 1; }));

  net::http_client c;
  c.set_timeout(5s);
  REQUIRE(c.connect("127.0.0.1", srv.port()).is_ok());
  CHECK_FALSE(c.request("GET", "/plain").is_ok());
}

TEST_CASE("over TLS, a connection past the limit is answered 503 after its handshake") {
  pki p;
  auto cfg = tls_config(p);
  cfg.max_connections = 1;
  tls_server srv(cfg);
  auto first = tls_client(p.ca.cert(), srv.port());
  auto r = first.request("GET", "/plain");
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK(r->status == 200);

  auto second = tls_client(p.ca.cert(), srv.port());
  auto busy = second.request("GET", "/plain");
  REQUIRE_MESSAGE(busy, busy.error().to_string());
  CHECK(busy->status == 503);
  CHECK_MESSAGE(contains(busy->body, "too many connections"), busy->body);
  CHECK(busy->retry_after == "1");
  auto st = srv.server->stats();
  CHECK(st.refused == 1);
  CHECK(st.open == 1);

  // The kept-alive first connection goes on.
  auto again = first.request("GET", "/plain");
  REQUIRE_MESSAGE(again, again.error().to_string());
  CHECK(again->status == 200);
}

TEST_CASE("a TLS stream delivers as it is written, notices a client that leaves, ends on stop()") {
  pki p;
  tls_server srv(tls_config(p));
  received got;
  test::future_value<bool> stream_ok;
  auto read_stream = [&](bool leave_after_first) {
    auto c = tls_client(p.ca.cert(), srv.port());
    auto r = c.stream(
        "GET", "/events",
        [&](std::string_view bytes) {
          got.add(bytes);
          return !leave_after_first;
        },
        30s);
    stream_ok.set(r.is_ok() && r->status == 200);
  };

  SUBCASE("a client that leaves is noticed while the producer is silent") {
    std::jthread client([&] { read_stream(true); });
    auto sink = srv.next_sink();
    sink->write("data: one\n\n");
    REQUIRE(got.wait_for("one"));
    CHECK(stream_ok.wait() == true);
    CHECK(test::eventually([&] { return sink->closed(); }));
  }
  SUBCASE("stop() ends the stream at once, with a proper end of its body") {
    std::jthread client([&] { read_stream(false); });
    auto sink = srv.next_sink();
    sink->write("data: one\n\n");
    REQUIRE(got.wait_for("one"));
    auto start = std::chrono::steady_clock::now();
    srv.server->stop();
    CHECK(std::chrono::steady_clock::now() - start < 2s);
    CHECK(sink->closed());
    CHECK(stream_ok.wait() == true);
  }
}

TEST_CASE("with a client CA, only clients with a certificate it signed get an answer") {
  pki p;
  auto cfg = tls_config(p);
  cfg.tls_client_ca = p.ca.cert();
  tls_server srv(cfg);
  auto ask = [&](const test::cert_files* cert) {
    net::http_client c;
    c.set_ca_file(p.ca.cert());
    c.set_timeout(10s);
    if (cert) c.set_client_certificate(cert->cert, cert->key);
    auto s = c.connect(net::server_address{"https", "127.0.0.1", srv.port()});
    if (!s) return std::pair{s, c.tls_problem()};
    auto r = c.request("GET", "/plain");
    if (!r) return std::pair{r.error(), c.tls_problem()};
    return std::pair{r->status == 200 ? status::ok() : error(code::internal, r->body),
                     c.tls_problem()};
  };

  SUBCASE("with one") {
    auto [s, problem] = ask(&p.client);
    CHECK_MESSAGE(s.is_ok(), s.to_string());
    CHECK(problem == net::http_client::tls_failure::none);
  }
  SUBCASE("without one") {
    auto [s, problem] = ask(nullptr);
    CHECK(s.error_code() == code::unauthorized);
    CHECK_MESSAGE(contains(s.message(), "requires a client certificate"), s.message());
    CHECK(problem == net::http_client::tls_failure::client_certificate_refused);
  }
  SUBCASE("with one from another CA") {
    test::test_ca other(p.dir.path(), "other");
    auto stranger = other.issue_client("stranger");
    auto [s, problem] = ask(&stranger);
    CHECK(s.error_code() == code::unauthorized);
    CHECK_MESSAGE(contains(s.message(), "refused the client certificate"), s.message());
    CHECK(problem == net::http_client::tls_failure::client_certificate_refused);
  }
  CHECK(test::eventually([&] { return srv.server->stats().open == 0; }));
}

TEST_CASE("a client that does not trust the server's CA fails with certificate verify failed") {
  pki p;
  tls_server srv(tls_config(p));
  test::test_ca other(p.dir.path(), "other");
  net::http_client c;
  c.set_ca_file(other.cert());
  c.set_timeout(10s);
  auto s = c.connect(net::server_address{"https", "127.0.0.1", srv.port()});
  CHECK(s.error_code() == code::unauthorized);
  CHECK_MESSAGE(contains(s.message(), "certificate verify failed"), s.message());
  CHECK(c.tls_problem() == net::http_client::tls_failure::server_not_trusted);
}

TEST_CASE("open() and check_tls() refuse TLS files that do not load, naming the file") {
  pki p;
  auto cfg = tls_config(p);
  std::string needle;
  SUBCASE("a certificate that is not PEM") {
    const std::string junk = p.dir.str() + "/junk.pem";
    std::ofstream(junk) << "not a certificate\n";
    cfg.tls_cert = junk;
    needle = "cannot load the TLS certificate '" + junk + "'";
  }
  SUBCASE("a key that belongs to another certificate") {
    cfg.tls_key = p.client.key;
    needle = "does not belong to the certificate";
  }
  SUBCASE("a client CA that is not PEM") {
    cfg.tls_client_ca = p.server.key;
    needle = "cannot load the TLS client CA '" + p.server.key + "'";
  }
  auto checked = net::http_server::check_tls(cfg);
  CHECK(checked.error_code() == code::invalid_argument);
  CHECK_MESSAGE(contains(checked.message(), needle), checked.message());
  auto opened = net::http_server::open(cfg);
  REQUIRE_FALSE(opened.is_ok());
  CHECK(opened.error().message() == checked.message());
}
