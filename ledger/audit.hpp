#pragma once
// Reading an agent's ledger as a whole, for audit,
// export, import, fork, compaction and replay. Blocking store reads: call
// from a thread of your own, never a CAF scheduler thread.
//
// The export format (one JSON object per line, docs/formats.md):
//   {"seq", "type", "time", "data", "prev", "hash"}
// with blobs resolved into `data` and the chain fields as hex. Encoding an
// exported event again gives the same record bytes and so the same hash:
// an import proves it loaded exactly what was exported.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/replay.hpp"
#include "ledger/codec.hpp"
#include "persistence/store.hpp"
#include "persistence/value_kinds.hpp"

namespace keel::actors {

using json = nlohmann::json;

// An exported ledger, parsed: what an import or a fork hands to the new
// agent's shell.
struct ledger_import {
  std::vector<agent::recorded_event> events;  // seq 1, 2, ... in order
  // The exported hash and previous hash of each event (hex; "" when the
  // line had none): the rebuilt chain must give the same.
  std::vector<std::string> hashes;
  std::vector<std::string> prevs;
  // Loaded without its chain (an export from before the chain, or stripped
  // of it), on the operator's explicit word: nothing ties it to its source,
  // and audit says so.
  bool unverified = false;
  persistence::agent_origin origin = persistence::agent_origin::imported;  // or forked
  std::string parent;                                                      // fork: the agent forked
  uint64_t fork_seq = 0;
  std::string by;  // who asked
  // Fork with an override: the replacement for the effect the state after
  // `events` waits for, and the recorded event it replaces.
  std::optional<json> replacement;
  std::optional<agent::event> replaced;
};

// A compaction, prepared off the actor threads and applied by the agent's
// shell (which owns its directory entry): the events from..through are
// archived; the state at `through` becomes a snapshot.
struct compaction_plan {
  uint64_t from = 0;
  uint64_t through = 0;
  std::string anchor;    // hash (hex) of the record at `through`
  std::string snapshot;  // the encoded snapshot record of the state at `through`
  blob_list blobs;       // its blobs
};

// One event as an export line.
json export_line(uint64_t seq, const agent::event& e, const chain_hash& prev,
                 const chain_hash& hash);
// Parses export lines (JSON objects, in order from seq 1) into events and
// hashes. Errors: invalid_argument naming the line.
status parse_export(const json& lines, ledger_import& out);

struct stored_event {
  uint64_t seq = 0;
  agent::event ev;
  std::optional<chain_link> link;
};

// The agent's events with seq in [from, to], blobs resolved; with
// `links`, each with its chain fields (a SHA-256 per record). Errors: as
// the store's, corruption for a record that does not decode.
result<std::vector<stored_event>> read_events(persistence::store& db, uint64_t agent_id,
                                              std::string_view name, uint64_t from, uint64_t to,
                                              bool links = true);

struct verify_report {
  bool intact = false;
  uint64_t first_seq = 0;  // first seq checked (after a compaction: compacted_seq + 1)
  uint64_t last_seq = 0;
  uint64_t events = 0;
  // Leading records written before the chain existed (checksummed, not
  // chained); the chain starts after them.
  uint64_t legacy = 0;
  uint64_t bad_seq = 0;  // when !intact: the first record that fails
  std::string reason;    // when !intact
  std::string head;      // hash of the last record (hex): pin it to detect later rewrites
};

// Checks the agent's hash chain: every record decodes and its checksum
// holds, seqs are consecutive, each stored hash is its content's hash, each
// record links to the one before it (the first to the compaction anchor or
// to zeros), and every blob it refers to is present with the right hash.
result<verify_report> verify_ledger(persistence::store& db, const persistence::agent_meta& meta,
                                    std::string_view name);

// The hash of the record at `seq` (zeros for seq 0): where the chain
// continues from. A record written before the chain existed gets the
// SHA-256 of its bytes.
result<chain_hash> chain_head_at(persistence::store& db, uint64_t agent_id, uint64_t seq,
                                 std::string_view name);

}  // namespace keel::actors
