// keeld: one Keel node, the agent runtime and its HTTP API.
//
// Prints "keeld listening on http://HOST:PORT (data DIR)" (https:// with
// TLS) once it serves (tests read the port from it when --http asks for port
// 0). SIGTERM or SIGINT: stop accepting, answer requests in flight, finish
// durable writes, exit 0. Exit 2 for a bad command line or config, 1 when
// starting fails.

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/exec_sandbox.hpp"
#include "actors/node.hpp"
#include "actors/salvage.hpp"
#include "base/durable_file.hpp"
#include "base/principal.hpp"
#include "base/sha256.hpp"
#include "base/token_file.hpp"
#include "config/agent_spec.hpp"
#include "config/cluster_config.hpp"
#include "config/node_config.hpp"
#include "net/api.hpp"
#include "net/auth_tokens.hpp"
#include "net/cluster_node.hpp"
#include "net/http_server.hpp"
#include "net/http_tool.hpp"
#include "net/openai_model.hpp"
#include "persistence/secret_store.hpp"

namespace {

using namespace keel;

constexpr const char* usage_text = R"(usage: keeld --data DIR [options]

Runs one Keel node: the durable agent runtime and its HTTP API.

  --data DIR         directory of the node's store; created when missing
  --http HOST:PORT   HTTP listen address (default 127.0.0.1:7070; port 0
                     picks a free port)
  --config FILE      JSON config file (keys as in config/node_config.hpp,
                     "http": "HOST:PORT"); flags override it
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
  --cluster FILE     cluster config (JSON, docs/operations.md): run as a
                     member of that cluster; needs --node-id
  --node-id ID       this node's member id in the cluster config; its
                     HTTP address is the default for --http
  --join             join a running cluster: serve nothing until a member
                     adds this node (keel cluster add-node) and hands it its
                     shards
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
  --help             show this text
)";

struct flags {
  bool help = false;
  bool join = false;
  bool salvage = false;
  bool forget_secrets = false;
  std::optional<std::string> data, http, config, token, token_file, idle_ms, cluster, node_id,
      anonymous, tls_cert, tls_key, tls_client_ca;
  std::vector<std::string> agents;
};

// Exit codes: 2 a bad command line or config, 1 a failed start, 3 a store
// that needs an operator (a damaged write-ahead log or table files).
constexpr int exit_needs_operator = 3;

int usage_error(const std::string& message) {
  std::fprintf(stderr, "keeld: %s\n(run keeld --help for usage)\n", message.c_str());
  return 2;
}

// Accepts "--name value" and "--name=value".
result<flags> parse_flags(const std::vector<std::string_view>& args) {
  flags f;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (a == "--help" || a == "-h") {
      f.help = true;
      continue;
    }
    if (a == "--join") {
      f.join = true;
      continue;
    }
    if (a == "--salvage") {
      f.salvage = true;
      continue;
    }
    if (a == "--forget-secrets") {
      f.forget_secrets = true;
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
    std::optional<std::string> agents_dir;
    if (name == "--agents")
      slot = &agents_dir;
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
    else
      return error(code::invalid_argument, "unknown argument '" + std::string(a) + "'");
    if (!inline_value) {
      if (i + 1 >= args.size())
        return error(code::invalid_argument, std::string(name) + " needs a value");
      value = args[++i];
    }
    *slot = std::string(value);
    if (agents_dir) f.agents.push_back(std::move(*agents_dir));
  }
  return f;
}

// The node's own admin token, for a node given none: DATA/admin.token,
// made (0600, 256 random bits) at the first start.
result<std::string> node_admin_token(const std::string& data_dir) {
  const std::string path = data_dir + "/admin.token";
  if (::access(path.c_str(), F_OK) == 0) return keel::read_token_file(path);
  auto raw = random_bytes(32);
  if (!raw) return raw.error();
  std::string token =
      "keel_admin_" + to_hex({reinterpret_cast<const uint8_t*>(raw->data()), raw->size()});
  KEEL_TRY(write_durably(path, token + "\n", 0600));
  std::fprintf(stderr,
               "keeld: made the node's admin token in %s (use it with keel --token-file %s, "
               "or export KEEL_TOKEN_FILE=%s)\n",
               path.c_str(), path.c_str(), path.c_str());
  return token;
}

