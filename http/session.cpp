// One server connection: reading requests, the limits and the token check,
// answers whole or streamed. The same session runs over plain TCP and over
// TLS: it is a template over the stream, and the few places where the two
// differ (the handshake, a refusal, a write that must not wait) say so.

#include <array>
#include <charconv>
#include <chrono>
#include <optional>
#include <string>
#include <type_traits>

#include <openssl/ssl.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "base/log.hpp"
#include "http/server_impl.hpp"

namespace keel::net::http_detail {

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

std::string chunk_header(std::size_t n) {
  std::array<char, 2 * sizeof(std::size_t) + 2> buf;
  auto end = std::to_chars(buf.data(), buf.data() + buf.size(), n, 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  return std::string(buf.data(), end);
}

http_response too_many_connections() {
  return {503,
          "application/json",
          error_json("unavailable", "too many connections; retry in a moment"),
          {{"Retry-After", "1"}}};
}

using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// Every member runs on the connection's strand; at most one request is
// read, handled and answered at a time. A streamed answer is the
// connection's last: once it ends, the connection closes.
template <class Stream>
class session final : public connection {
  static constexpr bool secure = std::is_same_v<Stream, tls_stream>;

 public:
  // `tls` is the server's TLS context, for a TLS session only.
  template <class... TlsContext>
  session(http_server::impl& srv, tcp::socket&& socket, TlsContext&... tls)
      : ex_(socket.get_executor()),
        stream_(std::move(socket), tls...),
        srv_(srv),
        first_deadline_(std::chrono::steady_clock::now() + srv.opts.header_timeout) {}
  ~session() override { abandon(); }

  void start() override { asio::dispatch(ex_, beast::bind_front_handler(&session::begin, self())); }

  void refuse() override {
    if constexpr (secure) {
      // A TLS client can read nothing before the handshake: the 503 follows
      // it, under the same deadline as a first request.
      refusing_ = true;
      start();
    } else {
      // A fixed answer written without blocking (a client that does not
      // take it loses it), then closed: nothing is read.
      static const std::string busy = [] {
        auto r = too_many_connections();
        return "HTTP/1.1 503 Service Unavailable\r\nServer: keel\r\n"
               "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
               "Content-Length: " +
               std::to_string(r.body.size()) + "\r\n\r\n" + r.body;
      }();
      write_now(busy);
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      closed_ = true;
      lowest().close();
    }
  }

  void post_shutdown() override {
    asio::post(ex_, [s = self()] { s->begin_shutdown(); });
  }

  void abandon() override {
    if (channel_) channel_->fail();
    report(std::exchange(in_flight_, {}), false);
  }

  void post_deliver(http_response r) override {
    asio::post(ex_, [s = self(), r = std::move(r)]() mutable { s->deliver(std::move(r)); });
  }

  void post_pump() override {
    asio::post(ex_, [s = self()] { s->pump_stream(); });
  }

 private:
  std::shared_ptr<session> self() { return std::static_pointer_cast<session>(shared_from_this()); }
  // The TCP stream with the timer: the stream itself, or under TLS.
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void begin() {
    if (closed_) return;
    if constexpr (secure) {
      // A client that connects and never completes the handshake is closed
      // like one that never sends its headers: one deadline covers both.
      lowest().expires_at(first_deadline_);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              beast::bind_front_handler(&session::on_handshake, self()));
    } else {
      do_read();
    }
  }

  void on_handshake(beast::error_code ec) {
    if (closed_) return;
    if (ec) {
      // An untrusted or missing client certificate, plain HTTP on the TLS
      // port, a timeout: nothing to answer. But the alert OpenSSL sent must
      // reach the client: under TLS 1.3 a client's side of the handshake is
      // done before the server checks its certificate, and its first request
      // may already be here; closing with it unread would reset the
      // connection and could lose the alert that says why.
      srv_.handshake_failures.fetch_add(1, std::memory_order_relaxed);
      return linger();
    }
    if (refusing_) {
      busy_ = true;
      linger_ = true;
      return deliver(too_many_connections());
    }
    do_read();
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
      lowest().socket().cancel(ignored);
      return;
    }
    // A stream's head still being written: no reason to wait for it.
    if (on_stream_) {
      beast::error_code ignored;
      lowest().socket().cancel(ignored);
    }
    if (!busy_) do_close();
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

  // At debug, one record per answer: never a header (the token) or a
  // body. The clock runs from the request's headers.
  void log_answer(unsigned status) {
    if (!log::enabled(log::level::debug)) return;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - req_start_)
                        .count();
    log::debug("request", {{"method", req_method_.empty() ? "-" : req_method_},
                           {"path", req_path_.empty() ? "-" : req_path_},
                           {"status", status},
                           {"ms", static_cast<double>(us) / 1000.0},
                           {"principal", req_who_.empty() ? "-" : req_who_}});
  }

