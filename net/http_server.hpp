#pragma once
// An asynchronous HTTP/1.1 server with keep-alive (Boost.Beast) on its own
// io_context and threads, never on CAF's. It enforces the request body limit
// (413) and, when a token is configured, the bearer token (401); every other
// request goes to one request_handler as plain strings, so the code that
// answers requests (net/api.hpp) never sees Beast.
//
// Thread-safety: run_after() and the respond_fn handed to the handler may be
// called from any thread. open(), start() and stop() are for the owning
// thread; stop() must not be called from a server thread.
// Lifetime: stop() (or the destructor) stops accepting, closes idle
// connections, waits up to server_options::stop_grace for requests in flight
// to be answered and written, then joins the threads. A respond_fn called
// after stop() does nothing.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.hpp"
#include "config/node_config.hpp"

namespace keel::net {

struct http_request {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // path and query as sent, still percent-encoded
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  // The first header named `name` (ASCII case-insensitive); empty if absent.
  std::string_view header(std::string_view name) const;
};

struct http_response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Sent in addition to Content-Type, Content-Length, Connection and Server.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Answers one request. The first call wins; later calls are ignored. If every
// copy is destroyed without a call, the client gets a 500.
using respond_fn = std::function<void(http_response)>;
// Called on a server thread for each authorized request; it may block briefly
// (a store read) but should hand slow work elsewhere and call respond later.
using request_handler = std::function<void(http_request, respond_fn)>;

// The body of every error: {"error": {"code": ..., "message": ...}}.
std::string error_json(std::string_view code, std::string_view message);

struct server_options {
  // Threads running the server's io_context. Default 2.
  unsigned threads = 2;
  // How long stop() waits for requests in flight. Default 10 s.
  std::chrono::milliseconds stop_grace{10'000};
  // A keep-alive connection with no request for this long is closed; also
  // bounds the time to receive one request. Default 60 s.
  std::chrono::milliseconds idle_timeout{60'000};
  // Paths (without query) that need no bearer token. Default /v1/health.
  std::vector<std::string> open_paths{"/v1/health"};
};

class http_server {
 public:
  // Binds and listens on cfg.http_host:cfg.http_port (port 0 picks a free
  // port), using cfg.token and cfg.max_body_bytes. Nothing is accepted before
  // start(). Errors: invalid_argument (unresolvable host), unavailable (the
  // address is in use or cannot be bound).
  static result<std::unique_ptr<http_server>> open(const config::node_config& cfg,
                                                   server_options opts = {});
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // The bound port: the real one when cfg.http_port was 0.
  uint16_t port() const;
  const std::string& host() const;

  // Starts the threads and accepting. REQUIRES: called at most once, before
  // stop(); `handler` stays callable until stop() returns.
  void start(request_handler handler);

  // Runs `fn` once on a server thread after `delay`. Dropped unrun when the
  // server stops first.
  void run_after(std::chrono::milliseconds delay, std::function<void()> fn);

  // Idempotent; see the lifetime note above.
  void stop();

  struct impl;

 private:
  explicit http_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
