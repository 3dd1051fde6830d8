// keeld's command line: the flags, the usage text and the node config they
// build over the config file and the environment.

#include "apps/keeld_flags.hpp"

#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "base/principal.hpp"
#include "base/token_file.hpp"
#include "http/server.hpp"

namespace keel::keeld {

namespace {

constexpr const char* flags_text = R"(usage: keeld --data DIR [options]

Runs one Keel node: the durable agent runtime and its HTTP API.

  --data DIR         directory of the node's store; created when missing
  --http HOST:PORT   HTTP listen address (default 127.0.0.1:7070; port 0
                     picks a free port)
  --config FILE      JSON config file: an object of the keys listed below;
                     flags override it (example: deploy/keeld.example.json)
  --print-config     print the effective config (file, environment and
                     flags; the token redacted) as JSON, then exit
  --token-file FILE  read the bearer token from FILE's first line (default
                     $KEEL_TOKEN_FILE); unlike --token, keeps it out of the
                     process list
  --token TOKEN      bearer token for the HTTP API (default $KEEL_TOKEN);
                     required unless the address is loopback
  --tls-cert FILE    serve the HTTP API over TLS only (HTTPS, TLS 1.2+) with
                     this PEM certificate chain; needs --tls-key
  --tls-key FILE     the certificate's PEM private key (not encrypted)
  --tls-client-ca FILE
                     mutual TLS: refuse, in the handshake, every client
                     without a certificate signed by a CA in this PEM file
  --idle-ms N        idle time before a live agent hibernates (default 30000)
  --agents DIR       load every *.json agent-type spec in DIR (see
                     docs/agent-types.md); may be given more than once
  --log-level LEVEL  least severe log records written: error, warn, info
                     (default) or debug (one line per HTTP request)
  --log-format FMT   text (default: one line per record for a terminal) or
                     json (JSON Lines: time, level, msg and fields)
  --cluster FILE     cluster config (JSON, docs/operations.md): run as a
                     member of that cluster; needs --node-id
  --node-id ID       this node's member id in the cluster config; its
                     HTTP address is the default for --http
  --join             join a running cluster: serve nothing until a member
                     adds this node (keel cluster add-node) and hands it its
                     shards
  --recover-group G@INDEX
                     in a replicated cluster, the last resort for group G
                     after two of its three replicas lost their data: run
                     it on the replica left, with the last index `keel
                     cluster status` shows for G there; G's configuration
                     becomes this member alone and the others join again
                     (docs/operations.md). Refused when G's log does not
                     end at INDEX. May be given more than once
  --salvage          after keeld refused to start on a damaged write-ahead
                     log (exit 3): keep what is intact, record what is
                     dropped (a report under DIR/salvage/, and a `salvaged`
                     event in each affected agent's ledger), reserve the
                     names of agents lost entirely, then exit; start keeld
                     normally afterwards (docs/operations.md, "Faults")
  --anonymous SCOPES what a request without a token may do: a comma list of
                     read, send, approve, operate, admin, work, or "none"
                     (default: read,send when no token is configured,
                     none when one is; docs/operations.md, "Security")
  --forget-secrets   delete every secret stored in DIR (set with keel secret
                     set), unread, then exit: for when their key file is lost
                     and keeld refuses to start; set them again afterwards
  --version          print the version, then exit
  --help             show this text

Exit codes: 0 stopped by SIGTERM or SIGINT (or a one-shot mode done), 1 the
start failed, 2 a bad command line or config, 3 the store needs an operator.

config keys (docs/operations.md describes each):
)";

// A token file, with a warning when others may read it.
result<std::string> token_from_file(const std::string& path, std::vector<std::string>& warnings) {
  std::string warning;
  auto t = keel::read_token_file(path, &warning);
  if (t && !warning.empty()) warnings.push_back(warning);
  return t;
}

// A flag that sets a string config key, read by that key's row of the
// table: the same checks and messages as in the config file.
status set_key(config::node_config& cfg, std::string_view key, const std::string& flag,
               const std::string& value) {
  for (const auto& k : config::config_keys())
    if (k.name == key) return k.read(nlohmann::json(value), flag, cfg);
  return error(code::internal, "no config key " + std::string(key));
}

}  // namespace

std::string usage_text() {
  return flags_text + config::keys_help();
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "keeld: %s\n(run keeld --help for usage)\n", message.c_str());
  return exit_usage;
}

