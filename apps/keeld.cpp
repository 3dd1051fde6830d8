// keeld: one Keel node, the agent runtime and its HTTP API.
//
// Prints "keeld listening on http://HOST:PORT (data DIR)" (https:// with
// TLS) on stdout once it serves (tests read the port from it when --http
// asks for port 0); everything else goes to the log on stderr (base/log.hpp),
// its first record naming the version. SIGTERM or SIGINT: stop accepting,
// answer requests in flight, finish durable writes, exit 0. Exit codes in
// apps/keeld_flags.hpp.

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

#include "actors/node.hpp"
#include "actors/salvage.hpp"
#include "apps/keeld_flags.hpp"
#include "base/durable_file.hpp"
#include "base/log.hpp"
#include "base/principal.hpp"
#include "base/sha256.hpp"
#include "base/token_file.hpp"
#include "base/version.hpp"
#include "config/agent_spec.hpp"
#include "config/cluster_config.hpp"
#include "config/node_config.hpp"
#include "effects/exec_sandbox.hpp"
#include "effects/http_tool.hpp"
#include "effects/openai_model.hpp"
#include "http/server.hpp"
#include "net/api/api.hpp"
#include "net/api/auth_tokens.hpp"
#include "net/cluster/node.hpp"
#include "net/cluster/replication.hpp"
#include "persistence/secret_store.hpp"
#include "persistence/store.hpp"