// A token file, with a warning when others may read it.
result<std::string> read_token_file(const std::string& path) {
  std::string warning;
  auto t = keel::read_token_file(path, &warning);
  if (t && !warning.empty()) std::fprintf(stderr, "keeld: warning: %s\n", warning.c_str());
  return t;
}

// The config file first, then $KEEL_TOKEN (or $KEEL_TOKEN_FILE), then the
// flags. A token given on the command line is readable by any local user
// (in /proc): --token-file keeps it off it.
result<config::node_config> build_config(const flags& f) {
  config::node_config cfg;
  if (f.config) {
    auto loaded = config::load_file(*f.config);
    if (!loaded) return loaded.error();
    cfg = std::move(*loaded);
  }
  if (const char* env = std::getenv("KEEL_TOKEN"); env && *env) cfg.token = env;
  if (const char* env = std::getenv("KEEL_TOKEN_FILE"); env && *env && !f.token) {
    auto t = read_token_file(env);
    if (!t) return t.error();
    cfg.token = std::move(*t);
  }
  if (f.data) cfg.data_dir = *f.data;
  if (f.token && f.token_file)
    return error(code::invalid_argument, "give --token or --token-file, not both");
  if (f.token) cfg.token = *f.token;
  if (f.token_file) {
    auto t = read_token_file(*f.token_file);
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
  KEEL_TRY(config::validate(cfg));
  // Before the store opens: a certificate that does not load is a bad
  // config, not a failed start.
  KEEL_TRY(net::http_server::check_tls(cfg));
  return cfg;
}

// Says whether the API speaks TLS, and warns where it should and does not.
void log_tls(const config::node_config& cfg) {
  if (!config::tls_enabled(cfg)) {
    std::fprintf(stderr, "keeld: TLS off: the HTTP API is plain HTTP\n");
    if (!config::is_loopback_host(cfg.http_host))
      std::fprintf(stderr,
                   "keeld: warning: serving %s without TLS: the bearer token and every request "
                   "cross the network in cleartext; pass --tls-cert and --tls-key\n",
                   cfg.http_host.c_str());
    return;
  }
  std::fprintf(stderr, "keeld: TLS on: certificate %s; %s%s\n", cfg.tls_cert.c_str(),
               cfg.tls_client_ca.empty() ? "no client certificates asked for"
                                         : "client certificates required, signed by ",
               cfg.tls_client_ca.c_str());
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::perms mode = fs::status(cfg.tls_key, ec).permissions();
  if (!ec && (mode & (fs::perms::group_read | fs::perms::others_read)) != fs::perms::none)
    std::fprintf(stderr, "keeld: warning: the TLS key %s is readable by others (chmod 600 it)\n",
                 cfg.tls_key.c_str());
}

// Splits the process's file descriptors between the store's table files,
// HTTP connections and everything else (log files, effect pipes and
// sockets, the cluster), so that no one of them can starve the others:
// idle connections must never keep the store from opening its next log.
// The soft limit is raised to the hard one first. Logs the split.
void budget_descriptors(config::node_config& cfg) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised{lim.rlim_max, lim.rlim_max};
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  const uint64_t limit = lim.rlim_cur == RLIM_INFINITY ? 1u << 20 : lim.rlim_cur;
  // Logs, locks, directories, background jobs, effect pipes and sockets.
  const uint64_t other = 64 + 6ull * cfg.effect_threads;
  const uint64_t rest = limit > other ? limit - other : 0;
  if (cfg.store_open_files == 0)
    cfg.store_open_files = static_cast<uint32_t>(std::clamp<uint64_t>(rest / 2, 16, 4096));
  const uint64_t for_connections = rest > cfg.store_open_files ? rest - cfg.store_open_files : 0;
  if (for_connections < cfg.max_connections)
    cfg.max_connections = static_cast<uint32_t>(std::max<uint64_t>(for_connections, 1));
  std::fprintf(stderr,
               "keeld: file descriptors: limit %llu; store tables %u, HTTP connections %u, "
               "%llu for the rest%s\n",
               static_cast<unsigned long long>(limit), cfg.store_open_files, cfg.max_connections,
               static_cast<unsigned long long>(other),
               for_connections < 16 ? " (too few: raise the limit, e.g. LimitNOFILE=65536)" : "");
}

