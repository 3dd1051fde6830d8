#include "http/client.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <optional>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "http/tls_context.hpp"

namespace keel::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// Not boost::none: Beast 1.74 compares a Content-Length with the optional
// limit, and an empty optional is less than every length, so "no limit"
// fails any response whose header is parsed apart from its body.
constexpr uint64_t no_body_limit = std::numeric_limits<uint64_t>::max();

// Failures that mean the server closed a kept-alive connection before it
// read our request.
bool closed_by_peer(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted || ec == asio::error::not_connected ||
         ec == ssl::error::stream_truncated;
}

}  // namespace

namespace {

// What a client trusts and presents; all empty: the system store, no
// certificate of its own.
struct tls_files {
  std::string ca;  // empty: the system store
  std::string cert, key;
};

// Made once per client (once per process for the system store alone):
// loading a trust store costs milliseconds, and an SSL_CTX, once set up, may
// be shared by clients on any thread.
result<std::shared_ptr<ssl::context>> make_tls_context(const tls_files& files) {
  try {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    tls::harden(*ctx);
    if (files.ca.empty()) {
      beast::error_code ec;
      ctx->set_default_verify_paths(ec);
      if (ec)
        return error(code::invalid_argument,
                     "cannot load the system's trusted certificates: " + ec.message());
    } else {
      KEEL_TRY(tls::trust(*ctx, files.ca, "CA file"));
    }
    if (!files.cert.empty()) KEEL_TRY(tls::use_key_pair(*ctx, files.cert, files.key, "client"));
    ctx->set_verify_mode(ssl::verify_peer);
    return ctx;
  } catch (const std::exception& e) {
    return error(code::internal, std::string("cannot set up TLS: ") + e.what());
  }
}

const result<std::shared_ptr<ssl::context>>& system_tls_context() {
  static const result<std::shared_ptr<ssl::context>> ctx = make_tls_context({});
  return ctx;
}

bool is_ip_literal(const std::string& host) {
  beast::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

struct http_client::impl {
  asio::io_context ioc{1};
  // Exactly one of the two while a connection is open: a TLS stream cannot
  // be reused once closed, so each connection gets a fresh one.
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  server_address server;
  std::string host_header;
  tcp::resolver::results_type endpoints;
  tls_files tls;
  std::shared_ptr<ssl::context> tls_ctx;  // made at the first https connection
  tls_failure tls_problem = tls_failure::none;
  bool connected = false;
  bool refused = false;  // the last connect was refused (ECONNREFUSED)
  bool used = false;     // a response came back on this connection
  std::chrono::milliseconds timeout{30'000};
  header_list fixed_headers;
  // set_abort(): the signal, and its hook, which posts cut() to `ioc`
  // (thread-safe) from the raising thread. Declared after `ioc`: the hook
  // goes first, and never posts to a destroyed io_context.
  const abort_signal* abort = nullptr;
  abort_signal::hook abort_hook;

  std::string where() const { return server.host + ":" + std::to_string(server.port); }

  bool aborted() const { return abort != nullptr && abort->raised(); }

  void set_abort(const abort_signal* s) {
    abort_hook = {};  // waits for a hook running in another thread
    abort = s;
    if (s == nullptr) return;
    // The cut runs on this client's thread, inside await()'s run(): the
    // socket is never touched from two threads. Posted while no operation
    // runs, it runs at the next await(), whose operation it then cancels;
    // by then a later set_abort() may have changed the signal, which is
    // why it checks again.
    abort_hook = s->on_raise([this] {
      asio::post(ioc, [this] {
        if (aborted()) cut();
      });
    });
  }

  // Closes the socket under whatever operation is pending: it completes
  // with operation_aborted, and the caller drops the connection.
  void cut() {
    if (plain || secure) transport().close();
  }

  static status abort_error(const std::string& what, bool sent) {
    return error(code::unavailable,
                 what + (sent ? " was aborted" : " was aborted before it was sent"));
  }

  beast::tcp_stream& transport() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

  // Starts one asynchronous operation and runs the private io_context until
  // it (and its deadline timer) are done: synchronous I/O with a timeout.
  template <class Start>
  beast::error_code await(Start&& start) {
    if (aborted()) return asio::error::operation_aborted;
    beast::error_code result = asio::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  // No TLS close_notify: the connection is never used again, a response we
  // already read in full cannot be truncated, and the alert would cost a
  // round trip under a deadline.
  void drop() {
    if (plain || secure) {
      beast::error_code ignored;
      transport().socket().shutdown(tcp::socket::shutdown_both, ignored);
      transport().close();
    }
    secure.reset();
    plain.reset();
    buffer.clear();
    connected = false;
    used = false;
  }

  status prepare_tls() {
    if (!tls_ctx) {
      bool system = tls.ca.empty() && tls.cert.empty();
      auto ctx = system ? system_tls_context() : make_tls_context(tls);
      if (!ctx) return ctx.error();
      tls_ctx = *ctx;
    }
    secure.emplace(ioc, *tls_ctx);
    SSL* ssl = secure->native_handle();
    // OpenSSL checks the name while it verifies the chain, so a mismatch
    // shows up in SSL_get_verify_result like any other verification failure.
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    bool named = true;
    if (is_ip_literal(server.host)) {
      named = false;
      if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server.host.c_str()))
        return error(code::internal, "TLS: cannot verify IP address " + server.host);
    } else if (!SSL_set1_host(ssl, server.host.c_str())) {
      return error(code::internal, "TLS: cannot verify host name " + server.host);
    }
    // SNI: many servers pick the certificate by it; RFC 6066 forbids IPs.
    if (named && !SSL_set_tlsext_host_name(ssl, server.host.c_str()))
      return error(code::internal, "TLS: cannot set the server name " + server.host);
    return status::ok();
  }

  status handshake() {
    auto ec = await([&](auto handler) {
      secure->async_handshake(ssl::stream_base::client, std::move(handler));
    });
    if (!ec) return status::ok();
    long verify = SSL_get_verify_result(secure->native_handle());
    drop();
    if (ec == beast::error::timeout)
      return error(code::timeout, "TLS handshake with " + where() + " timed out");
    if (verify != X509_V_OK) {
      tls_problem = http_client::tls_failure::server_not_trusted;
      return error(code::unauthorized,
                   "TLS handshake with " + where() +
                       ": certificate verify failed: " + X509_verify_cert_error_string(verify));
    }
    if (auto refused = refused_certificate(ec); !refused.is_ok()) return refused;
    return error(code::unavailable, "TLS handshake with " + where() + " failed: " + ec.message());
  }

  // A server that wanted a client certificate, or did not take ours, says
  // so with an alert: in the handshake under TLS 1.2, at the first read
  // after it under TLS 1.3. ok for any other failure.
  status refused_certificate(const beast::error_code& ec) {
    if (ec.category() != asio::error::get_ssl_category()) return status::ok();
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    std::string what;
    if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED)
      what = tls.cert.empty() ? "requires a client certificate, and none was given"
                              : "requires a client certificate";
    else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
             reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
             reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN ||
             reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED ||
             reason == SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED ||
             reason == SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE ||
             reason == SSL_R_TLSV1_ALERT_ACCESS_DENIED)
      what = tls.cert.empty() ? "wants a client certificate" : "refused the client certificate";
    else
      return status::ok();
    tls_problem = http_client::tls_failure::client_certificate_refused;
    return error(code::unauthorized, "TLS: " + where() + " " + what + " (" + ec.message() + ")");
  }

