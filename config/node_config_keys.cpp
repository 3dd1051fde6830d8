// The table of the node config file's keys: how each is read, shown and
// documented. Adding a field to node_config means adding its row here, and
// the loader, keeld --help and keeld --print-config all know it.

#include <nlohmann/json.hpp>

#include "base/principal.hpp"
#include "config/json_fields.hpp"
#include "config/node_config.hpp"
#include "config/secret_refs.hpp"

namespace keel::config {

using nlohmann::json;

namespace {

using detail::read_string;
using detail::read_uint;

template <auto Member>
config_key uint_key(const char* name, const char* meaning, const char* default_text = nullptr) {
  return {name,
          "integer",
          meaning,
          default_text,
          false,
          [](const json& v, const std::string& where, node_config& c) {
            return read_uint(v, where, c.*Member);
          },
          [](const node_config& c) { return json(c.*Member); }};
}

template <auto Member>
config_key string_key(const char* name, const char* type, const char* meaning,
                      const char* default_text = "none", bool secret = false) {
  return {name,
          type,
          meaning,
          default_text,
          secret,
          [](const json& v, const std::string& where, node_config& c) {
            return read_string(v, where, c.*Member);
          },
          [](const node_config& c) { return json(c.*Member); }};
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

// A name among `choices`, parsed by `parse`.
template <class T, std::optional<T> (*Parse)(std::string_view)>
status read_choice(const json& v, const std::string& where, const char* choices, T& out) {
  std::string name;
  KEEL_TRY(read_string(v, where, name));
  auto parsed = Parse(name);
  if (!parsed)
    return error(code::invalid_argument,
                 where + ": \"" + name + "\" is not one of " + std::string(choices));
  out = *parsed;
  return status::ok();
}

std::vector<config_key> make_keys() {
  std::vector<config_key> k;
  k.push_back(string_key<&node_config::data_dir>(
      "data_dir", "path", "directory of the node's RocksDB; created when missing (flag --data)",
      "(required)"));
  k.push_back({"http", "HOST:PORT", "HTTP listen address; port 0 picks a free port (flag --http)",
               nullptr, false,
               [](const json& v, const std::string& where, node_config& c) {
                 std::string hp;
                 KEEL_TRY(read_string(v, where, hp));
                 status s = set_http_address(c, hp);
                 return s ? s : error(code::invalid_argument, where + ": " + s.message());
               },
               [](const node_config& c) {
                 const bool v6 = c.http_host.find(':') != std::string::npos;
                 return json((v6 ? "[" + c.http_host + "]" : c.http_host) + ":" +
                             std::to_string(c.http_port));
               }});
  k.push_back(string_key<&node_config::token>(
      "token", "string",
      "the admin bearer token; required off loopback; without one keeld makes DATA/admin.token "
      "(flag --token, --token-file, $KEEL_TOKEN)",
      "none", true));
  k.push_back({"anonymous_scopes", "list of scopes",
               "what a request without a token may do: [\"read\", \"send\", ...] "
               "(flag --anonymous)",
               "read and send without a token configured, nothing with one", false,
               [](const json& v, const std::string& where, node_config& c) {
                 auto bits = scopes_from_json(v);
                 if (!bits)
                   return error(code::invalid_argument, where + ": " + bits.error().message());
                 c.anonymous_scopes = *bits;
                 return status::ok();
               },
               [](const node_config& c) {
                 if (c.anonymous_scopes < 0) return json(nullptr);
                 return json(scope_names(static_cast<uint32_t>(c.anonymous_scopes)));
               }});
  k.push_back(string_key<&node_config::tls_cert>(
      "tls_cert", "path", "PEM certificate chain: serve the API over TLS only (flag --tls-cert)"));
  k.push_back(string_key<&node_config::tls_key>(
      "tls_key", "path", "the certificate's PEM private key, not encrypted (flag --tls-key)"));
  k.push_back(string_key<&node_config::tls_client_ca>(
      "tls_client_ca", "path",
      "mutual TLS: refuse clients without a certificate this PEM CA signed (flag "
      "--tls-client-ca)"));
  k.push_back(uint_key<&node_config::idle_ms>(
      "idle_ms", "idle time in ms before a live agent snapshots and hibernates (flag --idle-ms)"));
  k.push_back(uint_key<&node_config::max_body_bytes>(
      "max_body_bytes", "largest HTTP request body; larger ones get 413"));
  k.push_back(uint_key<&node_config::max_unacked_per_agent>(
      "max_unacked_per_agent",
      "messages one agent decides per write; more go to its durable inbox"));
  k.push_back(uint_key<&node_config::scheduler_threads>(
      "scheduler_threads", "actor scheduler threads; 0: one per core"));
  k.push_back(uint_key<&node_config::scheduler_poll_attempts>(
      "scheduler_poll_attempts",
      "queue polls an idle scheduler thread spins through before it sleeps"));
  k.push_back({"sync", "bool",
               "fsync every journal batch; false survives a process crash, not a power loss",
               nullptr, false,
               [](const json& v, const std::string& where, node_config& c) {
                 if (!v.is_boolean())
                   return error(code::invalid_argument, where + ": expected true or false");
                 c.sync = v.get<bool>();
                 return status::ok();
               },
               [](const node_config& c) { return json(c.sync); }});
  k.push_back(uint_key<&node_config::block_cache_bytes>("block_cache_bytes",
                                                        "RocksDB block cache, in bytes"));
  k.push_back(uint_key<&node_config::effect_threads>(
      "effect_threads", "model and tool calls that run at once, 1 to 1024"));
  k.push_back(uint_key<&node_config::max_connections>(
      "max_connections",
      "HTTP connections open at once; past it 503 (lowered to fit the fd limit)"));
  k.push_back(uint_key<&node_config::http_header_timeout_ms>(
      "http_header_timeout_ms", "ms a new connection has to send its first request's headers"));
  k.push_back(uint_key<&node_config::store_open_files>(
      "store_open_files", "table files RocksDB keeps open; 0: sized from the fd limit at start"));
  k.push_back(uint_key<&node_config::reserved_disk_bytes>(
      "reserved_disk_bytes", "free disk the store keeps: below it writes get 507; 0: off"));
  k.push_back(uint_key<&node_config::max_effect_crashes>(
      "max_effect_crashes",
      "node crashes in a row a call may run through before it is failed; 0: off"));
  k.push_back(uint_key<&node_config::max_page_bytes>(
      "max_page_bytes", "bytes of events in one ledger page or stream page"));
  k.push_back(uint_key<&node_config::dedupe_window_ms>(
      "dedupe_window_ms", "ms a processed message id answers retries as a duplicate; 0: forever",
      "604800000 (7 days)"));
  k.push_back(uint_key<&node_config::retention_interval_ms>(
      "retention_interval_ms", "ms between applications of agent types' retention policies"));
  k.push_back(uint_key<&node_config::tool_uid>(
      "tool_uid", "uid exec tools run as when keeld runs as root; not 0"));
  k.push_back(uint_key<&node_config::tool_gid>(
      "tool_gid", "gid exec tools run as when keeld runs as root; not 0"));
  k.push_back({"secrets", "object",
               "named secrets: {\"NAME\": {\"file\": \"/path\"}} or {\"NAME\": {\"env\": "
               "\"VAR\"}}",
               nullptr, false,
               [](const json& v, const std::string& where, node_config& c) {
                 return read_secrets(v, where, c.secrets);
               },
               [](const node_config& c) {
                 json out = json::object();
                 for (const auto& [name, o] : c.secrets)
                   out[name] = {{o.from == secret_origin::kind::file ? "file" : "env", o.where}};
                 return out;
               }});
  k.push_back(string_key<&node_config::secret_key_file>(
      "secret_key_file", "path", "the key that seals secrets set through the API (32 bytes, 0600)",
      "DATA/secret.key"));
  k.push_back({"log_level", "string",
               "least severe log records written: error, warn, info or debug (flag --log-level)",
               nullptr, false,
               [](const json& v, const std::string& where, node_config& c) {
                 return read_choice<log::level, log::parse_level>(v, where, log::level_choices,
                                                                  c.log_level);
               },
               [](const node_config& c) { return json(log::to_string(c.log_level)); }});
  k.push_back({"log_format", "string",
               "log lines as text for a terminal, or json (JSON Lines) (flag --log-format)",
               nullptr, false,
               [](const json& v, const std::string& where, node_config& c) {
                 return read_choice<log::format, log::parse_format>(v, where, log::format_choices,
                                                                    c.log_format);
               },
               [](const node_config& c) { return json(log::to_string(c.log_format)); }});
  return k;
}

}  // namespace

const std::vector<config_key>& config_keys() {
  static const std::vector<config_key> keys = make_keys();
  return keys;
}

json to_json(const node_config& c) {
  json out = json::object();
  for (const auto& k : config_keys()) {
    json v = k.show(c);
    if (k.secret && v.is_string() && !v.get<std::string>().empty()) v = "<redacted>";
    out[k.name] = std::move(v);
  }
  return out;
}

std::string keys_help() {
  const node_config defaults;
  std::string out;
  for (const auto& k : config_keys()) {
    std::string def = k.default_text ? k.default_text : k.show(defaults).dump();
    out += "  " + std::string(k.name) + "  " + k.type + ", default " + def + "\n      " +
           k.meaning + "\n";
  }
  return out;
}

}  // namespace keel::config
