#pragma once
// The structured values persistence owns (agent directory, inbox, dedupe,
// timers), each stored as a record (record.hpp) whose payload is
// MessagePack. Ledger events and snapshots are records too, but their
// payload belongs to the agent layer.

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/agent_status.hpp"
#include "base/status.hpp"
#include "persistence/msgpack.hpp"
#include "persistence/value_kinds.hpp"

namespace keel::persistence {

// Record types of the values below; agent events use codes < 0xF000.
enum class value_type : uint16_t {
  agent_meta = 0xF001,
  inbox_entry = 0xF002,
  dedupe_entry = 0xF003,
  timer_entry = 0xF004,
  effect_marker = 0xF005,
  outbox_entry = 0xF006,
  cluster_state = 0xF007,
  type_version = 0xF008,  // meta: one stored version of an agent type
  type_latest = 0xF009,   // meta: the version of a type new agents get
  api_token = 0xF00C,     // meta: an API token (its hash), principal and scopes
  secret_value = 0xF00A,  // meta: a sealed secret (persistence/secret_store.hpp)
};

// agents: name -> agent_meta.
struct agent_meta {
  uint64_t id = 0;
  std::string type;
  agent_status status = agent_status::active;
  int64_t created_ms = 0;
  // The newest snapshot's seq (0: none).
  uint64_t snapshot_seq = 0;
  // True when the snapshot at snapshot_seq is the whole story: no ledger
  // events after it and no inbox entries. Set when an agent hibernates,
  // cleared by its first write after activation; lets activation skip the
  // ledger-tail and inbox scans.
  bool clean = false;
  // Events up to this seq were compacted away (moved to an archive); the
  // snapshot at it is the agent's history before. 0: none.
  uint64_t compacted_seq = 0;
  // The chain hash of the record at compacted_seq (hex): the anchor that
  // keeps the remaining ledger verifiable.
  std::string compacted_head{};
  // Spawned here; forked (parent, fork_seq name where it came from) or
  // imported (an exported ledger loaded for analysis: it takes no input and
  // runs nothing). Stored as "", "fork" or "import" (value_kinds.hpp).
  agent_origin origin = agent_origin::spawned;
  std::string parent{};
  uint64_t fork_seq = 0;
  // An import loaded without its hash chain (keel import --unverified).
  bool unverified = false;
  // What listings and metrics show without activating the agent, written
  // in the same batch as the events that change it: where it stands (its
  // type's phase, e.g. "idle" or "waiting_approval"; its status once not
  // active) and whether an operator paused it. "" in entries written
  // before phases were kept, until the agent's next write.
  std::string phase{};
  bool paused = false;

  friend bool operator==(const agent_meta&, const agent_meta&) = default;
};

// inbox: agent id + arrival -> inbox_entry. A message or signal accepted
// durably but not yet consumed by the agent.
struct inbox_entry {
  std::string agent;  // name, so recovery can route without a directory scan
  uint64_t arrival = 0;
  inbox_kind kind = inbox_kind::message;
  std::string id;  // message id (dedupe key) or signal name
  std::string from;
  nlohmann::json body;
  // A signal's dedupe key, when its sender gave one (signals delivered by
  // another node's outbox); "" otherwise. Messages dedupe by `id`.
  std::string dedupe;
};

// dedupe: agent id + message id -> dedupe_entry. Written with the message's
// acceptance; `reply` is filled in once the message has been processed.
struct dedupe_entry {
  uint64_t arrival = 0;
  bool processed = false;
  nlohmann::json reply;
  // When a processed entry stops answering retries of its id (the horizon
  // of exactly-once) and may be trimmed; INT64_MAX: never. 0: not set (an
  // entry not yet processed, which is never trimmed, or one written before
  // expiry existed, which the store's default window covers).
  int64_t expires_ms = 0;
  // Whether a retry at `now` is still the same message.
  bool live(int64_t now) const { return !processed || expires_ms == 0 || expires_ms > now; }
};

// timers: due + agent id + timer id -> timer_entry.
struct timer_entry {
  std::string agent;
  nlohmann::json payload;
};

// effects: agent id + effect id -> effect_marker. Written with the event
// that starts an effect, deleted with the one that ends it, so a restart
// finds what was in flight: in-process calls to recover, worker tasks to
// queue again, messages to deliver.
struct effect_marker {
  std::string agent;
  effect_kind kind = effect_kind::model;  // a model call, or the tool's kind
  std::string tool;
  uint32_t attempt = 1;
  std::string queue;  // worker
  uint32_t lease_ms = 0;
  nlohmann::json arguments;
  // Node crashes in a row this effect was running through (counted at
  // each start after a crash; kept when the effect is started again).
  uint32_t node_crashes = 0;
  // The tool's calls may be repeated (a worker task whose lease ran out is
  // handed out again). Absent in markers written before it existed: false.
  bool idempotent = false;
  // The raft term of the leader that started the effect, so a later leader
  // can tell an effect of its own term from one a deposed leader started.
  // 0 on a node without a cluster, and in markers written before terms were
  // kept; stored only when not 0, so such markers keep their bytes.
  uint64_t term = 0;
};

std::string encode(const agent_meta& v, int64_t time_ms);
std::string encode(const effect_marker& v, int64_t time_ms);
std::string encode(const inbox_entry& v, int64_t time_ms);
std::string encode(const dedupe_entry& v, int64_t time_ms);
std::string encode(const timer_entry& v, int64_t time_ms);

// Values the cluster layer owns, stored as JSON objects: outbox entries
// (outbox family) and cluster state (the shard map and shard handoffs, meta
// family). The layer above defines and checks their fields.
std::string encode_object(value_type t, const nlohmann::json& object, int64_t time_ms);
result<nlohmann::json> decode_object(value_type t, std::string_view bytes, std::string_view what);

// `what` names the value in errors; a record of another type, a payload
// missing fields, or a closed-set field (status, origin, kind) holding a
// string that names no value is a corruption error.
result<agent_meta> decode_agent_meta(std::string_view bytes, std::string_view what);
result<inbox_entry> decode_inbox_entry(std::string_view bytes, std::string_view what);
result<dedupe_entry> decode_dedupe_entry(std::string_view bytes, std::string_view what);
result<timer_entry> decode_timer_entry(std::string_view bytes, std::string_view what);
result<effect_marker> decode_effect_marker(std::string_view bytes, std::string_view what);

// MessagePack decoding for stored payloads: a corruption error naming
// `what` instead of nullopt (to_msgpack is in msgpack.hpp).
result<nlohmann::json> from_msgpack(std::string_view bytes, std::string_view what);

}  // namespace keel::persistence