  status open() {
    drop();
    refused = false;
    if (endpoints.empty()) {
      beast::error_code ec;
      tcp::resolver resolver(ioc);
      endpoints = resolver.resolve(server.host, std::to_string(server.port), ec);
      if (ec)
        return error(code::unavailable, "cannot resolve " + server.host + ": " + ec.message());
    }
    if (server.tls()) {
      if (auto s = prepare_tls(); !s) {
        drop();
        return s;
      }
    } else {
      plain.emplace(ioc);
    }
    // One deadline for connecting and the TLS handshake.
    transport().expires_after(timeout);
    auto ec =
        await([&](auto handler) { transport().async_connect(endpoints, std::move(handler)); });
    if (ec) {
      drop();
      refused = ec == boost::asio::error::connection_refused;
      if (ec == beast::error::timeout)
        return error(code::timeout, "connecting to " + where() + " timed out");
      return error(code::unavailable, "cannot connect to " + where() + ": " + ec.message());
    }
    transport().socket().set_option(tcp::no_delay(true), ec);
    if (secure) KEEL_TRY(handshake());
    connected = true;
    return status::ok();
  }

  struct attempt {
    beast::error_code ec;
    bool got_some = false;  // any byte of a response arrived
    response res;
    bool keep_alive = true;
  };

