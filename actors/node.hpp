#pragma once
// One Keel node: the agent runtime behind keeld's HTTP API.
//
// A node owns the RocksDB store, the journal writer (group commit), the
// timer service and a CAF actor system with one supervisor and one shell
// actor per live agent. Requests name agents; the supervisor activates
// dormant agents on demand (single-flight) and idle agents hibernate.
//
// Thread-safety: the asynchronous methods may be called from any thread,
// callbacks included; ledger() and list() block on the store, so call them
// from threads of your own. Callbacks run on node threads (actor or journal
// threads): they must be quick and must not block; hand work elsewhere.
// Lifetime: stop() (or the destructor) stops intake, waits for in-flight
// writes and their callbacks, then closes the store. Requests after stop()
// fail with code::unavailable.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.hpp"
#include "config/agent_spec.hpp"
#include "config/node_config.hpp"
#include "effects/contexts.hpp"
#include "effects/secret_table.hpp"
#include "persistence/journal_sink.hpp"
#include "persistence/store.hpp"
#include "persistence/value_kinds.hpp"

namespace keel::actors {

using json = nlohmann::json;

template <class T>
using callback = std::function<void(result<T>)>;

struct agent_view {
  std::string name;
  std::string type;
  // The version of the type it runs (a spec hash; "" for built-in types).
  std::string version;
  std::string status;
  uint64_t last_seq = 0;
  // True when the agent was dormant on disk and this request activated it.
  bool hibernated = false;
  int64_t created_ms = 0;
  // Where an agent loop stands ("idle", "thinking", "waiting_approval", ...);
  // empty for types without phases.
  std::string phase;
  json state;
  // Paused by an operator (pause/resume).
  bool paused = false;
  // Where the agent came from: spawned, forked (of `parent` at seq
  // fork_seq) or imported; and the forks made of it, {"name", "at"}.
  persistence::agent_origin origin = persistence::agent_origin::spawned;
  std::string parent;
  uint64_t fork_seq = 0;
  json forks = json::array();
  // Events up to this seq were compacted into an archive (0: none).
  uint64_t compacted_seq = 0;
};

struct send_ack {
  std::string id;          // the message id (generated when the sender gave none)
  uint64_t seq = 0;        // arrival position in the agent's mailbox
  bool duplicate = false;  // the id was accepted before; nothing new happened
  // Accepted into this node's durable outbox because the agent's node is
  // down; delivered (exactly once) when it returns. seq is 0 then.
  bool queued = false;
};

// What an agent answered to a message or signal: the one reply type from the
// agent's decision to the HTTP edge (a retry of the message id hears the same).
struct agent_reply {
  bool ok = true;
  json body;
  std::string code;  // when !ok, e.g. "invalid_message", "conflict"
  std::string message;
};

struct ledger_entry {
  uint64_t seq = 0;
  std::string type;
  int64_t time_ms = 0;
  json data;
  // The hash chain (hex): the previous record's hash and this one's; empty
  // for a record written before the chain existed.
  std::string prev;
  std::string hash;
};

// One page of an agent's ledger (node::ledger).
struct ledger_page {
  std::vector<ledger_entry> events;
  // Where the next page starts when this one ended before the ledger did
  // (its event or byte bound was reached); 0 when it reached the end.
  uint64_t next = 0;
};

// An agent type the node runs (node::types).
struct type_summary {
  std::string name;
  std::string latest;  // the latest version's hash ("" for a built-in type)
  std::size_t versions = 0;
  bool builtin = false;
};

// One version of an agent type (node::type_versions, node::type_version).
// A built-in type has one: version "", latest, no spec.
struct type_version_info {
  std::string version;  // the spec's hash
  bool latest = false;
  bool builtin = false;
  int64_t added_ms = 0;
  std::string source;  // where it came from (a file, "PUT /v1/types/...")
  std::string description;
  json spec;  // the canonical spec when asked for, else null
};

// What node::put_type did.
struct type_put {
  std::string name;
  std::string version;
  bool is_new = false;   // a version the node did not have
  bool changed = false;  // the latest version changed
};

// What node::put_secret did.
struct secret_put {
  std::string name;
  bool created = false;  // there was no such secret in the store before
  int64_t updated_ms = 0;
};

struct agent_summary {
  std::string name;
  std::string type;
  std::string status;
  int64_t created_ms = 0;
  bool live = false;
  // Where it stands, from its directory entry (no activation): its type's
  // phase ("idle" for types without), its status once it is no longer
  // active, "unknown" for an entry of an earlier version until the agent's
  // next write.
  std::string phase;
  bool paused = false;
};

// Which agents a listing shows (node::list).
struct list_filter {
  std::vector<std::string> phases;  // only these listed phases; empty: any
  bool all = false;                 // terminated agents too (else only when `phases` names them)
};
struct agent_list {
  std::vector<agent_summary> agents;
  // Where the next page starts (pass it as `after`); "" at the end.
  std::string next_after;
};

// A worker task handed to an external worker (POST /v1/tasks/poll).
struct task_view {
  std::string id;
  std::string queue;
  std::string agent;
  std::string tool;
  json arguments;
  uint32_t attempt = 1;
  std::string idempotency_key;
  int64_t lease_until_ms = 0;
};

// What a worker reports for a task.
struct task_outcome {
  bool ok = true;
  json result;
  std::string error;
  bool retryable = false;
  // The worker cannot say the failed task did nothing: a non-idempotent
  // tool's call then ends in doubt.
  bool maybe_applied = false;
};

class replicator;

struct start_options {
  // Agent types declared in JSON (config/agent_spec.hpp), next to the
  // built-in ones. Names must be unique.
  std::vector<std::shared_ptr<const config::agent_spec>> agent_types;
  // Model providers and tool runners by name/kind; the scripted provider and
  // the exec runner are added when missing.
  effect_plugins plugins;
  // Threads for blocking effect calls; 0 = the config's effect_threads.
  uint32_t effect_threads = 0;
  // Start without recovering (no wake-ups of agents with queued messages or
  // effects in flight, no timers firing) until begin(): a cluster member
  // first sets its router, so it never wakes an agent it does not serve.
  bool hold_recovery = false;
  // Paths exec tools must never see, beyond the data directory (which is
  // always hidden): the node's config, token and key files.
  std::vector<std::string> hidden_paths;
  // For tests, never a config key: wraps the sink the journal writes
  // through (the store) in another, e.g. one that fails or delays writes
  // (tests/support/faulty_sink.hpp). Null: the store itself.
  std::function<std::unique_ptr<persistence::journal_sink>(
      std::unique_ptr<persistence::journal_sink>)>
      wrap_journal_sink;
  // In a replicated cluster, where shells' writes go instead of the journal
  // (actors/replicator.hpp); it must outlive the node. Null on a single
  // node.
  replicator* repl = nullptr;
};

struct inbound_message {
  std::string id;  // optional dedupe key
  std::string from;
  json body;
  // Refused (unavailable) rather than handed to the cluster when the agent
  // is not served here: a replicated cluster's client messages, which only
  // the group's leader may acknowledge, never wait in an outbox.
  bool here_only = false;
};

// A client's message id: at most 256 bytes, no control characters, not in
// the range the node generates ("auto-..."). Errors: invalid_argument.
status validate_message_id(std::string_view id);
// A signal's dedupe key: at most 256 bytes, no control characters.
status validate_dedupe_key(std::string_view key);
// What a client may send: also not in the range the cluster generates for
// messages and signals it delivers ("keel-..."), which share the agent's
// dedupe keys with client ids.
status validate_client_message_id(std::string_view id);
inline constexpr std::string_view cluster_id_prefix = "keel-";

// Where a node sends requests for agents it does not serve: the cluster
// layer (net/cluster/node.hpp) implements it. Without one, every agent is
// local. Methods are called from node threads and must not block.
class remote_router {
 public:
  virtual ~remote_router() = default;
  // Whether this node serves `name` now (owns its shard, not moving).
  virtual bool is_local(std::string_view name) const = 0;
  // A message from an agent here (send_message) to a remote agent; `accepted`
  // runs once it is durable (here in the outbox, or at the owner).
  virtual void send(std::string name, inbound_message m, callback<send_ack> accepted) = 0;
  // spawn_agent of a name that lives elsewhere.
  virtual void spawn(std::string name, std::string type, json input, callback<agent_view> done) = 0;
  // Why `name` cannot be served here ("agent x lives on node n2").
  virtual std::string elsewhere(std::string_view name) const = 0;
};

struct runtime;
class ledger_ops;
class replicator;

class node {
 public:
  // Opens the store in cfg.data_dir, starts the actors and recovers: agents
  // with unconsumed inbox entries are activated; due timers fire. Errors:
  // invalid_argument (bad config), io_error / corruption (store).
  static result<std::unique_ptr<node>> start(const config::node_config& cfg,
                                             start_options opts = {});
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // Creates an agent. Errors: invalid_argument (name, type or input),
  // already_exists.
  void spawn(std::string name, std::string type, json input, callback<agent_view> done);
  // `accepted` runs once the message is durable; `replied` (may be empty)
  // once the agent has processed it. A repeated id is acknowledged with
  // duplicate=true and not processed again. Errors: not_found, conflict
  // (terminated agent), invalid_argument.
  void send(std::string name, inbound_message m, callback<send_ack> accepted,
            callback<agent_reply> replied);
  // `dedupe` (optional, at most 256 bytes) makes a signal idempotent like a
  // message id: a repeat is acknowledged as a duplicate and not processed.
  void signal(std::string name, std::string signal, json payload, callback<send_ack> accepted,
              callback<agent_reply> replied, std::string dedupe = {});
  // Read-only: answered from the agent's state, nothing is appended.
  void query(std::string name, json q, callback<json> done);
  void get(std::string name, callback<agent_view> done);
  // Marks the agent terminated (its ledger is kept). Errors: not_found,
  // conflict (already terminated).
  void terminate(std::string name, std::string by, callback<agent_view> done);