  void deliver(http_response r) {
    if (closed_) return;
    log_answer(r.status);
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
    lowest().expires_after(write_timeout);
    http::async_write(stream_, res_, beast::bind_front_handler(&session::on_write, self()));
  }

  void do_read() {
    if (closed_) return;
    if (stopping_) return do_close();
    parser_.emplace();
    parser_->body_limit(srv_.max_body);
    // A new connection has header_timeout to say what it wants; a kept-alive
    // one may idle longer between requests.
    if (first_request_)
      lowest().expires_at(first_deadline_);
    else
      lowest().expires_after(srv_.opts.idle_timeout);
    first_request_ = false;
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&session::on_header, self()));
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
    if (log::enabled(log::level::debug)) {
      req_start_ = std::chrono::steady_clock::now();
      req_method_ = std::string(h.method_string());
      const std::string_view t(target.data(), target.size());
      req_path_ = std::string(t.substr(0, t.find('?')));
      req_who_.clear();
    }
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
    if (log::enabled(log::level::debug)) req_who_ = who_.name;
    // curl and others wait for this before sending a larger body.
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      asio::async_write(stream_, asio::buffer(continue_line.data(), continue_line.size()),
                        beast::bind_front_handler(&session::on_continue, self()));
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
                     beast::bind_front_handler(&session::on_read, self()));
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
    do_close();  // end of stream, timeout, reset, shutdown, a TLS error
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
    lowest().expires_never();

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
    lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return do_close();
    lowest().expires_after(linger_timeout);
    drain();
  }

  // What is drained is dropped, so it is read past TLS, from the TCP stream:
  // that also works after a failed handshake.
  void drain() {
    buffer_.consume(buffer_.size());
    lowest().async_read_some(buffer_.prepare(64 * 1024),
                             beast::bind_front_handler(&session::on_drain, self()));
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
    lowest().expires_after(write_timeout);
    http::async_write_header(stream_, *head_writer_,
                             beast::bind_front_handler(&session::on_stream_head, self()));
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
    lowest().expires_after(write_timeout);
    stream_.async_write_some(asio::buffer(stream_out_) + stream_sent_,
                             beast::bind_front_handler(&session::on_stream_write, self()));
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
  // Under TLS too: what the client sends is dropped unread either way, and
  // nothing from here on reads through TLS (renegotiation is off).
  void watch_client() {
    lowest().socket().async_read_some(asio::buffer(probe_),
                                      beast::bind_front_handler(&session::on_client_data, self()));
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
    if (chunked_) write_now(last_chunk);
  }

  // Writes what the socket takes at once, and drops the rest. REQUIRES: no
  // write in flight.
  void write_now(std::string_view bytes) {
    beast::error_code ec;
    lowest().socket().non_blocking(true, ec);
    if (ec) return;
    auto buf = asio::buffer(bytes.data(), bytes.size());
    // Through TLS: a would-block from the socket ends the write, not waits.
    if constexpr (secure)
      stream_.write_some(buf, ec);
    else
      lowest().socket().write_some(buf, ec);
  }

  // Without a TLS close_notify: every body keeld sends is delimited
  // (Content-Length or chunked) but an HTTP/1.0 stream's, and the alert
  // would need a write that may wait.
  void do_close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
    // Before forget(): once stop() sees no sessions, every sink reports
    // closed.
    abandon();
    srv_.forget(this);
  }

  const asio::any_io_executor ex_;  // the connection's strand
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  http_server::impl& srv_;
  // The handshake and the first request's headers must be in by then.
  const std::chrono::steady_clock::time_point first_deadline_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool busy_ = false;  // a request is being handled or answered
  bool stopping_ = false;
  bool linger_ = false;  // close after the answer, draining the rest
  principal who_;        // of the request being read, from its headers
  // For the request's log record, set from its headers at debug level.
  std::chrono::steady_clock::time_point req_start_ = std::chrono::steady_clock::now();
  std::string req_method_, req_path_, req_who_;
  bool closed_ = false;
  bool first_request_ = true;
  bool refusing_ = false;  // past the limit: a 503 after the handshake

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

}  // namespace

std::shared_ptr<connection> make_session(tcp::socket&& socket, http_server::impl& srv) {
  if (srv.tls) return std::make_shared<session<tls_stream>>(srv, std::move(socket), *srv.tls);
  return std::make_shared<session<beast::tcp_stream>>(srv, std::move(socket));
}

}  // namespace keel::net::http_detail
