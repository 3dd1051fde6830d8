// http/client.hpp: https URLs, and TLS against a local `openssl
// s_server` (skipped when the openssl program is missing) with certificates
// made for the test: trusted via set_ca_file, refused by the system store,
// refused for a name they were not issued to; SNI picks the certificate.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "effects/openai_model.hpp"
#include "http/client.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string find_openssl() {
  for (const char* p : {"/usr/bin/openssl", "/usr/local/bin/openssl"})
    if (::access(p, X_OK) == 0) return p;
  return {};
}

// `openssl s_server -www` on 127.0.0.1 (a free port): answers every GET
// with a status page. Stopped by PID.
class tls_server {
 public:
  // `fallback` and `named` are paths without the .pem / .key suffix; the
  // named certificate answers SNI "localhost".
  tls_server(const std::string& openssl, const std::string& fallback, const std::string& named) {
    std::string cert = fallback + ".pem", key = fallback + ".key";
    std::string cert2 = named + ".pem", key2 = named + ".key";
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl(openssl.c_str(), openssl.c_str(), "s_server", "-accept", "127.0.0.1:0", "-cert",
              cert.c_str(), "-key", key.c_str(), "-cert2", cert2.c_str(), "-key2", key2.c_str(),
              "-www", "-servername", "localhost", static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
    static const std::regex accept(R"(ACCEPT 127\.0\.0\.1:(\d+))");
    auto deadline = std::chrono::steady_clock::now() + 10s;
    std::smatch m;
    while (std::chrono::steady_clock::now() < deadline) {
      read_some(100);
      if (std::regex_search(output_, m, accept)) {
        port_ = static_cast<uint16_t>(std::stoi(m[1]));
        return;
      }
    }
    stop();
    FAIL("openssl s_server did not start: " << output_);
  }
  ~tls_server() { stop(); }
  tls_server(const tls_server&) = delete;
  tls_server& operator=(const tls_server&) = delete;

  uint16_t port() const { return port_; }

 private:
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::close(out_);
    pid_ = -1;
  }

  bool read_some(int timeout_ms) {
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) return false;
    output_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  uint16_t port_ = 0;
  std::string output_;
};

}  // namespace

TEST_CASE("parse_url reads https URLs with port 443 by default and exposes the scheme") {
  struct url_case {
    const char* url;
    const char* scheme;
    const char* host;
    uint16_t port;
  };
  for (const auto& c :
       std::vector<url_case>{{"https://api.openai.com", "https", "api.openai.com", 443},
                             {"https://h:8443/", "https", "h", 8443},
                             {"https://[::1]", "https", "::1", 443},
                             {"http://h", "http", "h", 80},
                             {"h:7070", "http", "h", 7070}}) {
    CAPTURE(c.url);
    auto a = net::parse_url(c.url);
    REQUIRE_MESSAGE(a.is_ok(), a.error().to_string());
    CHECK(a->scheme == c.scheme);
    CHECK(a->tls() == (std::string(c.scheme) == "https"));
    CHECK(a->host == c.host);
    CHECK(a->port == c.port);
  }
  auto path = net::parse_url("https://h/v1");
  REQUIRE_FALSE(path.is_ok());
  CHECK(contains(path.error().message(), "must not have a path"));
  auto other = net::parse_url("ftp://h");
  REQUIRE_FALSE(other.is_ok());
  CHECK(contains(other.error().message(), "only http:// and https://"));
}

TEST_CASE("parse_url_target splits a URL into the server and the request target") {
  struct target_case {
    const char* url;
    const char* scheme;
    uint16_t port;
    const char* target;
  };
  for (const auto& c : std::vector<target_case>{
           {"https://api.openai.com/v1", "https", 443, "/v1"},
           {"http://127.0.0.1:8000/v1/", "http", 8000, "/v1/"},
           {"http://h", "http", 80, "/"},
           {"https://h:9/tools/refund?dry=1", "https", 9, "/tools/refund?dry=1"}}) {
    CAPTURE(c.url);
    auto t = net::parse_url_target(c.url);
    REQUIRE_MESSAGE(t.is_ok(), t.error().to_string());
    CHECK(t->server.scheme == c.scheme);
    CHECK(t->server.port == c.port);
    CHECK(t->target == c.target);
  }
  for (const char* bad : {"ftp://h/x", "https://:1/x", "https://h:0/x", "http:///v1"}) {
    CAPTURE(bad);
    CHECK(net::parse_url_target(bad).error().error_code() == code::invalid_argument);
  }
}

TEST_CASE("https verifies the server certificate and its name, and sends SNI") {
  auto openssl = find_openssl();
  if (openssl.empty()) {
    MESSAGE("skipped: no openssl program to run a TLS server");
    return;
  }
  // Two self-signed certificates: the server presents "localhost" only to a
  // client that asks for that name through SNI, "default.invalid" otherwise.
  test::temp_dir dir("keel-tls");
  auto make_cert = [&](const std::string& name) {
    std::string base = dir.str() + "/" + name;
    std::string cmd = openssl + " req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1" +
                      " -nodes -days 2 -subj /CN=" + name + " -addext subjectAltName=DNS:" + name +
                      " -keyout " + base + ".key -out " + base + ".pem >/dev/null 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return base;
  };
  std::string fallback = make_cert("default.invalid"), named = make_cert("localhost");
  std::string trusted = dir.str() + "/trusted.pem";
  REQUIRE(std::system(("cat " + fallback + ".pem " + named + ".pem > " + trusted).c_str()) == 0);
  tls_server server(openssl, fallback, named);

  SUBCASE("a certificate trusted through set_ca_file is accepted for the name sent by SNI") {
    net::http_client c;
    c.set_ca_file(trusted);
    c.set_timeout(5s);
    auto s = c.connect(net::server_address{"https", "localhost", server.port()});
    REQUIRE_MESSAGE(s.is_ok(), s.to_string());
    auto r = c.request("GET", "/");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK(r->status == 200);
  }
  SUBCASE("the system store does not trust a self-signed certificate: unauthorized") {
    net::http_client c;
    c.set_timeout(5s);
    auto s = c.connect(net::server_address{"https", "localhost", server.port()});
    CHECK(s.error_code() == code::unauthorized);
    CHECK(contains(s.message(), "self-signed"));
  }
  SUBCASE("a trusted certificate for another name is refused") {
    // No SNI for an IP address: the server presents "default.invalid".
    net::http_client c;
    c.set_ca_file(trusted);
    c.set_timeout(5s);
    auto s = c.connect(net::server_address{"https", "127.0.0.1", server.port()});
    CHECK(s.error_code() == code::unauthorized);
    CHECK(contains(s.message(), "mismatch"));
  }
  SUBCASE("plain HTTP to a TLS port fails instead of hanging") {
    net::http_client c;
    c.set_timeout(2s);
    REQUIRE(c.connect("127.0.0.1", server.port()).is_ok());
    auto r = c.request("GET", "/");
    if (r.is_ok()) CHECK(r->status >= 400);
  }
  SUBCASE("an openai model refuses an untrusted https endpoint permanently") {
    config::model_spec spec;
    spec.provider = "openai";
    spec.model = "m";
    spec.base_url = "https://localhost:" + std::to_string(server.port()) + "/v1";
    actors::model_call_context ctx;
    ctx.timeout_ms = 5000;
    net::openai_model model;
    auto out = model.complete(spec, {{"messages", nlohmann::json::array()}}, ctx);
    REQUIRE_FALSE(out.ok);
    CHECK_FALSE(out.retryable);
    CHECK(contains(out.error, "certificate"));
  }
}