  // Runs another version of the agent's type from its next step: `to` is a
  // hash (or a unique prefix of at least 6 hex digits) or "latest".
  // Recorded as `upgraded` {"from", "to", "by"}; -> {"from", "to"}.
  // Errors: not_found (agent, or version), invalid_argument (a malformed or
  // ambiguous version), conflict (not active, already on that version, or
  // waiting in a call of a tool the version does not have).
  void upgrade(std::string name, std::string to, std::string by, callback<json> done);

  // Agent types and their versions (actors/node_types.cpp; blocking: call
  // from threads of your own). put_type: `spec` (a spec as in --agents, a
  // scripted model's script inline) becomes the latest version of its type,
  // durably. Errors: invalid_argument (as at load; a name other than
  // `name`), already_exists (a built-in type), io_error, no_space.
  result<type_put> put_type(std::string_view name, const json& spec);
  // Every type the node runs, by name.
  std::vector<type_summary> types();
  // The versions of type `name` in the order added; with `spec` each
  // version's canonical spec too. Errors: not_found.
  result<std::vector<type_version_info>> type_versions(std::string_view name, bool spec);
  // One version ("latest" or a hash, or a unique prefix of at least 6 hex
  // digits), with its spec. Errors: not_found.
  result<type_version_info> type_version(std::string_view name, std::string_view version);

