#include "http/server.hpp"

#include <cassert>
#include <cstdio>

#include <openssl/ssl.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "http/server_impl.hpp"
#include "http/tls_context.hpp"

namespace keel::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using http_detail::iequals;
using http_detail::log_error;

namespace {

// The context every TLS session of the server shares: cfg's certificate
// chain and key, TLS 1.2 or newer with forward-secret AEAD ciphers, and,
// with a client CA, a certificate from each client.
result<std::shared_ptr<asio::ssl::context>> server_tls_context(const config::node_config& cfg) {
  namespace ssl = asio::ssl;
  try {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    SSL_CTX* native = ctx->native_handle();
    // Renegotiation (off here) would need reads while a stream only writes
    // (see watch_client in session.cpp).
    tls::harden(*ctx);
    SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(native, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1)
      return error(code::internal, "TLS: no usable TLS 1.2 cipher");
    KEEL_TRY(tls::use_key_pair(*ctx, cfg.tls_cert, cfg.tls_key, "TLS"));
    if (!cfg.tls_client_ca.empty()) {
      KEEL_TRY(tls::trust(*ctx, cfg.tls_client_ca, "TLS client CA"));
      ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      // Tells clients which CAs to pick a certificate for.
      if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(cfg.tls_client_ca.c_str()))
        SSL_CTX_set_client_CA_list(native, names);
      // Resumed sessions must have been verified for this purpose too.
      static constexpr unsigned char sid[] = "keel-http";
      SSL_CTX_set_session_id_context(native, sid, sizeof sid - 1);
    }
    return ctx;
  } catch (const std::exception& e) {
    return error(code::internal, std::string("cannot set up TLS: ") + e.what());
  }
}

}  // namespace

std::string_view http_request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

std::string server_metrics_text(const server_stats& st) {
  std::string o;
  auto line = [&o](const char* name, const char* help, const char* type, uint64_t v) {
    o += std::string("# HELP ") + name + ' ' + help + "\n# TYPE " + name + ' ' + type + '\n' +
         name + ' ' + std::to_string(v) + '\n';
  };
  line("keel_http_connections", "HTTP connections open now.", "gauge", st.open);
  line("keel_http_connection_limit", "HTTP connections allowed at once.", "gauge", st.limit);
  line("keel_http_connections_total", "HTTP connections accepted.", "counter", st.accepted);
  line("keel_http_connections_refused_total",
       "HTTP connections answered 503 because the limit was reached.", "counter", st.refused);
  line("keel_http_tls_handshake_failures_total",
       "TLS handshakes on the HTTP port that failed or timed out.", "counter",
       st.tls_handshake_failures);
  return o;
}

std::string error_json(std::string_view code, std::string_view message) {
  nlohmann::json j{{"error", {{"code", code}, {"message", message}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<std::string_view> bearer_token(std::string_view auth) {
  constexpr std::string_view scheme = "bearer ";
  if (auth.size() < scheme.size() || !iequals(auth.substr(0, scheme.size()), scheme))
    return std::nullopt;
  auth.remove_prefix(scheme.size());
  while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
  return auth;
}

std::optional<principal> http_server::impl::authorized(std::string_view target,
                                                       std::string_view auth) const {
  std::string_view path = target.substr(0, target.find('?'));
  for (const auto& open_path : opts.open_paths)
    if (path == open_path) return principal{"anonymous", 0, {}};
  if (opts.authenticate) return opts.authenticate(auth);
  // No authenticator: the config's token, which admits everything.
  if (token.empty()) return principal{"anonymous", all_scopes, {}};
  auto bearer = bearer_token(auth);
  if (!bearer || !same_secret(*bearer, token)) return std::nullopt;
  return principal{"admin", all_scopes, {}};
}

http_server::impl::admission http_server::impl::admit(
    const std::shared_ptr<http_detail::connection>& c) {
  // A TLS refusal holds a descriptor through a handshake: only a few at once.
  constexpr std::size_t max_refusals = 32;
  std::lock_guard lock(mu);
  if (stopping) return admission::stopping;
  if (sessions.size() < max_connections) {
    sessions.emplace(c.get(), c);
    return admission::serve;
  }
  if (!tls) return admission::refuse;
  if (refusals.size() >= max_refusals) return admission::shed;
  refusals.emplace(c.get(), c);
  return admission::refuse;
}

void http_server::impl::forget(http_detail::connection* c) {
  std::lock_guard lock(mu);
  sessions.erase(c);
  refusals.erase(c);
  if (sessions.empty() && refusals.empty()) all_closed.notify_all();
}

void http_server::impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void http_server::impl::on_accept(error_code ec, tcp::socket socket) {
  if (!acceptor.is_open()) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    // Out of descriptors and the like: back off instead of spinning.
    log_error("accept failed", ec.message());
    auto t = std::make_shared<asio::steady_timer>(acceptor.get_executor(),
                                                  std::chrono::milliseconds(100));
    t->async_wait([this, t](error_code) {
      if (acceptor.is_open()) do_accept();
    });
    return;
  }
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  auto c = http_detail::make_session(std::move(socket), *this);
  switch (admit(c)) {
    case admission::serve:
      accepted.fetch_add(1, std::memory_order_relaxed);
      c->start();
      break;
    case admission::refuse:
      // Over plain TCP nothing is read: one non-blocking write of a fixed
      // answer, then the descriptor is given back at once.
      refused.fetch_add(1, std::memory_order_relaxed);
      c->refuse();
      break;
    case admission::shed:
      refused.fetch_add(1, std::memory_order_relaxed);
      break;  // closed as `c` goes
    case admission::stopping:
      break;
  }
  do_accept();
}

void http_server::impl::run_thread() {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      log_error("handler threw", e.what());
    }
  }
}

result<std::unique_ptr<http_server>> http_server::open(const config::node_config& cfg,
                                                       server_options opts) {
  auto p = std::make_unique<impl>(cfg, std::move(opts));
  if (config::tls_enabled(cfg)) {
    auto ctx = server_tls_context(cfg);
    if (!ctx) return ctx.error();
    p->tls = std::move(*ctx);
  }
  std::string where = cfg.http_host + ":" + std::to_string(cfg.http_port);
  error_code ec;
  tcp::endpoint ep;
  auto addr = asio::ip::make_address(cfg.http_host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, cfg.http_port);
  } else {
    tcp::resolver resolver(p->ioc);
    auto found =
        resolver.resolve(cfg.http_host, std::to_string(cfg.http_port), tcp::resolver::passive, ec);
    if (ec || found.empty())
      return error(code::invalid_argument,
                   "cannot resolve http host '" + cfg.http_host + "': " + ec.message());
    ep = found.begin()->endpoint();
  }
  p->acceptor.open(ep.protocol(), ec);
  if (!ec) p->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) p->acceptor.bind(ep, ec);
  if (!ec) p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return error(code::unavailable, "cannot listen on " + where + ": " + ec.message());
  p->port = p->acceptor.local_endpoint(ec).port();
  if (ec) return error(code::unavailable, "cannot listen on " + where + ": " + ec.message());
  return std::unique_ptr<http_server>(new http_server(std::move(p)));
}

