#pragma once
// The ledger's write vocabulary: every key the runtime writes, and the
// encoding of its value, in one place (the layout is docs/formats.md).
// A batch_builder appends write ops to a write_set that the caller then
// submits as one atomic write (the journal writer, or store::write); it
// does no I/O itself.
//
// Events and snapshots may spill large strings to the blobs family
// (ledger/codec.hpp). Spilled blobs are held until put_spilled_blobs(),
// so that a batch carries each event's record before the blobs it names,
// as it always has; a builder destroyed with blobs still held is a bug
// (asserted).
//
// Thread-safety: none; a builder is a short-lived local of one writer.
// Lifetime: `ops` must outlive the builder.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agent/core.hpp"
#include "ledger/codec.hpp"
#include "persistence/store.hpp"
#include "persistence/values.hpp"

namespace keel::actors {
struct agent_bundle;
}

namespace keel::ledger {

using actors::blob_list;
using actors::chain_hash;

class batch_builder {
 public:
  explicit batch_builder(persistence::write_set& ops) : ops_(ops) {}
  ~batch_builder();
  batch_builder(const batch_builder&) = delete;
  batch_builder& operator=(const batch_builder&) = delete;

  // --- one agent's ledger (keys: agent id + seq) ---------------------------

  // The record of `e` at `seq`, chained after `head`, which becomes the new
  // record's hash. Large strings are spilled (see put_spilled_blobs).
  void append_event(uint64_t agent_id, uint64_t seq, const agent::event& e, chain_hash& head);
  // A ledger record encoded already (an import re-encodes and checks its
  // chain before the agent has an id).
  void put_event_record(uint64_t agent_id, uint64_t seq, std::string record);
  void erase_event(uint64_t agent_id, uint64_t seq);

  // The snapshot of `st` at `seq`, stamped `now`; large strings spilled.
  void put_snapshot(uint64_t agent_id, uint64_t seq, const agent::agent_state& st, int64_t now);
  // A snapshot record encoded already (a compaction's, prepared off the actor).
  void put_snapshot_record(uint64_t agent_id, uint64_t seq, std::string record);
  void erase_snapshot(uint64_t agent_id, uint64_t seq);

  // --- inbox and dedupe -----------------------------------------------------

  // A message or signal accepted durably and not yet consumed, at `arrival`.
  void spill_to_inbox(uint64_t agent_id, const persistence::inbox_entry& e, int64_t now);
  void remove_from_inbox(uint64_t agent_id, uint64_t arrival);
  // Message id (or a signal's dedupe key) `id` accepted at `arrival`; its
  // reply is not known yet.
  void mark_seen(uint64_t agent_id, std::string_view id, uint64_t arrival, int64_t now);
  // ... and processed, with `reply`, answering retries until `expires_ms`.
  void mark_seen_with_reply(uint64_t agent_id, std::string_view id, uint64_t arrival,
                            const nlohmann::json& reply, int64_t expires_ms, int64_t now);

  // --- effects and timers ---------------------------------------------------

  // The marker of a running effect: written with the event that starts it
  // (or again, with a new crash count, at a start after a crash) and erased
  // with the one that ends it. The marker carries its term as given (0 off
  // a cluster); the caller sets it.
  void start_effect(uint64_t agent_id, uint64_t effect, const persistence::effect_marker& m,
                    int64_t now);
  void end_effect(uint64_t agent_id, uint64_t effect);
  void put_timer(uint64_t agent_id, uint64_t timer_id, int64_t due_ms,
                 const persistence::timer_entry& t, int64_t now);
  void erase_timer(uint64_t agent_id, uint64_t timer_id, int64_t due_ms);

  // --- the directory and blobs ----------------------------------------------

  // The agent's directory entry (agents family, keyed by name).
  void put_directory_entry(std::string_view name, const persistence::agent_meta& m, int64_t now);
  // Whether `op` is `name`'s directory entry (a batch carries it once).
  static bool is_directory_entry(const persistence::write_op& op, std::string_view name);
  // Whether `op` writes an agent's ledger or inbox (what makes its
  // snapshot no longer the whole story).
  static bool is_ledger_or_inbox(const persistence::write_op& op);

  // Blobs by content hash (a blob written twice is the same key and value).
  void put_blobs(const blob_list& blobs);
  // The blobs events and snapshots spilled since the last call, except those
  // `stored` says the store holds already.
  void put_spilled_blobs(const std::function<bool(std::string_view key)>& stored = {});

  // --- whole agents ---------------------------------------------------------

  // Stores bundle `b` under this node's id `local_id` for its name; keys of
  // an agent stored before under `local_id` are overwritten. Errors:
  // corruption (a key or entry the bundle cannot hold).
  [[nodiscard]] status put_bundle(const actors::agent_bundle& b, uint64_t local_id);
  // Deletes what the bundle holds, except blobs and type versions (other
  // agents may share them).
  void erase_bundle(const actors::agent_bundle& b);

  // --- node-wide values in the meta and outbox families ---------------------

  // An agent-type version (`type/<name>/<hash>`), and the version new agents
  // of the type get (`type_latest/<name>`).
  void put_type_version(std::string_view name, std::string_view hash, const nlohmann::json& spec,
                        std::string_view source, int64_t now);
  void put_type_latest(std::string_view name, std::string_view hash, int64_t now);
  // The cluster's state under `key` (shard maps, handoffs; net/cluster owns
  // the keys and fields).
  void put_cluster_state(std::string_view key, const nlohmann::json& state, int64_t now);
  void erase_cluster_state(std::string_view key);
  // An outbox entry under `key` (net/cluster owns the key and fields).
  void put_outbox_entry(std::string key, const nlohmann::json& entry, int64_t created_ms);
  void erase_outbox_entry(std::string key);
  // Reserves `name`, lost to a salvage, for good; `note` says which salvage
  // and where its report is.
  void reserve_lost_name(std::string_view name, const nlohmann::json& note);

 private:
  void put(persistence::family f, std::string key, std::string value) {
    ops_.push_back({f, false, std::move(key), std::move(value)});
  }
  void erase(persistence::family f, std::string key) {
    ops_.push_back({f, true, std::move(key), {}});
  }

  persistence::write_set& ops_;
  blob_list spilled_;
};

// The meta key that reserves a name lost to a salvage: lost_agent/<name>.
std::string lost_name_key(std::string_view name);

}  // namespace keel::ledger
