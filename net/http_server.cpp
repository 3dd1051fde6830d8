#include "net/http_server.hpp"

#include <atomic>
#include <cassert>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace keel::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr std::chrono::seconds write_timeout{30};
// How long a connection answered with 400/413 keeps reading (and dropping)
// what the client is still sending, so the client sees the answer instead
// of a reset.
constexpr std::chrono::seconds linger_timeout{2};
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Compares in time independent of where the strings differ.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

void log_error(const char* what, const std::string& detail) {
  std::fprintf(stderr, "keel http: %s: %s\n", what, detail.c_str());
}

// Closed by stop() before the io_context stops; respond_fn and run_after go
// through it so nothing reaches an io_context that no longer runs.
struct gate {
  std::mutex mu;
  bool open = true;
};

class session;

}  // namespace

struct http_server::impl {
  impl(const config::node_config& cfg, server_options o)
      : host(cfg.http_host),
        token(cfg.token),
        max_body(cfg.max_body_bytes),
        opts(std::move(o)),
        ioc(static_cast<int>(opts.threads == 0 ? 1 : opts.threads)) {}

  std::string host;
  std::string token;
  uint64_t max_body;
  server_options opts;
  uint16_t port = 0;
  request_handler handler;

  // Declared before everything that holds sockets or timers: destroyed last.
  asio::io_context ioc;
  std::shared_ptr<gate> door = std::make_shared<gate>();
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  bool started = false;
  std::atomic<bool> stopped{false};

  std::mutex mu;
  std::condition_variable all_closed;
  bool stopping = false;                                            // guarded by mu
  std::unordered_map<session*, std::shared_ptr<session>> sessions;  // guarded by mu

  bool authorized(const http_request& r) const;
  bool add(const std::shared_ptr<session>& s);
  void forget(session* s);
  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void run_thread();
};

namespace {

// One request's way back to its connection; shared by every copy of the
// respond_fn the handler got.
class exchange {
 public:
  exchange(std::shared_ptr<gate> g, std::weak_ptr<session> s)
      : door_(std::move(g)), session_(std::move(s)) {}
  ~exchange();
  exchange(const exchange&) = delete;
  exchange& operator=(const exchange&) = delete;

  void respond(http_response r);

 private:
  std::shared_ptr<gate> door_;
  std::weak_ptr<session> session_;
  std::atomic<bool> done_{false};
};

// One connection. Every member runs on the connection's strand; at most one
// request is read, handled and answered at a time.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket&& socket, http_server::impl& srv)
      : ex_(socket.get_executor()), stream_(std::move(socket)), srv_(srv) {}

  // The connection's strand; safe to read from any thread.
  const asio::any_io_executor& executor() const { return ex_; }

  void start() {
    asio::dispatch(ex_, beast::bind_front_handler(&session::do_read, shared_from_this()));
  }

  // Closes now when idle, otherwise after the current answer is written.
  void begin_shutdown() {
    stopping_ = true;
    if (!busy_) do_close();
  }

  void deliver(http_response r) {
    if (closed_) return;
    res_ = {};
    res_.version(version_);
    res_.result(r.status);
    res_.set(http::field::server, "keel");
    res_.set(http::field::content_type, r.content_type);
    for (auto& [name, value] : r.headers) res_.set(name, value);
    res_.body() = std::move(r.body);
    res_.keep_alive(keep_alive_ && !stopping_ && !linger_);
    res_.prepare_payload();
    stream_.expires_after(write_timeout);
    http::async_write(stream_, res_,
                      beast::bind_front_handler(&session::on_write, shared_from_this()));
  }

 private:
  void do_read() {
    if (closed_) return;
    if (stopping_) return do_close();
    parser_.emplace();
    parser_->body_limit(srv_.max_body);
    stream_.expires_after(srv_.opts.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (closed_) return;
    if (ec) return on_read_error(ec);
    // curl and others wait for this before sending a larger body.
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      asio::async_write(stream_, asio::buffer(continue_line.data(), continue_line.size()),
                        beast::bind_front_handler(&session::on_continue, shared_from_this()));
      return;
    }
    read_body();
  }

