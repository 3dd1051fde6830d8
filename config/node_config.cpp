#include "config/node_config.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <boost/asio/ip/address_v4.hpp>
#include <nlohmann/json.hpp>

#include "base/principal.hpp"
#include "config/json_fields.hpp"
#include "config/secret_refs.hpp"

namespace keel::config {

using nlohmann::json;

namespace {

using detail::read_string;
using detail::read_uint;

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

// "secrets": {"NAME": {"file": "/path"} | {"env": "VAR"}, ...}
status read_secrets(const json& v, const std::string& where,
                    std::map<std::string, secret_origin>& out) {
  if (!v.is_object()) return error(code::invalid_argument, where + ": expected an object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string at = where + ": \"" + it.key() + "\"";
    if (status s = check_secret_name(it.key()); !s)
      return error(code::invalid_argument, at + ": " + s.message());
    const json& src = it.value();
    const bool file = src.is_object() && src.size() == 1 && src.contains("file");
    const bool env = src.is_object() && src.size() == 1 && src.contains("env");
    if (!file && !env)
      return error(code::invalid_argument,
                   at + ": expected {\"file\": \"/path\"} or {\"env\": \"VARIABLE\"}");
    secret_origin o;
    o.from = file ? secret_origin::kind::file : secret_origin::kind::env;
    KEEL_TRY(read_string(src.begin().value(), at + ": \"" + src.begin().key() + "\"", o.where));
    if (o.where.empty())
      return error(code::invalid_argument,
                   at + ": the " + std::string(file ? "file" : "variable") + " name is empty");
    out[it.key()] = std::move(o);
  }
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
  node_config c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    std::string where = source + ": \"" + k + "\"";
    status s;
    if (k == "data_dir")
      s = read_string(v, where, c.data_dir);
    else if (k == "http") {
      std::string hp;
      s = read_string(v, where, hp);
      if (s) {
        s = set_http_address(c, hp);
        if (!s) s = error(code::invalid_argument, where + ": " + s.message());
      }
    } else if (k == "token")
      s = read_string(v, where, c.token);
    else if (k == "anonymous_scopes") {
      auto bits = scopes_from_json(v);
      if (!bits)
        s = error(code::invalid_argument, where + ": " + bits.error().message());
      else
        c.anonymous_scopes = *bits;
    } else if (k == "tls_cert")
      s = read_string(v, where, c.tls_cert);
    else if (k == "tls_key")
      s = read_string(v, where, c.tls_key);
    else if (k == "tls_client_ca")
      s = read_string(v, where, c.tls_client_ca);
    else if (k == "idle_ms")
      s = read_uint(v, where, c.idle_ms);
    else if (k == "max_body_bytes")
      s = read_uint(v, where, c.max_body_bytes);
    else if (k == "max_unacked_per_agent")
      s = read_uint(v, where, c.max_unacked_per_agent);
    else if (k == "scheduler_threads")
      s = read_uint(v, where, c.scheduler_threads);
    else if (k == "scheduler_poll_attempts")
      s = read_uint(v, where, c.scheduler_poll_attempts);
    else if (k == "block_cache_bytes")
      s = read_uint(v, where, c.block_cache_bytes);
    else if (k == "effect_threads")
      s = read_uint(v, where, c.effect_threads);
    else if (k == "max_connections")
      s = read_uint(v, where, c.max_connections);
    else if (k == "http_header_timeout_ms")
      s = read_uint(v, where, c.http_header_timeout_ms);
    else if (k == "store_open_files")
      s = read_uint(v, where, c.store_open_files);
    else if (k == "reserved_disk_bytes")
      s = read_uint(v, where, c.reserved_disk_bytes);
    else if (k == "max_effect_crashes")
      s = read_uint(v, where, c.max_effect_crashes);
    else if (k == "max_page_bytes")
      s = read_uint(v, where, c.max_page_bytes);
    else if (k == "dedupe_window_ms")
      s = read_uint(v, where, c.dedupe_window_ms);
    else if (k == "retention_interval_ms")
      s = read_uint(v, where, c.retention_interval_ms);
    else if (k == "tool_uid")
      s = read_uint(v, where, c.tool_uid);
    else if (k == "tool_gid")
      s = read_uint(v, where, c.tool_gid);
    else if (k == "secrets")
      s = read_secrets(v, where, c.secrets);
    else if (k == "secret_key_file")
      s = read_string(v, where, c.secret_key_file);
    else if (k == "sync") {
      if (!v.is_boolean())
        s = error(code::invalid_argument, where + ": expected true or false");
      else
        c.sync = v.get<bool>();
    } else
      s = error(code::invalid_argument, source + ": unknown key \"" + k + "\"");
    if (!s) return s;
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