// keeld --salvage: prints what was kept and dropped; exit 0 when done.
int run_salvage(const config::node_config& cfg, actors::start_options opts) {
  auto r = actors::salvage(cfg, std::move(opts));
  if (!r) {
    std::fprintf(stderr, "keeld: salvage: %s\n", r.error().to_string().c_str());
    return 1;
  }
  const auto& rep = *r;
  const auto& dmg = rep["damage"];
  std::printf("keeld: salvaged %s: the log %s was damaged at offset %llu (%s)\n",
              cfg.data_dir.c_str(), dmg.value("file", "").c_str(),
              static_cast<unsigned long long>(dmg.value("offset", uint64_t{0})),
              dmg.value("reason", "").c_str());
  std::printf(
      "  dropped: %zu write batches (%llu keys lost), and %llu bytes that could not be "
      "read at all\n",
      static_cast<std::size_t>(rep.value("batches_dropped", 0)),
      static_cast<unsigned long long>(rep.value("keys_lost", uint64_t{0})),
      static_cast<unsigned long long>(rep.value("bytes_unreadable", uint64_t{0})));
  for (const auto& a : rep["agents"])
    std::printf("  %-32s %s%llu ledger events, %llu messages lost\n", a.value("name", "?").c_str(),
                a.value("lost_entirely", false) ? "LOST ENTIRELY; " : "",
                static_cast<unsigned long long>(a.value("ledger_events_lost", uint64_t{0})),
                static_cast<unsigned long long>(a.value("messages_lost", uint64_t{0})));
  std::printf("  report: %s\n  the logs as they were: %s\n", rep.value("report", "").c_str(),
              rep.value("evidence", "").c_str());
  std::printf("keeld: start keeld as usual now; senders may resend the messages listed as lost\n");
  return 0;
}

// keeld --forget-secrets: the store's secrets go, their values unread.
int run_forget_secrets(const config::node_config& cfg) {
  persistence::store_options so{cfg.data_dir, cfg.block_cache_bytes, false};
  auto db = persistence::store::open(so);
  if (!db) {
    std::fprintf(stderr, "keeld: cannot open %s: %s\n", cfg.data_dir.c_str(),
                 db.error().to_string().c_str());
    return 1;
  }
  auto n = persistence::forget_secrets(**db);
  if (!n) {
    std::fprintf(stderr, "keeld: cannot delete the stored secrets: %s\n",
                 n.error().to_string().c_str());
    return 1;
  }
  std::printf("keeld: deleted %zu stored secrets from %s; set them again with keel secret set\n",
              *n, cfg.data_dir.c_str());
  return 0;
}

std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

