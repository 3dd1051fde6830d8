#include "net/http_server.hpp"

#include <array>
#include <atomic>
#include <cassert>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <deque>
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
constexpr std::string_view last_chunk = "0\r\n\r\n";
// Queued stream writes are sent together up to about this many bytes: fewer
// system calls for a fast producer, bounded copies for a backlog.
constexpr std::size_t stream_batch_bytes = 64 * 1024;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
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

using write_done = std::function<void(bool ok)>;

// A producer's callback must not take a server thread down with it.
void report(std::vector<write_done> dones, bool ok) {
  for (auto& done : dones) {
    try {
      done(ok);
    } catch (const std::exception& e) {
      log_error("stream write callback threw", e.what());
    }
  }
}

// A stream's queue, shared by the sink the producer holds and the session
// that sends it. The session drains it on its strand. `scheduled_` is true
// while a drain is posted or running (a write in flight counts), so writes
// from many threads post at most one wake-up between drains and none is
// lost: the drain clears it under the same lock that writes check it.
class stream_channel final : public stream_sink {
 public:
  struct batch {
    std::string data;
    std::vector<write_done> dones;
    bool last = false;  // the body ends after `data`
    bool empty() const { return data.empty() && dones.empty() && !last; }
  };

  stream_channel(std::shared_ptr<gate> g, std::weak_ptr<session> s)
      : door_(std::move(g)), session_(std::move(s)) {}

  void write(std::string data, write_done done) override {
    bool refused = false;
    {
      std::lock_guard lock(mu_);
      if (ended_) {
        refused = true;
      } else {
        queue_.emplace_back(std::move(data), std::move(done));
        if (std::exchange(scheduled_, true)) return;
      }
    }
    if (!refused) return wake();
    if (done) done(false);
  }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (ended_) return;
      ended_ = true;
      closing_ = true;
      if (std::exchange(scheduled_, true)) return;
    }
    wake();
  }

  bool closed() const override {
    std::lock_guard lock(mu_);
    return ended_;
  }

  // On the session's strand: what to send next. Empty when there is nothing;
  // the next write() or close() then wakes the session again.
  batch take() {
    std::lock_guard lock(mu_);
    batch b;
    while (!queue_.empty() && b.data.size() < stream_batch_bytes) {
      auto& [data, done] = queue_.front();
      b.data += data;
      if (done) b.dones.push_back(std::move(done));
      queue_.pop_front();
    }
    if (queue_.empty() && closing_ && !last_taken_) b.last = last_taken_ = true;
    if (b.empty()) scheduled_ = false;
    return b;
  }

  // The stream ended without close(), or close() cannot be honoured: queued
  // writes report false and later ones are refused. Idempotent.
  void fail() {
    std::deque<std::pair<std::string, write_done>> dropped;
    {
      std::lock_guard lock(mu_);
      ended_ = true;
      last_taken_ = true;
      dropped.swap(queue_);
    }
    std::vector<write_done> dones;
    for (auto& [data, done] : dropped)
      if (done) dones.push_back(std::move(done));
    report(std::move(dones), false);
  }

 private:
  void wake();

  const std::shared_ptr<gate> door_;
  // Not the strand itself: a sink may outlive the server, and a strand must
  // not outlive its io_context.
  const std::weak_ptr<session> session_;
  mutable std::mutex mu_;
  std::deque<std::pair<std::string, write_done>> queue_;  // guarded by mu_
  bool ended_ = false;                                    // no more writes accepted; guarded by mu_
  bool closing_ = false;     // close() asked for a proper end; guarded by mu_
  bool last_taken_ = false;  // the end was handed to the session; guarded by mu_
  bool scheduled_ = false;   // guarded by mu_
};

std::string chunk_header(std::size_t n) {
  std::array<char, 2 * sizeof(std::size_t) + 2> buf;
  auto end = std::to_chars(buf.data(), buf.data() + buf.size(), n, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  return std::string(buf.data(), end);
}

}  // namespace

