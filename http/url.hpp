#pragma once
// URLs, in one place for both ends: the client's server addresses and
// request targets, and the server's parsing of a request target; the
// percent-encoding both use.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.hpp"

namespace keel::net {

struct server_address {
  std::string scheme = "http";  // "http" or "https"
  std::string host;
  uint16_t port = 80;

  bool tls() const { return scheme == "https"; }
};

// "http://127.0.0.1:7070", "127.0.0.1:7070" (http), "http://[::1]:7070/",
// "http://h" (port 80), "https://h" (port 443). Errors: invalid_argument
// (other schemes, a path, a bad port).
result<server_address> parse_url(std::string_view url);

// A URL split into the server and the request target (path and query):
// "https://api.openai.com/v1" -> {{"https", "api.openai.com", 443}, "/v1"}.
// The target is "/" when the URL has none. Errors: as parse_url, but a path
// is allowed.
struct url_target {
  server_address server;
  std::string target = "/";
};
result<url_target> parse_url_target(std::string_view url);

// Encodes every byte but A-Z a-z 0-9 - . _ ~ as %XX, so an agent name such as
// "acct/alice" becomes one path segment, "acct%2Falice".
std::string percent_encode(std::string_view s);

// Decodes %XX; with `plus_is_space` (query strings) '+' is a space too.
// Errors: invalid_argument for a '%' without two hex digits after it.
result<std::string> percent_decode(std::string_view s, bool plus_is_space);

// A request target split into raw (still encoded) path segments and decoded
// query parameters. Views point into the request's target.
struct target {
  std::vector<std::string_view> segments;
  std::vector<std::pair<std::string, std::string>> query;

  const std::string* param(std::string_view name) const {
    for (const auto& [k, v] : query)
      if (k == name) return &v;
    return nullptr;
  }
};
// "/v1/agents/a%2Fb?wait=1#x" -> segments {"v1", "agents", "a%2Fb"}, query
// {{"wait", "1"}}. Errors: invalid_argument (no leading '/', bad encoding
// in the query).
result<target> parse_target(std::string_view t);

}  // namespace keel::net