result<flags> parse_flags(const std::vector<std::string_view>& args) {
  flags f;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    bool* on = a == "--help" || a == "-h" ? &f.help
               : a == "--version"         ? &f.version
               : a == "--print-config"    ? &f.print_config
               : a == "--join"            ? &f.join
               : a == "--salvage"         ? &f.salvage
               : a == "--forget-secrets"  ? &f.forget_secrets
                                          : nullptr;
    if (on) {
      *on = true;
      continue;
    }
    std::string_view name = a, value;
    bool inline_value = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string_view::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      inline_value = true;
    }
    std::optional<std::string>* slot = nullptr;
    std::optional<std::string> agents_dir, recover_group;
    if (name == "--agents")
      slot = &agents_dir;
    else if (name == "--recover-group")
      slot = &recover_group;
    else if (name == "--data")
      slot = &f.data;
    else if (name == "--http")
      slot = &f.http;
    else if (name == "--config")
      slot = &f.config;
    else if (name == "--token")
      slot = &f.token;
    else if (name == "--token-file")
      slot = &f.token_file;
    else if (name == "--idle-ms")
      slot = &f.idle_ms;
    else if (name == "--anonymous")
      slot = &f.anonymous;
    else if (name == "--cluster")
      slot = &f.cluster;
    else if (name == "--node-id")
      slot = &f.node_id;
    else if (name == "--tls-cert")
      slot = &f.tls_cert;
    else if (name == "--tls-key")
      slot = &f.tls_key;
    else if (name == "--tls-client-ca")
      slot = &f.tls_client_ca;
    else if (name == "--log-level")
      slot = &f.log_level;
    else if (name == "--log-format")
      slot = &f.log_format;
    else
      return error(code::invalid_argument, "unknown argument '" + std::string(a) + "'");
    if (!inline_value) {
      if (i + 1 >= args.size())
        return error(code::invalid_argument, std::string(name) + " needs a value");
      value = args[++i];
    }
    *slot = std::string(value);
    if (agents_dir) f.agents.push_back(std::move(*agents_dir));
    if (recover_group) f.recover_groups.push_back(std::move(*recover_group));
  }
  return f;
}

result<std::map<uint32_t, uint64_t>> parse_recover_groups(const std::vector<std::string>& given) {
  std::map<uint32_t, uint64_t> out;
  for (const auto& v : given) {
    const auto at = v.find('@');
    auto number = [](std::string_view s) -> std::optional<uint64_t> {
      if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string_view::npos)
        return std::nullopt;
      return std::stoull(std::string(s));
    };
    auto g = at == std::string::npos ? std::nullopt : number(std::string_view(v).substr(0, at));
    auto index =
        at == std::string::npos ? std::nullopt : number(std::string_view(v).substr(at + 1));
    if (!g || !index || *g > UINT32_MAX || *index == 0)
      return error(
          code::invalid_argument,
          "--recover-group takes GROUP@INDEX (the group's last log index), not '" + v + "'");
    if (!out.emplace(static_cast<uint32_t>(*g), *index).second)
      return error(code::invalid_argument,
                   "--recover-group names group " + std::to_string(*g) + " twice");
  }
  return out;
}

// A token given on the command line is readable by any local user (in
// /proc): --token-file keeps it off it.
result<config::node_config> build_config(const flags& f, std::vector<std::string>& warnings) {
  config::node_config cfg;
  if (f.config) {
    auto loaded = config::load_file(*f.config);
    if (!loaded) return loaded.error();
    cfg = std::move(*loaded);
  }
  if (const char* env = std::getenv("KEEL_TOKEN"); env && *env) cfg.token = env;
  if (const char* env = std::getenv("KEEL_TOKEN_FILE"); env && *env && !f.token) {
    auto t = token_from_file(env, warnings);
    if (!t) return t.error();
    cfg.token = std::move(*t);
  }
  if (f.data) cfg.data_dir = *f.data;
  if (f.token && f.token_file)
    return error(code::invalid_argument, "give --token or --token-file, not both");
  if (f.token) cfg.token = *f.token;
  if (f.token_file) {
    auto t = token_from_file(*f.token_file, warnings);
    if (!t) return t.error();
    cfg.token = std::move(*t);
  }
  if (f.http) KEEL_TRY(config::set_http_address(cfg, *f.http));
  if (f.anonymous) {
    std::string bad;
    auto bits =
        *f.anonymous == "none" ? std::optional<uint32_t>(0) : parse_scopes(*f.anonymous, &bad);
    if (!bits)
      return error(code::invalid_argument,
                   "--anonymous: unknown scope '" + bad + "' (" + scope_choices + ", or none)");
    cfg.anonymous_scopes = *bits;
  }
  if (f.tls_cert) cfg.tls_cert = *f.tls_cert;
  if (f.tls_key) cfg.tls_key = *f.tls_key;
  if (f.tls_client_ca) cfg.tls_client_ca = *f.tls_client_ca;
  if (f.idle_ms) {
    char* end = nullptr;
    unsigned long long n = std::strtoull(f.idle_ms->c_str(), &end, 10);
    if (f.idle_ms->empty() || *end != '\0' || n > 0xFFFFFFFFull || f.idle_ms->front() == '-')
      return error(code::invalid_argument,
                   "--idle-ms must be a number of milliseconds, got '" + *f.idle_ms + "'");
    cfg.idle_ms = static_cast<uint32_t>(n);
  }
  if (f.log_level) KEEL_TRY(set_key(cfg, "log_level", "--log-level", *f.log_level));
  if (f.log_format) KEEL_TRY(set_key(cfg, "log_format", "--log-format", *f.log_format));
  KEEL_TRY(config::validate(cfg));
  // Before the store opens: a certificate that does not load is a bad
  // config, not a failed start.
  KEEL_TRY(net::http_server::check_tls(cfg));
  return cfg;
}

}  // namespace keel::keeld