struct http_server::impl {
  impl(const config::node_config& cfg, server_options o)
      : host(cfg.http_host),
        token(cfg.token),
        max_body(cfg.max_body_bytes),
        max_connections(cfg.max_connections),
        opts(std::move(o)),
        ioc(static_cast<int>(opts.threads == 0 ? 1 : opts.threads)) {
    opts.header_timeout =
        std::min(opts.header_timeout, std::chrono::milliseconds(cfg.http_header_timeout_ms));
  }

  std::string host;
  std::string token;
  uint64_t max_body;
  std::size_t max_connections;
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};
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

  // The caller's principal; nullopt when the request must be refused (401).
  std::optional<principal> authorized(std::string_view target,
                                      std::string_view authorization) const;
  // Registers a new connection; false when stopping or at the limit.
  bool add(const std::shared_ptr<session>& s, bool& at_limit);
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
// request is read, handled and answered at a time. A streamed answer is the
// connection's last: once it ends, the connection closes.
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket&& socket, http_server::impl& srv)
      : ex_(socket.get_executor()), stream_(std::move(socket)), srv_(srv) {}
  ~session() { abandon(); }

  // The connection's strand; safe to read from any thread.
  const asio::any_io_executor& executor() const { return ex_; }

  void start() {
    asio::dispatch(ex_, beast::bind_front_handler(&session::do_read, shared_from_this()));
  }

  // Closes now when idle or streaming, otherwise after the current answer is
  // written.
  void begin_shutdown() {
    if (closed_) return;
    stopping_ = true;
    if (channel_) {
      // A stream would hold stop() for as long as its producer likes.
      channel_->fail();
      if (!stream_writing_) {
        end_body_now();
        return do_close();
      }
      // The write in flight may be done already, its handler queued: it
      // then reports true. Cancelling ends it at once otherwise.
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
      return;
    }
    // A stream's head still being written: no reason to wait for it.
    if (on_stream_) {
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
    }
    if (!busy_) do_close();
  }

  // A connection past the limit: a fixed 503, written without blocking
  // (a client that does not take it loses it), then closed.
  void refuse() {
    static const std::string busy = [] {
      std::string body = error_json("unavailable", "too many connections; retry in a moment");
      return "HTTP/1.1 503 Service Unavailable\r\nServer: keel\r\n"
             "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
             "Content-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body;
    }();
    beast::error_code ec;
    auto& sock = stream_.socket();
    sock.non_blocking(true, ec);
    if (!ec) sock.write_some(asio::buffer(busy.data(), busy.size()), ec);
    sock.shutdown(tcp::socket::shutdown_both, ec);
    closed_ = true;
    stream_.close();
  }

  // Once the server's threads are gone (stop()) or the session is destroyed:
  // a stream still open reports closed.
  void abandon() {
    if (channel_) channel_->fail();
    report(std::exchange(in_flight_, {}), false);
  }

  // Sends what the stream's channel holds, one write at a time.
  void pump_stream() {
    if (closed_ || !channel_ || stream_writing_ || stopping_ || client_gone_) return;
    for (;;) {
      auto b = channel_->take();
      if (b.empty()) return;
      std::string out;
      if (chunked_ && !b.data.empty()) {
        out = chunk_header(b.data.size());
        out.reserve(out.size() + b.data.size() + 2 + (b.last ? last_chunk.size() : 0));
        out += b.data;
        out += "\r\n";
      } else {
        out = std::move(b.data);
      }
      if (b.last && chunked_) out += last_chunk;
      if (out.empty()) {
        // Nothing to send, but later writes must not report before these.
        report(std::move(b.dones), true);
        if (b.last) return do_close();
        continue;
      }
      stream_out_ = std::move(out);
      in_flight_ = std::move(b.dones);
      stream_last_ = b.last;
      stream_sent_ = 0;
      stream_writing_ = true;
      return write_stream();
    }
  }

  void deliver(http_response r) {
    if (closed_) return;
    if (r.on_stream) return start_stream(std::move(r));
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
    // A new connection has header_timeout to say what it wants; a kept-alive
    // one may idle longer between requests.
    stream_.expires_after(first_request_ ? srv_.opts.header_timeout : srv_.opts.idle_timeout);
    first_request_ = false;
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (closed_) return;
    if (ec) return on_read_error(ec);
    const auto& h = parser_->get();
    // Framing the parser would take some other way than a peer in front of
    // us may have: refused, and the connection closed, so no part of a body
    // is ever read as a request of its own.
    if (h.count(http::field::transfer_encoding) > 0) {
      if (h.count(http::field::content_length) > 0)
        return answer_and_linger(400, "invalid_argument",
                                 "malformed HTTP request: both Transfer-Encoding and "
                                 "Content-Length are set");
      auto field = h[http::field::transfer_encoding];
      std::string_view te(field.data(), field.size());
      while (!te.empty() && (te.front() == ' ' || te.front() == '\t')) te.remove_prefix(1);
      while (!te.empty() && (te.back() == ' ' || te.back() == '\t')) te.remove_suffix(1);
      if (h.count(http::field::transfer_encoding) > 1 || !iequals(te, "chunked"))
        return answer_and_linger(
            400, "invalid_argument",
            "malformed HTTP request: Transfer-Encoding \"" + std::string(te) +
                "\" is not supported; send a Content-Length or Transfer-Encoding: chunked");
    }
    // The token is checked before the body is read: a client without it
    // never makes the server buffer a body.
    auto target = h.target();
    auto auth = h[http::field::authorization];
    auto who = srv_.authorized(std::string_view(target.data(), target.size()),
                               std::string_view(auth.data(), auth.size()));
    if (!who) {
      busy_ = true;
      linger_ = true;
      http_response denied{
          401, "application/json", error_json("unauthorized", "missing or wrong bearer token"), {}};
      denied.headers.emplace_back("WWW-Authenticate", "Bearer");
      return deliver(std::move(denied));
    }
    who_ = std::move(*who);
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
    r.who = std::move(who_);

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

  void start_stream(http_response r) {
    head_ = {};
    head_.version(version_);
    head_.result(r.status);
    head_.set(http::field::server, "keel");
    head_.set(http::field::content_type, r.content_type);
    // Proxies and browsers must not hold back or replay a live feed.
    head_.set(http::field::cache_control, "no-cache");
    for (auto& [name, value] : r.headers) head_.set(name, value);
    head_.erase(http::field::content_length);
    // HTTP/1.0 has no chunks: there the body ends when the connection does.
    chunked_ = version_ >= 11;
    head_.chunked(chunked_);
    // The connection is not reused after a stream: while streaming, what the
    // client sends is only watched for its end, not parsed.
    head_.keep_alive(false);
    on_stream_ = std::move(r.on_stream);
    head_writer_.emplace(head_);
    stream_.expires_after(write_timeout);
    http::async_write_header(
        stream_, *head_writer_,
        beast::bind_front_handler(&session::on_stream_head, shared_from_this()));
  }

  void on_stream_head(beast::error_code ec, std::size_t) {
    head_writer_.reset();
    auto on_stream = std::exchange(on_stream_, nullptr);
    if (closed_) return;
    if (ec) return do_close();
    if (stopping_) {
      end_body_now();
      return do_close();
    }
    channel_ = std::make_shared<stream_channel>(srv_.door, weak_from_this());
    watch_client();
    try {
      on_stream(channel_);
    } catch (const std::exception& e) {
      log_error("stream handler threw", e.what());
      channel_->close();
    }
  }

  // One write_some at a time rather than asio::async_write: between two, a
  // stop or a departed client is seen and the rest is not sent.
  void write_stream() {
    stream_.expires_after(write_timeout);
    stream_.async_write_some(
        asio::buffer(stream_out_) + stream_sent_,
        beast::bind_front_handler(&session::on_stream_write, shared_from_this()));
  }

  void on_stream_write(beast::error_code ec, std::size_t n) {
    if (closed_) return;  // do_close reported the writes
    stream_sent_ += n;
    bool whole = !ec && stream_sent_ == stream_out_.size();
    if (!ec && !whole && !stopping_ && !client_gone_) return write_stream();
    stream_writing_ = false;
    report(std::exchange(in_flight_, {}), whole);
    if (!whole || stream_last_) return do_close();
    if (stopping_) end_body_now();
    if (stopping_ || client_gone_) return do_close();
    pump_stream();
  }

  // A client that hangs up is noticed at once, not at the producer's next
  // write, which may be a heartbeat minutes away. Reads go to the socket
  // itself, past the stream's timer: a quiet stream must not time out.
  void watch_client() {
    stream_.socket().async_read_some(
        asio::buffer(probe_),
        beast::bind_front_handler(&session::on_client_data, shared_from_this()));
  }

  void on_client_data(beast::error_code ec, std::size_t) {
    if (closed_) return;
    if (!ec) return watch_client();  // what it sends is dropped (Connection: close)
    // End of stream or reset: the client is gone (or stop() cancelled the
    // read). A write in flight may have reached the client before it left;
    // its own handler reports it and closes.
    client_gone_ = true;
    channel_->fail();
    if (!stream_writing_) do_close();
  }

  // Ends a chunked body without waiting: a client that does not take five
  // bytes at once gets a truncated body instead of holding up stop().
  void end_body_now() {
    if (!chunked_) return;
    beast::error_code ec;
    stream_.socket().non_blocking(true, ec);
    if (!ec) stream_.socket().write_some(asio::buffer(last_chunk.data(), last_chunk.size()), ec);
  }

  void do_close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    // Before forget(): once stop() sees no sessions, every sink reports
    // closed.
    abandon();
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
  principal who_;        // of the request being read, from its headers
  bool closed_ = false;
  bool first_request_ = true;

  // A streamed answer.
  http::response<http::empty_body> head_;
  std::optional<http::response_serializer<http::empty_body>> head_writer_;
  std::function<void(std::shared_ptr<stream_sink>)> on_stream_;  // until the head is out
  std::shared_ptr<stream_channel> channel_;                      // once the head is out
  bool chunked_ = false;
  bool stream_writing_ = false;
  bool stream_last_ = false;  // the write in flight ends the body
  bool client_gone_ = false;  // its end of the connection closed
  std::string stream_out_;
  std::size_t stream_sent_ = 0;        // of stream_out_
  std::vector<write_done> in_flight_;  // reported when the write in flight completes
  std::array<char, 512> probe_;
};