  template <class Stream>
  attempt exchange_on(Stream& stream, http::request<http::string_body>& req) {
    attempt a;
    a.ec = await([&](auto handler) { http::async_write(stream, req, std::move(handler)); });
    if (a.ec) return a;
    http::response_parser<http::string_body> parser;
    parser.body_limit(no_body_limit);
    a.ec =
        await([&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
    a.got_some = parser.got_some();
    if (a.ec) return a;
    auto res = parser.release();
    a.res.status = res.result_int();
    a.res.content_type = std::string(res[http::field::content_type]);
    a.res.retry_after = std::string(res[http::field::retry_after]);
    a.res.body = std::move(res.body());
    a.keep_alive = res.keep_alive();
    return a;
  }

  attempt exchange(http::request<http::string_body>& req) {
    // One deadline for writing the request and reading the response.
    transport().expires_after(timeout);
    return secure ? exchange_on(*secure, req) : exchange_on(*plain, req);
  }

  struct stream_attempt {
    beast::error_code ec;
    bool got_some = false;  // any byte of a response arrived
    bool stopped = false;   // on_data asked to stop before the body ended
    response res;
    bool keep_alive = true;
  };

  template <class Stream>
  stream_attempt stream_on(Stream& stream, http::request<http::string_body>& req,
                           const std::function<bool(std::string_view)>& on_data,
                           std::chrono::milliseconds idle_timeout) {
    stream_attempt a;
    transport().expires_after(timeout);
    a.ec = await([&](auto handler) { http::async_write(stream, req, std::move(handler)); });
    if (a.ec) return a;
    // buffer_body: the parser puts body bytes straight into `piece`, which
    // is handed out after every read, so nothing waits for a full buffer.
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(no_body_limit);
    transport().expires_after(idle_timeout);
    a.ec = await(
        [&](auto handler) { http::async_read_header(stream, buffer, parser, std::move(handler)); });
    a.got_some = parser.got_some();
    if (a.ec) return a;
    a.res.status = parser.get().result_int();
    a.res.content_type = std::string(parser.get()[http::field::content_type]);
    bool success = a.res.status / 100 == 2;
    std::array<char, 16 * 1024> piece;
    while (!parser.is_done()) {
      parser.get().body().data = piece.data();
      parser.get().body().size = piece.size();
      transport().expires_after(idle_timeout);
      a.ec = await(
          [&](auto handler) { http::async_read_some(stream, buffer, parser, std::move(handler)); });
      if (a.ec == http::error::need_buffer) a.ec = {};  // `piece` is full
      // A TLS server that closes without close_notify also ends a body that
      // only the end of the connection delimits.
      if (a.ec == ssl::error::stream_truncated && parser.need_eof()) parser.put_eof(a.ec);
      if (a.ec) return a;
      std::size_t n = piece.size() - parser.get().body().size;
      if (n == 0) continue;  // a chunk header, say
      std::string_view bytes(piece.data(), n);
      if (!success) {
        a.res.body.append(bytes);
      } else if (!on_data(bytes)) {
        a.stopped = true;
        return a;
      }
    }
    a.keep_alive = parser.get().keep_alive();
    return a;
  }

  http::request<http::string_body> make_request(std::string_view method, std::string_view target,
                                                std::string_view body,
                                                const header_list& headers) const {
    http::request<http::string_body> req;
    beast::string_view method_sv(method.data(), method.size());
    auto verb = http::string_to_verb(method_sv);
    if (verb == http::verb::unknown)
      req.method_string(method_sv);
    else
      req.method(verb);
    req.target(beast::string_view(target.data(), target.size()));
    req.version(11);
    req.set(http::field::host, host_header);
    req.set(http::field::user_agent, "keel");
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    for (const auto& [k, v] : fixed_headers) req.set(k, v);
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = std::string(body);
    req.keep_alive(true);
    req.prepare_payload();
    return req;
  }
};

http_client::http_client() : impl_(std::make_unique<impl>()) {}
http_client::~http_client() = default;
http_client::http_client(http_client&&) noexcept = default;
http_client& http_client::operator=(http_client&&) noexcept = default;

status http_client::connect(std::string host, uint16_t port) {
  return connect(server_address{"http", std::move(host), port});
}

status http_client::connect(const server_address& server) {
  auto& m = *impl_;
  m.drop();
  m.tls_problem = tls_failure::none;
  m.server = server;
  m.endpoints = {};
  bool v6 = m.server.host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + m.server.host + "]" : m.server.host;
  bool default_port = m.server.port == (m.server.tls() ? 443 : 80);
  m.host_header = default_port ? host : host + ":" + std::to_string(m.server.port);
  auto s = m.open();
  if (!s && m.aborted())
    return error(code::unavailable, "connecting to " + m.where() + " was aborted");
  return s;
}

void http_client::set_ca_file(std::string pem_path) {
  impl_->tls.ca = std::move(pem_path);
  impl_->tls_ctx.reset();
}

void http_client::set_client_certificate(std::string cert_pem_path, std::string key_pem_path) {
  impl_->tls.cert = std::move(cert_pem_path);
  impl_->tls.key = std::move(key_pem_path);
  impl_->tls_ctx.reset();
}

http_client::tls_failure http_client::tls_problem() const {
  return impl_->tls_problem;
}

bool http_client::connection_refused() const {
  return impl_->refused;
}

void http_client::set_timeout(std::chrono::milliseconds timeout) {
  impl_->timeout = timeout;
}

void http_client::set_header(std::string name, std::string value) {
  for (auto& [k, v] : impl_->fixed_headers)
    if (beast::iequals(k, name)) {
      v = std::move(value);
      return;
    }
  impl_->fixed_headers.emplace_back(std::move(name), std::move(value));
}

result<http_client::response> http_client::request(std::string_view method, std::string_view target,
                                                   std::string_view body,
                                                   const header_list& headers, bool* sent) {
  auto& m = *impl_;
  if (sent) *sent = false;
  m.tls_problem = tls_failure::none;
  if (m.server.host.empty()) return error(code::invalid_argument, "http client: connect() first");
  auto req = m.make_request(method, target, body, headers);
  auto what = [&] { return std::string(method) + " " + std::string(target) + " on " + m.where(); };

  for (int tries = 0;; ++tries) {
    bool reused = m.connected && m.used;
    if (!m.connected) {
      if (auto s = m.open(); !s) return m.aborted() ? m.abort_error(what(), false) : s;
    }
    if (m.aborted()) return m.abort_error(what(), false);
    if (sent) *sent = true;
    auto a = m.exchange(req);
    if (!a.ec) {
      m.used = true;
      if (!a.keep_alive) m.drop();
      return std::move(a.res);
    }
    m.drop();
    if (m.aborted()) return m.abort_error(what(), true);
    if (!sent && reused && tries == 0 && !a.got_some && closed_by_peer(a.ec)) continue;
    KEEL_TRY(m.refused_certificate(a.ec));
    if (a.ec == beast::error::timeout)
      return error(code::timeout,
                   what() + " timed out after " + std::to_string(m.timeout.count()) + " ms");
    return error(code::unavailable, what() + " failed: " + a.ec.message());
  }
}

result<http_client::response> http_client::stream(
    std::string_view method, std::string_view target,
    const std::function<bool(std::string_view chunk)>& on_data,
    std::chrono::milliseconds idle_timeout, std::string_view body, const header_list& headers) {
  auto& m = *impl_;
  m.tls_problem = tls_failure::none;
  if (m.server.host.empty()) return error(code::invalid_argument, "http client: connect() first");
  auto req = m.make_request(method, target, body, headers);
  auto what = [&] { return std::string(method) + " " + std::string(target) + " on " + m.where(); };

  for (int tries = 0;; ++tries) {
    bool reused = m.connected && m.used;
    if (!m.connected) {
      if (auto s = m.open(); !s) return m.aborted() ? m.abort_error(what(), false) : s;
    }
    if (m.aborted()) return m.abort_error(what(), false);
    impl::stream_attempt a;
    try {
      a = m.secure ? m.stream_on(*m.secure, req, on_data, idle_timeout)
                   : m.stream_on(*m.plain, req, on_data, idle_timeout);
    } catch (...) {
      m.drop();  // the rest of the body is still on the wire
      throw;
    }
    if (!a.ec) {
      m.used = true;
      // Stopping early leaves the rest of the body unread.
      if (a.stopped || !a.keep_alive) m.drop();
      return std::move(a.res);
    }
    m.drop();
    if (m.aborted()) return m.abort_error(what(), true);
    if (reused && tries == 0 && !a.got_some && closed_by_peer(a.ec)) continue;
    KEEL_TRY(m.refused_certificate(a.ec));
    if (a.ec == beast::error::timeout) {
      if (!a.got_some)
        return error(code::timeout, what() + " timed out (" + std::to_string(m.timeout.count()) +
                                        " ms to send, " + std::to_string(idle_timeout.count()) +
                                        " ms for each read)");
      return error(code::timeout, what() + ": nothing arrived for " +
                                      std::to_string(idle_timeout.count()) + " ms");
    }
    if (a.got_some)
      return error(code::unavailable, what() + ": the response ended early: " + a.ec.message());
    return error(code::unavailable, what() + " failed: " + a.ec.message());
  }
}

void http_client::set_abort(const abort_signal* abort) {
  impl_->set_abort(abort);
}

void http_client::close() {
  impl_->drop();
}

http_client_pool::http_client_pool(std::size_t max_idle_per_server)
    : max_idle_(max_idle_per_server) {}

http_client_pool::~http_client_pool() = default;

result<http_client::response> http_client_pool::request(
    const server_address& server, std::string_view method, std::string_view target,
    std::string_view body, const http_client::header_list& headers,
    std::chrono::milliseconds timeout, bool* sent, const abort_signal* abort) {
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + timeout;
  if (sent) *sent = false;
  std::string key = server.scheme + "://" + server.host + ":" + std::to_string(server.port);
  if (abort != nullptr && abort->raised())
    return error(code::unavailable, std::string(method) + " " + std::string(target) + " on " +
                                        server.host + ":" + std::to_string(server.port) +
                                        " was aborted before it was sent");
  std::unique_ptr<http_client> client;
  if (!sent) {
    std::lock_guard lock(mu_);
    if (auto it = idle_.find(key); it != idle_.end() && !it->second.empty()) {
      client = std::move(it->second.back());
      it->second.pop_back();
    }
  }
  const bool fresh = !client;
  if (fresh) {
    client = std::make_unique<http_client>();
    client->set_timeout(timeout);
  }
  client->set_abort(abort);
  if (fresh) KEEL_TRY(client->connect(server));
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  client->set_timeout(std::max(left, std::chrono::milliseconds(1)));
  auto res = client->request(method, target, body, headers, sent);
  client->set_abort(nullptr);
  // An aborted exchange dropped its connection; one that finished as the
  // signal was raised may be fine, but is not worth the doubt.
  if (res && (abort == nullptr || !abort->raised())) {
    std::lock_guard lock(mu_);
    auto& idle = idle_[key];
    if (idle.size() < max_idle_) idle.push_back(std::move(client));
  }
  return res;
}

}  // namespace keel::net