int run(int argc, char** argv) {
  // Nothing of the node's user (a tool on a host without PID namespaces,
  // say) may read keeld's memory or /proc/PID/environ, where a token may
  // be; it also means no core files.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto f = parse_flags(args);
  if (!f) return usage_error(f.error().message());
  if (f->help) {
    std::fputs(usage_text, stdout);
    return 0;
  }
  std::optional<config::cluster_config> cluster;
  if (f->cluster) {
    auto c = config::load_cluster_file(*f->cluster);
    if (!c) return usage_error(c.error().message());
    if (!f->node_id) return usage_error("--cluster needs --node-id");
    auto self = std::find_if(c->members.begin(), c->members.end(),
                             [&](const auto& m) { return m.id == *f->node_id; });
    if (self == c->members.end())
      return usage_error("node id '" + *f->node_id + "' is not a member in " + *f->cluster);
    // The member entry says where this node's API listens, unless --http does.
    if (!f->http) f->http = self->http_host + ":" + std::to_string(self->http_port);
    cluster = std::move(*c);
  } else if (f->node_id || f->join) {
    return usage_error("--node-id and --join need --cluster");
  }
  auto cfg = build_config(*f);
  if (!cfg) return usage_error(cfg.error().message());
  if (f->forget_secrets) return run_forget_secrets(*cfg);
  budget_descriptors(*cfg);

  // Block the stop signals before any thread starts, so every thread
  // inherits the mask and only sigwait() below ever sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  actors::start_options opts;
  for (const auto& dir : f->agents) {
    auto folder = config::load_agent_specs(dir);
    if (!folder) return usage_error(folder.error().message());
    for (const auto& [file, why] : folder->skipped)
      std::fprintf(stderr, "keeld: skipped %s: %s\n", file.c_str(), why.c_str());
    for (auto& spec : folder->specs) {
      std::fprintf(stderr, "keeld: agent type %s version %.12s (%s, %zu tools, model %s)\n",
                   spec->name.c_str(), spec->hash.c_str(), spec->source.c_str(), spec->tools.size(),
                   spec->model.provider.c_str());
      opts.agent_types.push_back(std::move(spec));
    }
  }
  opts.plugins.providers["openai"] = std::make_shared<net::openai_model>();
  opts.plugins.runners[config::tool_kind::http] = std::make_shared<net::http_tool>();
  const auto& sandbox = actors::probe_sandbox();
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::string tool_user = sandbox.separate_uid ? " (uid " + std::to_string(cfg->tool_uid) + ")"
                                               : " (not root: the node's own uid)";
  std::fprintf(stderr,
               "keeld: exec sandbox: rlimits %s, network namespace %s, pid namespace %s, "
               "private /proc %s, file system view %s, seccomp %s, separate uid %s%s%s%s\n",
               yes(sandbox.rlimits), yes(sandbox.network_namespace), yes(sandbox.pid_namespace),
               yes(sandbox.private_proc), yes(sandbox.system_view), yes(sandbox.seccomp),
               yes(sandbox.separate_uid), tool_user.c_str(), sandbox.detail.empty() ? "" : " - ",
               sandbox.detail.c_str());
  // Beyond the data directory, what tools must never read.
  for (const auto& file : {f->config, f->token_file})
    if (file) opts.hidden_paths.push_back(*file);
  if (!cfg->tls_key.empty()) opts.hidden_paths.push_back(cfg->tls_key);
  // The secrets' key and the files config secrets come from.
  if (!cfg->secret_key_file.empty()) opts.hidden_paths.push_back(cfg->secret_key_file);
  for (const auto& [name, origin] : cfg->secrets)
    if (origin.from == config::secret_origin::kind::file) opts.hidden_paths.push_back(origin.where);
  if (const char* env = std::getenv("KEEL_TOKEN_FILE"); env && *env)
    opts.hidden_paths.emplace_back(env);
  // The cluster's secret (in its config or a secret_file) and TLS key: with
  // them a tool could pass for a member.
  if (f->cluster) {
    opts.hidden_paths.push_back(*f->cluster);
    std::ifstream in(*f->cluster);
    auto raw = nlohmann::json::parse(in, nullptr, false);
    if (raw.is_object() && raw.contains("secret_file") && raw["secret_file"].is_string())
      opts.hidden_paths.push_back(raw["secret_file"].get<std::string>());
  }
  if (cluster && !cluster->tls.key.empty()) opts.hidden_paths.push_back(cluster->tls.key);
  // keeld's own configuration directory (the packaged layout's; the
  // systemd unit's environment file with the token lives there).
  opts.hidden_paths.emplace_back("/etc/keel");

  if (f->salvage) return run_salvage(*cfg, std::move(opts));

  // A member recovers only once its router is set: it must not wake agents
  // whose shards it does not serve.
  opts.hold_recovery = cluster.has_value();
  auto node = actors::node::start(*cfg, std::move(opts));
  if (!node) {
    std::fprintf(stderr, "keeld: cannot start the node: %s\n", node.error().to_string().c_str());
    // Damaged data needs an operator, not a restart (the systemd unit does
    // not restart on this code).
    return node.error().error_code() == code::corruption ? exit_needs_operator : 1;
  }
  // Who may do what: the admin token (configured, or the node's own in
  // DATA/admin.token), the tokens kept in the store, and what anonymous
  // requests may do.
  const bool token_configured = !cfg->token.empty();
  std::string admin_token = cfg->token;
  if (!token_configured) {
    auto own = node_admin_token(cfg->data_dir);
    if (!own) {
      std::fprintf(stderr, "keeld: %s\n", own.error().to_string().c_str());
      (*node)->stop();
      return 1;
    }
    admin_token = std::move(*own);
  }
  const uint32_t anonymous =
      cfg->anonymous_scopes >= 0 ? static_cast<uint32_t>(cfg->anonymous_scopes)
      : token_configured         ? 0u
                         : static_cast<uint32_t>(scope::read) | static_cast<uint32_t>(scope::send);
  auto tokens = net::token_store::open(**node, admin_token, anonymous);
  if (!tokens) {
    std::fprintf(stderr, "keeld: cannot load API tokens: %s\n", tokens.error().to_string().c_str());
    (*node)->stop();
    return 1;
  }
  {
    std::string names;
    for (const auto& n : scope_names(anonymous)) names += (names.empty() ? "" : ",") + n;
    std::fprintf(stderr, "keeld: auth: admin token %s; %zu API tokens; anonymous requests: %s\n",
                 token_configured ? "configured" : ("in " + cfg->data_dir + "/admin.token").c_str(),
                 (*tokens)->list().size(), names.empty() ? "none" : names.c_str());
  }
  net::server_options server_opts;
  server_opts.authenticate = [t = tokens->get()](std::string_view authorization) {
    return t->authenticate(authorization);
  };
  auto http = net::http_server::open(*cfg, std::move(server_opts));
  if (!http) {
    std::fprintf(stderr, "keeld: %s\n", http.error().message().c_str());
    (*node)->stop();
    return 1;
  }
  net::http_server* server = http->get();
  std::shared_ptr<net::cluster_node> member;
  if (cluster) {
    auto started = net::cluster_node::start(
        **node, {*cluster, *f->node_id, f->join, {}, config::tls_enabled(*cfg) ? "https" : "http"});
    if (!started) {
      std::fprintf(stderr, "keeld: cannot join cluster '%s': %s\n", cluster->cluster_id.c_str(),
                   started.error().to_string().c_str());
      (*node)->stop();
      return 1;
    }
    member = std::move(*started);
  }
  net::api_options api_opts;
  api_opts.cluster = member.get();
  api_opts.max_page_bytes = cfg->max_page_bytes;
  api_opts.tokens = tokens->get();
  api_opts.extra_metrics = [server] { return net::server_metrics_text(server->stats()); };
  net::api api(
      **node,
      [server](std::chrono::milliseconds delay, std::function<void()> fn) {
        server->run_after(delay, std::move(fn));
      },
      api_opts);
  if (member) {
    member->attach(api);  // it set itself as the node's router when it started
    if (auto s = (*node)->begin(); !s) {
      std::fprintf(stderr, "keeld: cannot recover: %s\n", s.to_string().c_str());
      member->stop();
      (*node)->stop();
      return 1;
    }
    std::fprintf(stderr, "keeld: member %s of cluster %s, cluster port %u%s\n", f->node_id->c_str(),
                 cluster->cluster_id.c_str(), static_cast<unsigned>(member->cluster_port()),
                 f->join ? " (joining)" : "");
  }
  server->start([&api](net::http_request req, net::respond_fn respond) {
    api.handle(std::move(req), std::move(respond));
  });

  log_tls(*cfg);
  std::printf("keeld listening on %s://%s:%u (data %s)\n", server->tls() ? "https" : "http",
              url_host(server->host()).c_str(), static_cast<unsigned>(server->port()),
              cfg->data_dir.c_str());
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  std::fprintf(stderr, "keeld: %s received, stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  server->stop();
  // The router stays set until the node stops: messages agents send
  // meanwhile still go to the outbox (durable; delivered after a restart).
  if (member) member->stop();
  (*node)->stop();
  std::fprintf(stderr, "keeld: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keeld: fatal: %s\n", e.what());
    return 1;
  }
}