  // Named secrets for agent types' ${secret:NAME} references
  // (effects/secret_table.hpp; actors/node_secrets.cpp). Blocking: call from
  // threads of your own. No answer ever holds a value.
  // put_secret: sets `name` in the store, sealed, durably. Errors:
  // invalid_argument (name, an empty or too large value), conflict (set in
  // the node config), no_space, unavailable, io_error.
  result<secret_put> put_secret(std::string_view name, std::string_view value);
  // Errors: invalid_argument, not_found, conflict (set in the node
  // config), the store's.
  status remove_secret(std::string_view name);
  // Every secret the node knows, by name (never a value).
  std::vector<secret_listing> secrets();

  // Cancels the agent's current turn: compensations of its completed tool
  // calls run in reverse order, then the turn ends "cancelled". Recorded as
  // the signal "cancel" with {"by"}. Errors: not_found, conflict (no turn).
  void cancel(std::string name, std::string by, callback<send_ack> accepted,
              callback<agent_reply> replied);

  // Worker queues. poll: the oldest ready task of `queue`, leased to
  // `worker` (nullopt: none). complete: the agent records the outcome, then
  // `done` runs; `worker` (may be empty) must hold the lease if one is held.
  // Errors: not_found (unknown or finished task), conflict (another worker
  // holds it, or the agent no longer waits for it).
  std::optional<task_view> poll_task(const std::string& queue, const std::string& worker);
  void complete_task(const std::string& id, const std::string& worker, task_outcome outcome,
                     callback<json> done);
  json task_stats();