namespace {

using namespace keel;
using namespace keel::keeld;

// A failure that ends keeld: "keeld: MESSAGE" for a person at a terminal,
// an error record for a log collector.
void fatal(const std::string& message) {
  if (log::output_format() == log::format::json)
    log::error(message);
  else
    std::fprintf(stderr, "keeld: %s\n", message.c_str());
}

// Why the node did not start, worded for the operator; the exit code.
int start_failed(const config::node_config& cfg, const status& s) {
  // The store's lock is held: another keeld has DATA open. (A holder in
  // another PID namespace has no pid here: the store's own message says it.)
  if (s.error_code() == code::conflict) {
    if (auto pid = persistence::lock_holder(cfg.data_dir); pid && *pid > 0) {
      const std::string n = std::to_string(*pid);
      fatal("another keeld (pid " + n + ") uses " + cfg.data_dir + "; stop it first (kill " + n +
            ") or pass another --data");
      return exit_failed;
    }
  }
  fatal("cannot start the node: " + s.to_string());
  // Damaged data needs an operator, not a restart (the systemd unit does
  // not restart on this code).
  return s.error_code() == code::corruption ? exit_needs_operator : exit_failed;
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
  log::info("made the node's admin token in " + path + " (use it with keel --token-file " + path +
                ", or export KEEL_TOKEN_FILE=" + path + ")",
            {{"file", path}});
  return token;
}

// Says whether the API speaks TLS, and warns where it should and does not.
void log_tls(const config::node_config& cfg) {
  if (!config::tls_enabled(cfg)) {
    log::info("TLS off: the HTTP API is plain HTTP");
    if (!config::is_loopback_host(cfg.http_host))
      log::warn("serving " + cfg.http_host +
                " without TLS: the bearer token and every request cross the network in "
                "cleartext; pass --tls-cert and --tls-key");
    return;
  }
  log::info("TLS on: certificate " + cfg.tls_cert + "; " +
            (cfg.tls_client_ca.empty()
                 ? "no client certificates asked for"
                 : "client certificates required, signed by " + cfg.tls_client_ca));
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::perms mode = fs::status(cfg.tls_key, ec).permissions();
  if (!ec && (mode & (fs::perms::group_read | fs::perms::others_read)) != fs::perms::none)
    log::warn("the TLS key " + cfg.tls_key + " is readable by others (chmod 600 it)");
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
  const std::string split = "file descriptors: limit " + std::to_string(limit) + "; store tables " +
                            std::to_string(cfg.store_open_files) + ", HTTP connections " +
                            std::to_string(cfg.max_connections) + ", " + std::to_string(other) +
                            " for the rest";
  if (for_connections < 16)
    log::warn(split + " (too few: raise the limit, e.g. LimitNOFILE=65536)");
  else
    log::info(split);
}

// keeld --salvage: prints what was kept and dropped; exit 0 when done.
int run_salvage(const config::node_config& cfg, actors::start_options opts) {
  auto r = actors::salvage(cfg, std::move(opts));
  if (!r) {
    if (r.error().error_code() == code::conflict && persistence::lock_holder(cfg.data_dir))
      return start_failed(cfg, r.error());
    fatal("salvage: " + r.error().to_string());
    return exit_failed;
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
  if (!db) return start_failed(cfg, db.error());
  auto n = persistence::forget_secrets(**db);
  if (!n) {
    fatal("cannot delete the stored secrets: " + n.error().to_string());
    return exit_failed;
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
    std::fputs(usage_text().c_str(), stdout);
    return 0;
  }
  if (f->version) {
    std::printf("%s\n", version_line("keeld").c_str());
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
    if (!f->recover_groups.empty() && c->replication == 0)
      return usage_error("--recover-group is for a replicated cluster");
    if (f->join && c->replication > 0)
      return usage_error(
          "joining a replicated cluster (--join with replication) is not supported "
          "yet");
    cluster = std::move(*c);
  } else if (f->node_id || f->join || !f->recover_groups.empty()) {
    return usage_error("--node-id, --join and --recover-group need --cluster");
  }
  auto recover = parse_recover_groups(f->recover_groups);
  if (!recover) return usage_error(recover.error().message());
  std::vector<std::string> warnings;
  auto cfg = build_config(*f, warnings);
  if (!cfg) return usage_error(cfg.error().message());
  // A replicated group's log appends must be on disk before a majority
  // counts them.
  if (cluster && cluster->replication > 0 && !cfg->sync)
    return usage_error("a replicated cluster needs sync writes (\"sync\": true)");
  if (f->print_config) {
    std::printf("%s\n", config::to_json(*cfg).dump(2).c_str());
    return 0;
  }
  log::configure(cfg->log_level, cfg->log_format);
  if (!f->forget_secrets)
    log::info(version_line("keeld") + " starting", {{"version", version()},
                                                    {"commit", build_commit()},
                                                    {"pid", static_cast<int64_t>(::getpid())},
                                                    {"data", cfg->data_dir}});
  for (const auto& w : warnings) log::warn(w);
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
    for (const auto& [file, why] : folder->skipped) log::info("skipped " + file + ": " + why);
    for (auto& spec : folder->specs) {
      log::info("agent type " + spec->name + " version " + spec->hash.substr(0, 12) + " (" +
                spec->source + ", " + std::to_string(spec->tools.size()) + " tools, model " +
                spec->model.provider + ")");
      opts.agent_types.push_back(std::move(spec));
    }
  }
  opts.plugins.providers["openai"] = std::make_shared<net::openai_model>();
  opts.plugins.runners[config::tool_kind::http] = std::make_shared<net::http_tool>();
  const auto& sandbox = actors::probe_sandbox();
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::string tool_user = sandbox.separate_uid ? " (uid " + std::to_string(cfg->tool_uid) + ")"
                                               : " (not root: the node's own uid)";
  log::info(std::string("exec sandbox: rlimits ") + yes(sandbox.rlimits) + ", network namespace " +
            yes(sandbox.network_namespace) + ", pid namespace " + yes(sandbox.pid_namespace) +
            ", private /proc " + yes(sandbox.private_proc) + ", file system view " +
            yes(sandbox.system_view) + ", seccomp " + yes(sandbox.seccomp) + ", separate uid " +
            yes(sandbox.separate_uid) + tool_user + (sandbox.detail.empty() ? "" : " - ") +
            sandbox.detail);
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
  // Replicated: the shells write through the member's groups from their
  // first activation; the groups start with the member, below. Declared
  // before the node, so it outlives it.
  std::unique_ptr<net::replication> repl;
  if (cluster && cluster->replication > 0) {
    repl = std::make_unique<net::replication>(*cluster);
    repl->recover(std::move(*recover));
    opts.repl = repl.get();
  }
  auto node = actors::node::start(*cfg, std::move(opts));
  if (!node) return start_failed(*cfg, node.error());
  // Who may do what: the admin token (configured, or the node's own in
  // DATA/admin.token), the tokens kept in the store, and what anonymous
  // requests may do.
  const bool token_configured = !cfg->token.empty();
  std::string admin_token = cfg->token;
  if (!token_configured) {
    auto own = node_admin_token(cfg->data_dir);
    if (!own) {
      fatal(own.error().to_string());
      (*node)->stop();
      return exit_failed;
    }
    admin_token = std::move(*own);
  }
  const uint32_t anonymous =
      cfg->anonymous_scopes >= 0 ? static_cast<uint32_t>(cfg->anonymous_scopes)
      : token_configured         ? 0u
                         : static_cast<uint32_t>(scope::read) | static_cast<uint32_t>(scope::send);
  auto tokens = net::token_store::open(**node, admin_token, anonymous);
  if (!tokens) {
    fatal("cannot load API tokens: " + tokens.error().to_string());
    (*node)->stop();
    return exit_failed;
  }
  {
    std::string names;
    for (const auto& n : scope_names(anonymous)) names += (names.empty() ? "" : ",") + n;
    log::info(
        "auth: admin token " +
        (token_configured ? std::string("configured") : "in " + cfg->data_dir + "/admin.token") +
        "; " + std::to_string((*tokens)->list().size()) +
        " API tokens; anonymous requests: " + (names.empty() ? "none" : names));
  }
  net::server_options server_opts;
  server_opts.authenticate = [t = tokens->get()](std::string_view authorization) {
    return t->authenticate(authorization);
  };
  auto http = net::http_server::open(*cfg, std::move(server_opts));
  if (!http) {
    fatal(http.error().message());
    (*node)->stop();
    return exit_failed;
  }
  net::http_server* server = http->get();
  std::shared_ptr<net::cluster_node> member;
  if (cluster) {
    auto started = net::cluster_node::start(**node, {*cluster,
                                                     *f->node_id,
                                                     f->join,
                                                     {},
                                                     config::tls_enabled(*cfg) ? "https" : "http",
                                                     repl.get()});
    if (!started) {
      fatal("cannot join cluster '" + cluster->cluster_id + "': " + started.error().to_string());
      (*node)->stop();
      return exit_failed;
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
      fatal("cannot recover: " + s.to_string());
      member->stop();
      (*node)->stop();
      return exit_failed;
    }
    log::info("member " + *f->node_id + " of cluster " + cluster->cluster_id + ", cluster port " +
              std::to_string(member->cluster_port()) + (f->join ? " (joining)" : ""));
  }
  server->start([&api](net::http_request req, net::respond_fn respond) {
    api.handle(std::move(req), std::move(respond));
  });

  log_tls(*cfg);
  const std::string url = std::string(server->tls() ? "https" : "http") + "://" +
                          url_host(server->host()) + ":" + std::to_string(server->port());
  std::printf("keeld listening on %s (data %s)\n", url.c_str(), cfg->data_dir.c_str());
  std::fflush(stdout);
  // The line above is for whoever started keeld; a collector reading the
  // JSON log gets it as a record.
  if (cfg->log_format == log::format::json)
    log::info("keeld listening on " + url, {{"url", url}, {"data", cfg->data_dir}});

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  log::info(std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") + " received, stopping");
  server->stop();
  // The router stays set until the node stops: messages agents send
  // meanwhile still go to the outbox (durable; delivered after a restart).
  if (member) member->stop();
  (*node)->stop();
  log::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fatal(std::string("fatal: ") + e.what());
    return exit_failed;
  }
}