status http_server::check_tls(const config::node_config& cfg) {
  if (!config::tls_enabled(cfg)) return status::ok();
  auto ctx = server_tls_context(cfg);
  return ctx ? status::ok() : ctx.error();
}

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

http_server::~http_server() {
  stop();
}

uint16_t http_server::port() const {
  return impl_->port;
}

bool http_server::tls() const {
  return impl_->tls != nullptr;
}

server_stats http_server::stats() const {
  server_stats st;
  {
    std::lock_guard lock(impl_->mu);
    st.open = impl_->sessions.size();
  }
  st.accepted = impl_->accepted.load(std::memory_order_relaxed);
  st.refused = impl_->refused.load(std::memory_order_relaxed);
  st.tls_handshake_failures = impl_->handshake_failures.load(std::memory_order_relaxed);
  st.limit = impl_->max_connections;
  return st;
}

const std::string& http_server::host() const {
  return impl_->host;
}

void http_server::start(request_handler handler) {
  auto& m = *impl_;
  assert(!m.started && !m.stopped.load());
  m.handler = std::move(handler);
  m.started = true;
  m.work.emplace(asio::make_work_guard(m.ioc));
  m.do_accept();
  unsigned n = m.opts.threads == 0 ? 1 : m.opts.threads;
  for (unsigned i = 0; i < n; ++i) m.threads.emplace_back([&m] { m.run_thread(); });
}

void http_server::run_after(std::chrono::milliseconds delay, std::function<void()> fn) {
  auto& m = *impl_;
  std::lock_guard lock(m.door->mu);
  if (!m.door->open) return;
  auto t = std::make_shared<asio::steady_timer>(m.ioc, delay);
  t->async_wait([t, fn = std::move(fn)](error_code ec) {
    if (!ec) fn();
  });
}

void http_server::stop() {
  auto& m = *impl_;
  if (m.stopped.exchange(true)) return;
  std::vector<std::shared_ptr<http_detail::connection>> live;
  {
    std::lock_guard lock(m.mu);
    m.stopping = true;
    for (auto* map : {&m.sessions, &m.refusals})
      for (auto& [key, c] : *map) live.push_back(c);
  }
  if (m.started) {
    asio::post(m.acceptor.get_executor(), [&m] {
      error_code ignored;
      m.acceptor.close(ignored);
    });
    for (auto& c : live) c->post_shutdown();
    live.clear();
    std::unique_lock lock(m.mu);
    m.all_closed.wait_for(lock, m.opts.stop_grace,
                          [&m] { return m.sessions.empty() && m.refusals.empty(); });
  }
  {
    std::lock_guard lock(m.door->mu);
    m.door->open = false;
  }
  m.work.reset();
  m.ioc.stop();
  for (auto& t : m.threads) t.join();
  m.threads.clear();
  impl::connection_map doomed, refusals;
  {
    std::lock_guard lock(m.mu);
    doomed.swap(m.sessions);
    refusals.swap(m.refusals);
  }
  // Handlers dropped unrun may keep a session alive past stop(); its stream
  // must report closed now.
  for (auto& [key, c] : doomed) c->abandon();
  doomed.clear();
  error_code ignored;
  m.acceptor.close(ignored);
}

}  // namespace keel::net