  // Blocking store reads; call from a non-scheduler thread. A page holds at
  // most `limit` events, and takes no further event once it holds
  // `max_bytes` of event content (stored bytes plus the large payloads they
  // refer to): a page over large events stays bounded in memory (by
  // max_bytes plus one event).
  result<ledger_page> ledger(std::string_view name, uint64_t from, std::size_t limit,
                             uint64_t max_bytes = UINT64_MAX);

  // Audit, replay, fork sources, import, compaction and retention
  // (actors/ledger_ops.hpp). Valid as long as the node.
  ledger_ops& ledgers();

  // A page of the agents whose names start with `prefix`, after `after`,
  // at most `limit`, as `filter` keeps them, read from their directory
  // entries: listing activates no agent. A filter few agents pass may end
  // a page before `limit` (after reading 100000 entries), with next_after
  // set. Blocking. Errors: the store's, unavailable once stopped.
  result<agent_list> list(std::string_view prefix, std::string_view after, std::size_t limit,
                          const list_filter& filter = {});

  // Prometheus text exposition of the node's counters and latencies.
  std::string metrics_text();
  uint64_t live_agents() const;

  // Recovers what start() held back (start_options::hold_recovery); a no-op
  // otherwise. Errors: as start().
  status begin();

  // Wakes every agent with work pending (queued messages, effects in
  // flight) that the router now says is served here, and queues their
  // worker tasks not queued here yet: a replicated group's new leader
  // calls it. A no-op before begin(). Errors: store reads.
  status resume();

  // Hands requests for agents this node does not serve to `r` (null: serve
  // all). Safe to call at any time; requests already routed are not moved.
  void set_router(std::shared_ptr<remote_router> r);

  // For layers above that keep their own data in the node's store (the
  // cluster's outbox and shard state): reads go to storage(); commit()
  // applies `ops` through the node's group-committing journal and runs
  // `done` once they are durable (on the journal thread: be quick).
  persistence::store& storage();
  void commit(persistence::write_set ops, std::function<void(const status&)> done);
  // A synced write that may put or erase agents' directory entries (a
  // shard handoff): the node's agent gauges follow it. Blocking. REQUIRES:
  // no live actor holds those agents (evicted, or not yet served). Errors:
  // the store's, unavailable once stopped.
  status write_agents(const persistence::write_set& ops);

  // Shard handoff. evict(): stops the live agents `pick` selects and runs
  // `done` once they are gone and every write they had submitted is
  // durable; their worker tasks are dropped from the queues. The router
  // must already refuse those names (is_local false), or they come back. adopt(): agents whose data
  // was just written here by another node resume what they were doing (queued messages, effects in
  // flight, worker tasks, timers).
  void evict(std::function<bool(std::string_view)> pick, std::function<void()> done);
  status adopt(const std::vector<std::string>& names);

  // Aborts the blocking effect calls (model calls, http and exec tool runs)
  // of the agents `pick` selects, running on the effect threads or queued
  // for them: a node that stops leading their group calls it, so that a
  // new leader re-running a call never overlaps with this node's. Raises
  // each call's abort signal (effects/contexts.hpp) and returns how many it
  // raised (a call aborted before is not counted again). Running calls stop
  // as soon as their runner sees it, within a millisecond or so for the
  // exec tool (its processes are killed), the http tool and the openai
  // model (the request's connection is closed), and end retryable and maybe
  // applied; queued ones never start and end retryable, not applied. Either
  // outcome goes to its agent like any other. Built-in tools and worker tasks are
  // not calls here (evict drops the tasks).
  // Only calls submitted before it returns are aborted: stop handing the
  // agents to this node (the router, evict) first, or call it again after.
  // `pick` runs on this thread with a lock held: it must be quick and must
  // not call into the node. Safe from any thread, also after stop().
  std::size_t abort_effects(std::function<bool(std::string_view agent)> pick);

  // Stops intake, drains in-flight writes, closes the store. Idempotent.
  void stop();

  struct impl;

 private:
  explicit node(std::unique_ptr<impl> p);
  // For node_types.cpp and node_secrets.cpp, which stay free of CAF: the
  // runtime, or null once stopped.
  runtime* live_runtime();
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::actors