void stream_channel::wake() {
  std::lock_guard lock(door_->mu);
  // After stop() closed the door it fails every channel still open itself.
  if (!door_->open) return;
  if (auto s = session_.lock()) {
    auto ex = s->executor();
    asio::post(ex, [s = std::move(s)] { s->pump_stream(); });
  }
}

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
  return o;
}

std::optional<std::string_view> bearer_token(std::string_view auth) {
  constexpr std::string_view scheme = "bearer ";
  if (auth.size() < scheme.size() || !iequals(auth.substr(0, scheme.size()), scheme))
    return std::nullopt;
  auth.remove_prefix(scheme.size());
  while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
  return auth;
}

std::string error_json(std::string_view code, std::string_view message) {
  nlohmann::json j{{"error", {{"code", code}, {"message", message}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
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

bool http_server::impl::add(const std::shared_ptr<session>& s, bool& at_limit) {
  std::lock_guard lock(mu);
  at_limit = sessions.size() >= max_connections;
  if (stopping || at_limit) return false;
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
  bool at_limit = false;
  if (add(s, at_limit)) {
    accepted.fetch_add(1, std::memory_order_relaxed);
    s->start();
  } else if (at_limit) {
    // Nothing is read: one non-blocking write of a fixed answer, then the
    // descriptor is given back at once.
    refused.fetch_add(1, std::memory_order_relaxed);
    s->refuse();
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

server_stats http_server::stats() const {
  server_stats st;
  {
    std::lock_guard lock(impl_->mu);
    st.open = impl_->sessions.size();
  }
  st.accepted = impl_->accepted.load(std::memory_order_relaxed);
  st.refused = impl_->refused.load(std::memory_order_relaxed);
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
  // Handlers dropped unrun may keep a session alive past stop(); its stream
  // must report closed now.
  for (auto& [key, s] : doomed) s->abandon();
  doomed.clear();
  beast::error_code ignored;
  m.acceptor.close(ignored);
}

}  // namespace keel::net
