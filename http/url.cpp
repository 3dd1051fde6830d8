#include "http/url.hpp"

#include <charconv>

namespace keel::net {

namespace {

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

result<url_target> parse_url_target(std::string_view url) {
  std::string_view s = url;
  url_target out;
  if (s.rfind("http://", 0) == 0) {
    s.remove_prefix(7);
  } else if (s.rfind("https://", 0) == 0) {
    s.remove_prefix(8);
    out.server.scheme = "https";
    out.server.port = 443;
  } else if (auto scheme = s.find("://"); scheme != std::string_view::npos) {
    return error(code::invalid_argument,
                 "server URL '" + std::string(url) + "': only http:// and https:// are supported");
  }
  if (auto slash = s.find('/'); slash != std::string_view::npos) {
    out.target = std::string(s.substr(slash));
    s = s.substr(0, slash);
  }
  auto& server = out.server;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos)
      return error(code::invalid_argument, "server URL '" + std::string(url) + "': missing ']'");
    server.host = std::string(s.substr(1, close - 1));
    s.remove_prefix(close + 1);
    if (!s.empty() && s.front() != ':')
      return error(code::invalid_argument, "server URL '" + std::string(url) + "': bad port");
    if (!s.empty()) port = s.substr(1);
  } else {
    auto colon = s.rfind(':');
    server.host = std::string(s.substr(0, colon));
    if (colon != std::string_view::npos) port = s.substr(colon + 1);
  }
  if (server.host.empty())
    return error(code::invalid_argument, "server URL '" + std::string(url) + "' has no host");
  if (s.find(':') != std::string_view::npos || !port.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p == 0 ||
        p > 65535)
      return error(code::invalid_argument, "server URL '" + std::string(url) +
                                               "' has a bad port '" + std::string(port) + "'");
    server.port = static_cast<uint16_t>(p);
  }
  return out;
}

result<server_address> parse_url(std::string_view url) {
  auto parsed = parse_url_target(url);
  if (!parsed) return parsed.error();
  if (parsed->target != "/")
    return error(code::invalid_argument,
                 "server URL '" + std::string(url) + "' must not have a path");
  return std::move(parsed->server);
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

result<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
      int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
      if (lo < 0)
        return error(code::invalid_argument,
                     "bad percent-encoding in '" + std::string(s) + "': '%' needs two hex digits");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

result<target> parse_target(std::string_view t) {
  t = t.substr(0, t.find('#'));
  auto q = t.find('?');
  std::string_view path = t.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
  if (path.empty() || path.front() != '/')
    return error(code::invalid_argument, "request target must start with '/'");
  target out;
  path.remove_prefix(1);
  while (!path.empty()) {
    auto slash = path.find('/');
    out.segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
    if (path.empty()) out.segments.emplace_back();  // trailing '/'
  }
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (piece.empty()) continue;
    auto eq = piece.find('=');
    auto k = percent_decode(piece.substr(0, eq), true);
    if (!k) return k.error();
    auto v = percent_decode(eq == std::string_view::npos ? "" : piece.substr(eq + 1), true);
    if (!v) return v.error();
    out.query.emplace_back(std::move(*k), std::move(*v));
  }
  return out;
}

}  // namespace keel::net