  void on_continue(beast::error_code ec, std::size_t) {
    if (closed_) return;
    if (ec) return do_close();
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return on_read({}, 0);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&session::on_read, shared_from_this()));
  }

  void on_read_error(beast::error_code ec) {
    static const auto& http_errors = http::make_error_code(http::error::bad_target).category();
    if (ec == http::error::body_limit) {
      return answer_and_linger(
          413, "too_large",
          "request body is larger than " + std::to_string(srv_.max_body) + " bytes");
    }
    if (&ec.category() == &http_errors && ec != http::error::end_of_stream &&
        ec != http::error::partial_message)
      return answer_and_linger(400, "invalid_argument", "malformed HTTP request: " + ec.message());
    do_close();  // end of stream, timeout, reset, shutdown
  }

  void answer_and_linger(unsigned status, std::string_view code, const std::string& message) {
    busy_ = true;
    linger_ = true;
    deliver({status, "application/json", error_json(code, message), {}});
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (closed_) return;
    if (ec) return on_read_error(ec);
    auto req = parser_->release();
    parser_.reset();
    version_ = req.version();
    keep_alive_ = req.keep_alive();
    busy_ = true;
    stream_.expires_never();

    http_request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.body = std::move(req.body());
    for (const auto& f : req)
      r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));

    if (!srv_.authorized(r)) {
      http_response denied{
          401, "application/json", error_json("unauthorized", "missing or wrong bearer token"), {}};
      denied.headers.emplace_back("WWW-Authenticate", "Bearer");
      return deliver(std::move(denied));
    }
    auto ex = std::make_shared<exchange>(srv_.door, weak_from_this());
    try {
      srv_.handler(std::move(r), [ex](http_response resp) { ex->respond(std::move(resp)); });
    } catch (const std::exception& e) {
      log_error("request handler threw", e.what());
      ex->respond({500, "application/json", error_json("internal", e.what()), {}});
    }
  }

  void on_write(beast::error_code ec, std::size_t) {
    busy_ = false;
    if (closed_) return;
    if (ec) return do_close();
    if (linger_) return linger();
    if (!res_.keep_alive()) return do_close();
    res_ = {};
    do_read();
  }

  void linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return do_close();
    stream_.expires_after(linger_timeout);
    drain();
  }

  void drain() {
    buffer_.consume(buffer_.size());
    stream_.async_read_some(buffer_.prepare(64 * 1024),
                            beast::bind_front_handler(&session::on_drain, shared_from_this()));
  }

  void on_drain(beast::error_code ec, std::size_t) {
    if (closed_) return;
    if (ec || stopping_) return do_close();
    drain();
  }

  void do_close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    srv_.forget(this);
  }

  const asio::any_io_executor ex_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  http_server::impl& srv_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool busy_ = false;  // a request is being handled or answered
  bool stopping_ = false;
  bool linger_ = false;  // close after the answer, draining the rest
  bool closed_ = false;
};

exchange::~exchange() {
  if (!done_.load())
    respond({500,
             "application/json",
             error_json("internal", "the request was dropped without an answer"),
             {}});
}

void exchange::respond(http_response r) {
  if (done_.exchange(true)) return;
  std::lock_guard lock(door_->mu);
  if (!door_->open) return;
  if (auto s = session_.lock()) {
    auto ex = s->executor();
    asio::post(ex, [s = std::move(s), r = std::move(r)]() mutable { s->deliver(std::move(r)); });
  }
}

}  // namespace

std::string_view http_request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

std::string error_json(std::string_view code, std::string_view message) {
  nlohmann::json j{{"error", {{"code", code}, {"message", message}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool http_server::impl::authorized(const http_request& r) const {
  if (token.empty()) return true;
  std::string_view path = r.target;
  path = path.substr(0, path.find('?'));
  for (const auto& open_path : opts.open_paths)
    if (path == open_path) return true;
  std::string_view auth = r.header("authorization");
  constexpr std::string_view scheme = "bearer ";
  if (auth.size() < scheme.size() || !iequals(auth.substr(0, scheme.size()), scheme)) return false;
  auth.remove_prefix(scheme.size());
  while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
  return same_secret(auth, token);
}

bool http_server::impl::add(const std::shared_ptr<session>& s) {
  std::lock_guard lock(mu);
  if (stopping) return false;
  sessions.emplace(s.get(), s);
  return true;
}

void http_server::impl::forget(session* s) {
  std::lock_guard lock(mu);
  sessions.erase(s);
  if (sessions.empty()) all_closed.notify_all();
}

void http_server::impl::do_accept() {
  acceptor.async_accept(asio::make_strand(ioc), beast::bind_front_handler(&impl::on_accept, this));
}

void http_server::impl::on_accept(beast::error_code ec, tcp::socket socket) {
  if (!acceptor.is_open()) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    // Out of descriptors and the like: back off instead of spinning.
    log_error("accept failed", ec.message());
    auto t = std::make_shared<asio::steady_timer>(acceptor.get_executor(),
                                                  std::chrono::milliseconds(100));
    t->async_wait([this, t](beast::error_code) {
      if (acceptor.is_open()) do_accept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  auto s = std::make_shared<session>(std::move(socket), *this);
  if (add(s)) s->start();
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
  std::string where = cfg.http_host + ":" + std::to_string(cfg.http_port);
  beast::error_code ec;
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

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

http_server::~http_server() {
  stop();
}

uint16_t http_server::port() const {
  return impl_->port;
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
  t->async_wait([t, fn = std::move(fn)](beast::error_code ec) {
    if (!ec) fn();
  });
}

void http_server::stop() {
  auto& m = *impl_;
  if (m.stopped.exchange(true)) return;
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard lock(m.mu);
    m.stopping = true;
    for (auto& [key, s] : m.sessions) live.push_back(s);
  }
  if (m.started) {
    asio::post(m.acceptor.get_executor(), [&m] {
      beast::error_code ignored;
      m.acceptor.close(ignored);
    });
    for (auto& s : live) asio::post(s->executor(), [s] { s->begin_shutdown(); });
    live.clear();
    std::unique_lock lock(m.mu);
    m.all_closed.wait_for(lock, m.opts.stop_grace, [&m] { return m.sessions.empty(); });
  }
  {
    std::lock_guard lock(m.door->mu);
    m.door->open = false;
  }
  m.work.reset();
  m.ioc.stop();
  for (auto& t : m.threads) t.join();
  m.threads.clear();
  decltype(m.sessions) doomed;
  {
    std::lock_guard lock(m.mu);
    doomed.swap(m.sessions);
  }
  doomed.clear();
  beast::error_code ignored;
  m.acceptor.close(ignored);
}

}  // namespace keel::net
