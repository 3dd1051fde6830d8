#include "config/node_config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <boost/asio/ip/address_v4.hpp>
#include <nlohmann/json.hpp>

namespace keel::config {

using nlohmann::json;

namespace {

// The file must open and hold at least a byte: an empty path or a
// directory would otherwise fail later, in OpenSSL, with a vaguer message.
status check_readable(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return error(code::invalid_argument, std::string("cannot read the ") + what + " file '" + path +
                                             "': " + std::strerror(errno));
  char c;
  if (!in.get(c))
    return error(code::invalid_argument,
                 std::string("the ") + what + " file '" + path + "' is empty or not a file");
  return status::ok();
}

status validate_tls(const node_config& c) {
  if (c.tls_cert.empty() != c.tls_key.empty())
    return error(code::invalid_argument,
                 c.tls_cert.empty()
                     ? "a TLS key is set (tls_key) but no certificate: give --tls-cert and "
                       "--tls-key together"
                     : "a TLS certificate is set (tls_cert) but no key: give --tls-cert and "
                       "--tls-key together");
  if (!c.tls_client_ca.empty() && c.tls_cert.empty())
    return error(code::invalid_argument,
                 "tls_client_ca needs TLS on: give --tls-cert and --tls-key as well");
  if (c.tls_cert.empty()) return status::ok();
  KEEL_TRY(check_readable(c.tls_cert, "TLS certificate"));
  KEEL_TRY(check_readable(c.tls_key, "TLS key"));
  if (!c.tls_client_ca.empty()) KEEL_TRY(check_readable(c.tls_client_ca, "TLS client CA"));
  return status::ok();
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  // A dotted IPv4 literal in 127.0.0.0/8; a name that merely starts with
  // "127." may resolve anywhere.
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address_v4(host, ec);
  return !ec && addr.is_loopback();
}

status set_http_address(node_config& c, const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size())
    return error(code::invalid_argument, "http address '" + host_port + "' is not HOST:PORT");
  std::string port = host_port.substr(colon + 1);
  char* end = nullptr;
  unsigned long p = std::strtoul(port.c_str(), &end, 10);
  if (*end != '\0' || p > 65535)
    return error(code::invalid_argument, "http address '" + host_port + "' has a bad port");
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  c.http_host = host;
  c.http_port = static_cast<uint16_t>(p);
  return status::ok();
}

result<node_config> from_json(const json& j, const std::string& source) {
  if (!j.is_object()) return error(code::invalid_argument, source + ": expected a JSON object");
  const auto& keys = config_keys();
  node_config c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    auto key = std::find_if(keys.begin(), keys.end(),
                            [&](const config_key& k) { return it.key() == k.name; });
    if (key == keys.end())
      return error(code::invalid_argument, source + ": unknown key \"" + it.key() + "\"");
    KEEL_TRY(key->read(it.value(), source + ": \"" + it.key() + "\"", c));
  }
  return c;
}

result<node_config> load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return error(code::not_found, "cannot open config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return error(code::invalid_argument, path + ": not valid JSON");
  return from_json(j, path);
}

status validate(const node_config& c) {
  if (c.data_dir.empty())
    return error(code::invalid_argument, "no data directory: pass --data DIR");
  if (c.http_host.empty()) return error(code::invalid_argument, "http host is empty");
  if (!is_loopback_host(c.http_host) && c.token.empty())
    return error(code::invalid_argument,
                 "refusing to listen on " + c.http_host +
                     " without a bearer token: pass --token or set KEEL_TOKEN");
  if (c.max_body_bytes < 1024)
    return error(code::invalid_argument, "max_body_bytes must be at least 1024");
  if (c.idle_ms == 0) return error(code::invalid_argument, "idle_ms must be at least 1");
  if (c.retention_interval_ms == 0)
    return error(code::invalid_argument, "retention_interval_ms must be at least 1");
  if (c.tool_uid == 0 || c.tool_gid == 0)
    return error(code::invalid_argument, "tool_uid and tool_gid must not be 0 (root)");
  if (c.effect_threads == 0 || c.effect_threads > 1024)
    return error(code::invalid_argument, "effect_threads must be from 1 to 1024");
  if (c.max_connections == 0)
    return error(code::invalid_argument, "max_connections must be at least 1");
  if (c.http_header_timeout_ms == 0)
    return error(code::invalid_argument, "http_header_timeout_ms must be at least 1");
  if (c.store_open_files != 0 && c.store_open_files < 16)
    return error(code::invalid_argument,
                 "store_open_files must be 0 (sized at start) or at least 16");
  if (c.max_page_bytes < 4096)
    return error(code::invalid_argument, "max_page_bytes must be at least 4096");
  return validate_tls(c);
}

}  // namespace keel::config
