#include "net/http_client.hpp"

#include <charconv>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace keel::net {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Failures that mean the server closed a kept-alive connection before it
// read our request.
bool closed_by_peer(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted || ec == asio::error::not_connected;
}

}  // namespace

result<server_address> parse_url(std::string_view url) {
  std::string_view s = url;
  if (s.rfind("http://", 0) == 0) {
    s.remove_prefix(7);
  } else if (auto scheme = s.find("://"); scheme != std::string_view::npos) {
    return error(code::invalid_argument,
                 "server URL '" + std::string(url) + "': only http:// " + "is supported");
  }
  if (auto slash = s.find('/'); slash != std::string_view::npos) {
    if (s.substr(slash) != "/")
      return error(code::invalid_argument,
                   "server URL '" + std::string(url) + "' must not have a path");
    s = s.substr(0, slash);
  }
  server_address out;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos)
      return error(code::invalid_argument, "server URL '" + std::string(url) + "': missing ']'");
    out.host = std::string(s.substr(1, close - 1));
    s.remove_prefix(close + 1);
    if (!s.empty() && s.front() != ':')
      return error(code::invalid_argument, "server URL '" + std::string(url) + "': bad port");
    if (!s.empty()) port = s.substr(1);
  } else {
    auto colon = s.rfind(':');
    out.host = std::string(s.substr(0, colon));
    if (colon != std::string_view::npos) port = s.substr(colon + 1);
  }
  if (out.host.empty())
    return error(code::invalid_argument, "server URL '" + std::string(url) + "' has no host");
  if (s.find(':') != std::string_view::npos || !port.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p == 0 ||
        p > 65535)
      return error(code::invalid_argument, "server URL '" + std::string(url) +
                                               "' has a bad port '" + std::string(port) + "'");
    out.port = static_cast<uint16_t>(p);
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() + 8);
  for (unsigned char c : s) {
    if (unreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

struct http_client::impl {
  asio::io_context ioc{1};
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  std::string host;
  uint16_t port = 0;
  std::string host_header;
  tcp::resolver::results_type endpoints;
  bool connected = false;
  bool used = false;  // a response came back on this connection
  std::chrono::milliseconds timeout{30'000};
  header_list fixed_headers;

  std::string where() const { return host + ":" + std::to_string(port); }

  // Starts one asynchronous operation and runs the private io_context until
  // it (and its deadline timer) are done: synchronous I/O with a timeout.
  template <class Start>
  beast::error_code await(Start&& start) {
    beast::error_code result = asio::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  void drop() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
    buffer.clear();
    connected = false;
    used = false;
  }

  status open() {
    drop();
    if (endpoints.empty()) {
      beast::error_code ec;
      tcp::resolver resolver(ioc);
      endpoints = resolver.resolve(host, std::to_string(port), ec);
      if (ec) return error(code::unavailable, "cannot resolve " + host + ": " + ec.message());
    }
    stream.expires_after(timeout);
    auto ec = await([&](auto handler) { stream.async_connect(endpoints, std::move(handler)); });
    if (ec == beast::error::timeout)
      return error(code::timeout, "connecting to " + where() + " timed out");
    if (ec) return error(code::unavailable, "cannot connect to " + where() + ": " + ec.message());
    stream.socket().set_option(tcp::no_delay(true), ec);
    connected = true;
    return status::ok();
  }

  struct attempt {
    beast::error_code ec;
    bool got_some = false;  // any byte of a response arrived
    response res;
    bool keep_alive = true;
  };

  attempt exchange(http::request<http::string_body>& req) {
    attempt a;
    // One deadline for writing the request and reading the response.
    stream.expires_after(timeout);
    a.ec = await([&](auto handler) { http::async_write(stream, req, std::move(handler)); });
    if (a.ec) return a;
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    a.ec =
        await([&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
    a.got_some = parser.got_some();
    if (a.ec) return a;
    auto res = parser.release();
    a.res.status = res.result_int();
    a.res.content_type = std::string(res[http::field::content_type]);
    a.res.body = std::move(res.body());
    a.keep_alive = res.keep_alive();
    return a;
  }
};

http_client::http_client() : impl_(std::make_unique<impl>()) {}
http_client::~http_client() = default;
http_client::http_client(http_client&&) noexcept = default;
http_client& http_client::operator=(http_client&&) noexcept = default;

status http_client::connect(std::string host, uint16_t port) {
  auto& m = *impl_;
  m.host = std::move(host);
  m.port = port;
  m.endpoints = {};
  bool v6 = m.host.find(':') != std::string::npos;
  m.host_header = (v6 ? "[" + m.host + "]" : m.host) + ":" + std::to_string(port);
  return m.open();
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
                                                   const header_list& headers) {
  auto& m = *impl_;
  if (m.host.empty()) return error(code::invalid_argument, "http client: connect() first");

  http::request<http::string_body> req;
  beast::string_view method_sv(method.data(), method.size());
  auto verb = http::string_to_verb(method_sv);
  if (verb == http::verb::unknown)
    req.method_string(method_sv);
  else
    req.method(verb);
  req.target(beast::string_view(target.data(), target.size()));
  req.version(11);
  req.set(http::field::host, m.host_header);
  req.set(http::field::user_agent, "keel");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  for (const auto& [k, v] : m.fixed_headers) req.set(k, v);
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = std::string(body);
  req.keep_alive(true);
  req.prepare_payload();

  for (int tries = 0;; ++tries) {
    bool reused = m.connected && m.used;
    if (!m.connected) {
      if (auto s = m.open(); !s) return s;
    }
    auto a = m.exchange(req);
    if (!a.ec) {
      m.used = true;
      if (!a.keep_alive) m.drop();
      return std::move(a.res);
    }
    m.drop();
    if (reused && tries == 0 && !a.got_some && closed_by_peer(a.ec)) continue;
    if (a.ec == beast::error::timeout)
      return error(code::timeout, std::string(method) + " " + std::string(target) + " on " +
                                      m.where() + " timed out after " +
                                      std::to_string(m.timeout.count()) + " ms");
    return error(code::unavailable, std::string(method) + " " + std::string(target) + " on " +
                                        m.where() + " failed: " + a.ec.message());
  }
}

void http_client::close() {
  impl_->drop();
}

}  // namespace keel::net
