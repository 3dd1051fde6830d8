#pragma once
// Settings of one keeld node. Built from a JSON file, then overridden by
// flags, then validated once; internals receive it as a const value and
// never read globals.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/log.hpp"
#include "base/status.hpp"

namespace keel::config {

// Where a secret named in the node config comes from: the content of a
// file (one trailing newline dropped) or an environment variable of keeld,
// read once at start.
struct secret_origin {
  enum class kind { file, env } from = kind::file;
  std::string where;  // the file's path or the variable's name
};

struct node_config {
  // Directory of the node's RocksDB; created when missing. Required.
  std::string data_dir;
  // HTTP listen address. Default 127.0.0.1:7070; port 0 picks a free port.
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 7070;
  // The node's admin token for the HTTP API (principal "admin", every
  // scope); required when http_host is not loopback. Without one keeld
  // uses the token it keeps in DATA/admin.token (made at first start).
  std::string token;
  // What a request without a token may do (base/principal.hpp scope bits).
  // -1: the default, read and send when no token was configured (a tool
  // allowed on the network can then reach the API, but never approve,
  // resolve or administer), nothing when one was.
  int64_t anonymous_scopes = -1;
  // TLS on the HTTP port: PEM files of the server's certificate (its chain,
  // leaf first) and private key. Both or neither; with them the port speaks
  // only HTTPS (TLS 1.2 or newer). Default none: plain HTTP.
  std::string tls_cert;
  std::string tls_key;
  // PEM file of the CA(s) whose client certificates are accepted; when set,
  // a client without such a certificate is refused in the handshake
  // (mutual TLS). Needs tls_cert. Default none.
  std::string tls_client_ca;
  // Idle time after which a live agent snapshots and hibernates. Default 30 s.
  uint32_t idle_ms = 30'000;
  // Largest accepted HTTP request body. Default 1 MiB.
  uint64_t max_body_bytes = 1 << 20;
  // Messages an agent holds in memory, not yet durable, before further ones
  // are spilled to its durable inbox and acknowledged from there. Default 64.
  uint32_t max_unacked_per_agent = 64;
  // CAF scheduler threads; 0 = one per core. Default 0.
  uint32_t scheduler_threads = 0;
  // Queue polls an idle scheduler thread spins through before it sleeps
  // until signalled. More polls: lower wake-up latency, more CPU burnt
  // after each burst of work. Default 1000 (tens of microseconds).
  uint32_t scheduler_poll_attempts = 1000;
  // fsync every journal batch. Turning it off loses the last writes on a
  // power failure (not on a process crash). Default true.
  bool sync = true;
  // RocksDB block cache size. Default 64 MiB.
  uint64_t block_cache_bytes = 64ull << 20;
  // Threads for blocking effect calls (model providers, http and exec
  // tools): how many such calls run at once. Default 16, 1 to 1024.
  uint32_t effect_threads = 16;
  // HTTP connections open at once; past it a new connection is answered
  // 503 and closed before anything is read. keeld lowers it when the
  // process's descriptor limit cannot also serve the store (it logs the
  // split at start). Default 1024, at least 1.
  uint32_t max_connections = 1024;
  // Time a new connection has to send its first request's headers.
  // Default 10 s.
  uint32_t http_header_timeout_ms = 10'000;
  // Files the store keeps open at once (RocksDB max_open_files); 0 = sized
  // by keeld from the descriptor limit at start. Default 0.
  uint32_t store_open_files = 0;
  // Free space the store keeps on its disk: below it, writes are refused
  // (507) before the disk is full, so compactions and the write-ahead log
  // always find room, and they resume by themselves once space returns.
  // Default 64 MiB; 0 turns the check off.
  uint64_t reserved_disk_bytes = 64ull << 20;
  // Node starts after a crash that may each see the same model or tool
  // call still running before the call is no longer started again: the
  // call then fails ("the node stopped N times in a row while it ran")
  // instead of taking the node down again on every restart. Default 2;
  // 0 turns the guard off.
  uint32_t max_effect_crashes = 2;
  // Bytes of events in one ledger page (GET .../ledger, the ledger stream):
  // a page ends early with a `next` cursor rather than exceed it (a single
  // event larger than this is sent alone). Default 4 MiB.
  uint64_t max_page_bytes = 4ull << 20;
  // How long a processed message id (or a signal's dedupe key) keeps
  // answering retries with the first reply: the horizon of exactly-once.
  // A retry after it is a new message. Expired ids are trimmed as the
  // store compacts. A type may set its own (dedupe_window_ms in its spec).
  // Default 7 days; 0 keeps them forever.
  uint64_t dedupe_window_ms = 7ull * 24 * 3600 * 1000;
  // How often the node applies agent types' retention policies (automatic
  // compaction; agent_spec retention). Default 60 s, at least 1.
  uint32_t retention_interval_ms = 60'000;
  // The uid and gid exec tools run as when keeld runs as root (a tool never
  // runs as root). Default 65534 (nobody); a uid of its own makes
  // max_processes count only the tools' processes.
  uint32_t tool_uid = 65534;
  uint32_t tool_gid = 65534;
  // Secrets for agent types' ${secret:NAME} references, by name
  // ([A-Za-z0-9_.-]{1,64}): {"NAME": {"file": "/path"}} or {"NAME":
  // {"env": "VAR"}}. Others are set through the API and kept in the store.
  std::map<std::string, secret_origin> secrets;
  // The key that seals the store's secrets (32 bytes, mode 0600; created
  // at the first secret set). Default "": <data_dir>/secret.key.
  std::string secret_key_file;
  // The least severe log records written (base/log.hpp), and how: text
  // lines for a terminal or JSON Lines. Default info, text.
  log::level log_level = log::level::info;
  log::format log_format = log::format::text;
};

// One key of the config file. The loader (from_json), keeld --help
// (keys_help) and keeld --print-config (to_json) all read the table of
// them, config_keys(), so the three cannot drift apart; a key's default is
// what node_config{} holds.
struct config_key {
  const char* name;
  const char* type;     // as --help shows it: "integer", "string", "HOST:PORT", ...
  const char* meaning;  // one line
  // The default as --help words it when the value of node_config{} would
  // not say it (an empty path that means "none"); nullptr: that value.
  const char* default_text;
  bool secret;  // redacted by to_json
  status (*read)(const nlohmann::json& value, const std::string& where, node_config& c);
  nlohmann::json (*show)(const node_config& c);
};
const std::vector<config_key>& config_keys();

// The config as a JSON object of every key of config_keys(), as the file
// would set it; a set secret (the token) reads "<redacted>".
nlohmann::json to_json(const node_config& c);
// Every key with its type, default and meaning, for keeld --help: two lines
// each ("  idle_ms  integer, default 30000" and the meaning, indented).
std::string keys_help();

// Reads the JSON object `j` (keys as in node_config, plus "http":
// "HOST:PORT"); unknown keys and wrong types are errors naming `source` and
// the key.
result<node_config> from_json(const nlohmann::json& j, const std::string& source);
result<node_config> load_file(const std::string& path);

// Parses "HOST:PORT" into the config.
status set_http_address(node_config& c, const std::string& host_port);

// Checks the whole config: data_dir set, a token when not bound to
// loopback, limits in range, TLS files given in pairs and readable (that
// they hold valid PEM is checked where they are loaded, http/server).
status validate(const node_config& c);

// Whether the HTTP port speaks TLS.
inline bool tls_enabled(const node_config& c) {
  return !c.tls_cert.empty();
}

bool is_loopback_host(const std::string& host);

}  // namespace keel::config
