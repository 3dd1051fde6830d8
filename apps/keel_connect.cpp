// Reaching the node: the token and TLS files, connecting (and waiting for a
// node that is starting up), explaining why it failed, and keel wait.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "apps/keel_cli.hpp"

namespace keel::cli_app {

namespace {

using std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

constexpr milliseconds default_connect_wait{10'000};
constexpr milliseconds default_wait_timeout{10'000};
// After this long the CLI says what it waits for.
constexpr milliseconds announce_after{500};
constexpr milliseconds retry_every{100};

// $KEEL_CONNECT_WAIT_MS: how long a refused connection is tried again.
milliseconds connect_wait() {
  const char* v = std::getenv("KEEL_CONNECT_WAIT_MS");
  if (!v || !*v) return default_connect_wait;
  const std::string s = v;
  if (s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
    usage_fail("KEEL_CONNECT_WAIT_MS must be a number of milliseconds, got '" + s + "'");
  return milliseconds(std::stoll(s));
}

std::string how_to_start(const std::string& url) {
  return "no keeld answers at " + url +
         " (connection refused); start one with ./build/keeld --data DIR, or pass --server";
}

}  // namespace

void cli::set_up(net::http_client& c) const {
  if (!inv_.token.empty()) c.set_header("Authorization", "Bearer " + inv_.token);
  if (!inv_.ca.empty()) c.set_ca_file(inv_.ca);
  if (!inv_.cert.empty()) c.set_client_certificate(inv_.cert, inv_.key);
}

void cli::print_failure(const status& s, const net::http_client& c) const {
  const char* fix = "";
  switch (c.tls_problem()) {
    case net::http_client::tls_failure::server_not_trusted:
      fix = inv_.ca.empty() ? "; pass --ca FILE or set KEEL_CA to trust the node's CA"
                            : "; is --ca (KEEL_CA) the CA that signed the node's certificate?";
      break;
    case net::http_client::tls_failure::client_certificate_refused:
      fix = inv_.cert.empty() ? "; pass --cert FILE --key FILE (or set KEEL_CERT and KEEL_KEY)"
                              : "; is --cert (KEEL_CERT) signed by a CA the node trusts?";
      break;
    case net::http_client::tls_failure::none:
      break;
  }
  std::fprintf(stderr, "keel: %s%s\n", s.message().c_str(), fix);
}

std::string cli::server_url() const {
  auto addr = net::parse_url(inv_.server);
  if (!addr) return inv_.server;
  const bool v6 = addr->host.find(':') != std::string::npos;
  return addr->scheme + "://" + (v6 ? "[" + addr->host + "]" : addr->host) + ":" +
         std::to_string(addr->port);
}

status cli::connect_waiting(const net::server_address& server, milliseconds budget, bool announce) {
  const auto start = clock_type::now();
  bool announced = false;
  for (;;) {
    status s = client_.connect(server);
    // Only a refusal means "not there yet": a TLS failure, a timeout or a
    // name that does not resolve will not mend by waiting.
    if (s || !client_.connection_refused()) return s;
    const auto waited = std::chrono::duration_cast<milliseconds>(clock_type::now() - start);
    if (waited >= budget) return s;
    if (announce && !announced && waited >= announce_after) {
      std::fprintf(stderr, "keel: waiting for keeld at %s ...\n", server_url().c_str());
      announced = true;
    }
    std::this_thread::sleep_for(std::min(retry_every, budget - waited));
  }
}

bool cli::connect() {
  if (connected_) return true;
  auto addr = net::parse_url(inv_.server);
  if (!addr) usage_fail(addr.error().message());
  set_up(client_);
  if (auto s = connect_waiting(*addr, connect_wait(), true); !s) {
    // A CA file, client certificate or key that does not load.
    if (s.error_code() == code::invalid_argument) usage_fail(s.message());
    if (client_.connection_refused())
      std::fprintf(stderr, "keel: %s\n", how_to_start(server_url()).c_str());
    else
      print_failure(s, client_);
    return false;
  }
  connected_ = true;
  return true;
}

int cli::wait() {
  expect_args(inv_, 0, 0);
  const std::string t = number_opt(inv_, "timeout");
  if (t.size() > 9) usage_fail("--timeout must be at most 999999999 ms");
  const milliseconds timeout = t.empty() ? default_wait_timeout : milliseconds(std::stoll(t));
  auto addr = net::parse_url(inv_.server);
  if (!addr) usage_fail(addr.error().message());
  set_up(client_);
  const auto deadline = clock_type::now() + timeout;
  auto left = [&] {
    return std::max(milliseconds(0),
                    std::chrono::duration_cast<milliseconds>(deadline - clock_type::now()));
  };
  std::string last_problem = "connection refused";
  for (;;) {
    // No attempt may outlast the deadline (a host that drops packets).
    client_.set_timeout(std::max(left(), milliseconds(1)));
    status s = connect_waiting(*addr, left(), false);
    if (!s) {
      if (s.error_code() == code::invalid_argument) usage_fail(s.message());
      if (!client_.connection_refused()) {
        print_failure(s, client_);
        return exit_server;
      }
    } else if (auto r = client_.request("GET", "/v1/health"); r && r->status == 200) {
      json j = json::parse(r->body, nullptr, false);
      if (inv_.json_out && !j.is_discarded()) return done(j);
      std::printf("keeld at %s is up (%s)\n", server_url().c_str(),
                  !j.is_discarded() ? text_of(j.value("version", json("?"))).c_str() : "?");
      return exit_ok;
    } else {
      last_problem =
          r ? "GET /v1/health answered " + std::to_string(r->status) : r.error().message();
    }
    if (left() <= milliseconds(0)) break;
    std::this_thread::sleep_for(std::min(retry_every, left()));
  }
  if (last_problem == "connection refused")
    std::fprintf(stderr, "keel: %s (waited %lld ms)\n", how_to_start(server_url()).c_str(),
                 static_cast<long long>(timeout.count()));
  else
    std::fprintf(stderr, "keel: keeld at %s did not answer within %lld ms: %s\n",
                 server_url().c_str(), static_cast<long long>(timeout.count()),
                 last_problem.c_str());
  return exit_server;
}

}  // namespace keel::cli_app
