#pragma once
// A small synchronous HTTP/1.1 client over one keep-alive connection, for
// the CLI, integration tests, benchmarks and the effects that call out (model
// providers, http tools). A request on a connection the server has meanwhile
// closed (idle timeout, restart) is sent once more on a fresh connection;
// every request has a deadline.
//
// https:// uses TLS (OpenSSL, TLS 1.2 or newer) and verifies the server: its
// certificate chain against the system trust store (OpenSSL's default
// paths; SSL_CERT_FILE / SSL_CERT_DIR override them) or against
// set_ca_file(), and its name against the host connected to. SNI is sent
// for host names (not for IP literals). A client certificate
// (set_client_certificate) is presented to servers that ask for one.
//
// Thread-safety: one http_client per thread; distinct clients are
// independent. Errors: unavailable (cannot connect, connection lost, TLS
// handshake failed), unauthorized (the server's TLS certificate failed
// verification, or the server refused ours or wanted one: tls_problem()
// says which), timeout (the deadline passed; the connection is dropped),
// invalid_argument (no connect() yet, an unreadable CA file, client
// certificate or key). An HTTP error status is a response, not an error.
//
// stream() reads a body as it arrives (Server-Sent Events; http/sse.hpp
// parses them).
//
// Aborting (set_abort): raising the signal, from any thread, ends the
// connect, request or stream under way at once: its connection is closed
// (a cut is posted to the client's own io_context, which runs only inside
// its calls, so the socket is never touched from two threads) and the call
// fails with unavailable ("... was aborted"; "... before it was sent" when
// nothing was). Name resolution, which is synchronous, is not cut short.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/abort_signal.hpp"
#include "base/status.hpp"
#include "http/url.hpp"

namespace keel::net {

class http_client {
 public:
  struct response {
    unsigned status = 0;
    std::string body;
    std::string content_type;
    std::string retry_after;  // the Retry-After header, if any
  };
  using header_list = std::vector<std::pair<std::string, std::string>>;

  http_client();
  ~http_client();
  http_client(http_client&&) noexcept;
  http_client& operator=(http_client&&) noexcept;

  // Remembers the server and connects to it now, over plain TCP.
  status connect(std::string host, uint16_t port);
  // The same for an address from parse_url: TLS when its scheme is https.
  status connect(const server_address& server);

  // Trusts only the certificates in this PEM file, instead of the system
  // store, for https connections opened afterwards (tests, private CAs).
  void set_ca_file(std::string pem_path);
  // Presents this certificate (PEM, the chain leaf first) and its key (PEM,
  // not encrypted) on https connections opened afterwards, to servers that
  // require client certificates (mutual TLS).
  void set_client_certificate(std::string cert_pem_path, std::string key_pem_path);

  // What the last unauthorized error was about, for a caller that tells its
  // user the fix; none after any other outcome.
  enum class tls_failure {
    none,
    server_not_trusted,          // the server's certificate failed verification
    client_certificate_refused,  // the server wanted a certificate, or refused ours
  };
  tls_failure tls_problem() const;
  // Whether the last connect (or a request's reconnect) failed because the
  // server refused the connection: nothing listens on the port (yet).
  bool connection_refused() const;

  // Deadline of each request (write and read together) and of connecting.
  // Default 30 s.
  void set_timeout(std::chrono::milliseconds timeout);
  // A header sent with every request, e.g. ("Authorization", "Bearer T").
  void set_header(std::string name, std::string value);
  // The signal that aborts this client's calls from now on (see above);
  // null: none. A raised one fails every later call until it is replaced.
  // REQUIRES: `abort` outlives its use here (until the next set_abort or
  // the client's end). Call from the client's thread, between calls.
  void set_abort(const abort_signal* abort);

  // Sends one request and reads the whole response. A non-empty body is
  // sent as application/json unless `headers` names another Content-Type.
  // With `sent`, the caller needs to know whether a failed request may have
  // reached the server (to run a call at most once): *sent is false only
  // when no connection could be made, and the request is never sent a
  // second time on a fresh connection.
  result<response> request(std::string_view method, std::string_view target,
                           std::string_view body = {}, const header_list& headers = {},
                           bool* sent = nullptr);

  // Sends one request like request() and hands a 2xx response's body to
  // `on_data` piece by piece as it arrives (chunked, close-delimited or
  // Content-Length). Returns when the body ends, or as soon as `on_data`
  // returns false (the connection is then dropped, which tells the server
  // the client has gone). Connecting and sending have the set_timeout()
  // deadline; after that, `idle_timeout` bounds each wait for the next
  // bytes, headers included, so a stream may last forever as long as
  // something arrives. A non-2xx response is read whole and comes back in
  // `response::body`, and `on_data` is not called; for a 2xx one the body
  // is left empty. Errors: as request(); timeout also when nothing arrived
  // for `idle_timeout`; unavailable when the connection ends before the
  // body does (the server was stopped). An exception from `on_data` drops
  // the connection and propagates.
  result<response> stream(std::string_view method, std::string_view target,
                          const std::function<bool(std::string_view chunk)>& on_data,
                          std::chrono::milliseconds idle_timeout, std::string_view body = {},
                          const header_list& headers = {});

  void close();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// Kept-alive clients shared by threads, for callers on many threads that
// talk to a few servers (model providers, http tools). Each request borrows
// an idle connection to its server (or opens a new one) and gives it back
// when the exchange succeeded; at most `max_idle_per_server` idle
// connections are kept per scheme://host:port.
//
// Thread-safety: request() may be called concurrently. Errors: as
// http_client::connect and http_client::request.
class http_client_pool {
 public:
  explicit http_client_pool(std::size_t max_idle_per_server = 8);
  ~http_client_pool();
  http_client_pool(const http_client_pool&) = delete;
  http_client_pool& operator=(const http_client_pool&) = delete;

  // One deadline, `timeout`, covers connecting (when needed), sending and
  // receiving. With `sent` (see http_client::request) the request goes out
  // on a fresh connection: a kept-alive one the server has meanwhile closed
  // would fail it as if it might have been sent. `abort` (may be null)
  // aborts the call as http_client::set_abort says; the connection of a
  // call during which it was raised is dropped, never kept.
  result<http_client::response> request(const server_address& server, std::string_view method,
                                        std::string_view target, std::string_view body,
                                        const http_client::header_list& headers,
                                        std::chrono::milliseconds timeout, bool* sent = nullptr,
                                        const abort_signal* abort = nullptr);

 private:
  const std::size_t max_idle_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<http_client>>> idle_;  // guarded by mu_
};

}  // namespace keel::net
