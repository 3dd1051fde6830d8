#pragma once
// An asynchronous HTTP/1.1 server with keep-alive (Boost.Beast) on its own
// io_context and threads, never on CAF's. It enforces a connection limit
// (a connection past cfg.max_connections is answered 503 and closed before
// anything is read), header and idle timeouts, the request body limit (413),
// a strict framing (400 and close for a Transfer-Encoding other than
// chunked, or one next to a Content-Length: no request smuggling) and, when
// a token is configured, the bearer token (401, checked on the headers,
// before any body is read); every other request goes to one
// request_handler as plain strings, so the code that answers requests
// (net/api/api.hpp) never sees Beast.
//
// With cfg.tls_cert and cfg.tls_key the port speaks only TLS (1.2 or newer):
// every limit above holds over it, the header timeout covers the handshake
// too, and a connection past the limit is told 503 once its handshake is done
// (only a few at once; beyond that it is closed at once). With
// cfg.tls_client_ca, a client without a certificate that CA signed is refused
// in the handshake. A failed handshake is closed without an answer and
// counted (server_stats::tls_handshake_failures).
//
// An answer is either a whole body or a stream (http_response::on_stream):
// the status line and headers go out at once and the body follows piece by
// piece through a stream_sink, for Server-Sent Events and the like.
//
// Thread-safety: run_after(), the respond_fn handed to the handler and every
// stream_sink may be called from any thread. open(), start() and stop() are
// for the owning thread; stop() must not be called from a server thread.
// Lifetime: stop() (or the destructor) stops accepting, closes idle
// connections, ends open streams at once (their sinks report closed), waits
// up to server_options::stop_grace for other requests in flight to be
// answered and written, then joins the threads. A respond_fn called after
// stop() does nothing; a stream_sink may outlive the server and then only
// reports closed.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/principal.hpp"
#include "base/status.hpp"
#include "config/node_config.hpp"

namespace keel::net {

struct http_request {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // path and query as sent, still percent-encoded
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Who sent it, as the server authenticated them (server_options).
  principal who;

  // The first header named `name` (ASCII case-insensitive); empty if absent.
  std::string_view header(std::string_view name) const;
};

// The producer's end of a streamed body. Writes go out in the order the
// calls were made, each as one chunk (writes queued meanwhile may share one).
// Nothing bounds the queue: a producer that must bound its memory waits for
// `done` before writing more.
//
// Thread-safety: every member may be called from any thread.
class stream_sink {
 public:
  virtual ~stream_sink() = default;

  // Queues `data` (empty data sends nothing). `done`, if set, is called once:
  // true when the data was handed to the socket, false when the stream ended
  // first (close(), the client went away, a write failed or timed out, the
  // server stopped). It runs on a server thread, or on the calling thread
  // when the stream had already ended; it must not block.
  virtual void write(std::string data, std::function<void(bool ok)> done = {}) = 0;

  // Ends the body once the queued writes are out, then closes the
  // connection. Later writes report false. Idempotent.
  virtual void close() = 0;

  // True once the stream takes no more data: after close(), or when the
  // client went away or the server stopped. A producer polls it to stop
  // early; the next write's `done(false)` tells the same.
  virtual bool closed() const = 0;
};

struct http_response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Sent in addition to Content-Type, Content-Length, Connection and Server.
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the answer is a stream and `body` is ignored: the status,
  // Content-Type, Cache-Control: no-cache (unless `headers` name another),
  // `headers` and Connection: close go out without a Content-Length; the
  // body is chunked (close-delimited for HTTP/1.0 clients). Then
  // `on_stream` is called once, on a server thread, with the sink; it should
  // hand the sink to the producer and return. When the client went away or
  // the server stopped before the headers were written, `on_stream` is
  // destroyed uncalled.
  //
  // A streaming connection has no idle timeout (a producer that may be quiet
  // for long sends heartbeats, e.g. SSE comments); a write the client does
  // not take within 30 s ends the stream. A client that closes its end ends
  // the stream even while the producer is silent.
  std::function<void(std::shared_ptr<stream_sink>)> on_stream{};
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
  // How long stop() waits for requests in flight; open streams are ended
  // at once rather than waited for. Default 10 s.
  std::chrono::milliseconds stop_grace{10'000};
  // A keep-alive connection with no request for this long is closed; also
  // bounds the time to receive one request. Streams are exempt. Default 60 s.
  std::chrono::milliseconds idle_timeout{60'000};
  // A new connection must deliver its first request's headers within this
  // time (a client that connects and says nothing holds a descriptor).
  // Default 10 s.
  std::chrono::milliseconds header_timeout{10'000};
  // Paths (without query) that need no bearer token. Default /v1/health.
  std::vector<std::string> open_paths{"/v1/health"};
  // Turns an Authorization header's value ("" when absent) into the
  // caller's principal; nullopt refuses the request (401). Called on the
  // headers, before any body is read. Unset: cfg.token, when set, admits
  // its bearer as "admin" with every scope and refuses everyone else;
  // without one every caller is "anonymous" with every scope.
  std::function<std::optional<principal>(std::string_view authorization)> authenticate;
};

// The token of an "Authorization: Bearer <token>" value; nullopt otherwise.
std::optional<std::string_view> bearer_token(std::string_view authorization);

// Counters of the server's connections (for metrics).
struct server_stats {
  uint64_t open = 0;                    // connections open now
  uint64_t accepted = 0;                // connections taken since start
  uint64_t refused = 0;                 // connections answered 503 at the limit
  uint64_t limit = 0;                   // the connection limit
  uint64_t tls_handshake_failures = 0;  // failed or timed out (TLS only)
};

// The stats as Prometheus text (keel_http_connections, ...).
std::string server_metrics_text(const server_stats& st);

class http_server {
 public:
  // Binds and listens on cfg.http_host:cfg.http_port (port 0 picks a free
  // port), using cfg.token, cfg.max_body_bytes and the TLS files. Nothing is
  // accepted before start(). Errors: invalid_argument (unresolvable host; a
  // TLS file that does not load, or a key that does not match its
  // certificate: the message names the file), unavailable (the address is in
  // use or cannot be bound).
  static result<std::unique_ptr<http_server>> open(const config::node_config& cfg,
                                                   server_options opts = {});
  // Loads cfg's TLS files as open() would, without listening, so a bad file
  // stops a start before anything else is opened. ok when TLS is off.
  static status check_tls(const config::node_config& cfg);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // The bound port: the real one when cfg.http_port was 0.
  uint16_t port() const;
  const std::string& host() const;
  // Whether the port speaks TLS.
  bool tls() const;

  // Starts the threads and accepting. REQUIRES: called at most once, before
  // stop(); `handler` stays callable until stop() returns.
  void start(request_handler handler);

  server_stats stats() const;

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
