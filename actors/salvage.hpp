#pragma once
// keeld --salvage: the operator's step after a node refused to start on a
// damaged write-ahead log (persistence/store.hpp). It keeps what is intact
// and says exactly what it drops, so nothing is lost silently:
//
//   1. the logs are read (persistence/wal_reader.hpp): where the damage is,
//      and every write batch after it that still reads;
//   2. the logs are copied to <data>/salvage/<stamp>/ (the evidence);
//   3. the store is opened to the last intact record (RocksDB's
//      point-in-time recovery), which drops the rest;
//   4. each dropped batch is compared with what the store now holds: what
//      differs is lost, per agent (ledger seqs, accepted messages and their
//      ids, the agent itself when its creation was lost), and written to
//      <data>/salvage/<stamp>/report.json (fsynced);
//   5. the names of agents lost entirely are reserved in the store, so they
//      are never handed out again (a spawn, import or fork of one is
//      refused, naming the report);
//   6. a node is started on the store and every surviving agent that lost
//      something records a `salvaged` event (an operator signal, exactly
//      once: its dedupe key names the salvage), so its own ledger says so.
//
// Blocking; run it instead of serving (keeld exits afterwards).

#include <string>

#include <nlohmann/json.hpp>

#include "actors/node.hpp"
#include "base/status.hpp"
#include "config/node_config.hpp"
#include "ledger/writer.hpp"
#include "persistence/wal_reader.hpp"

namespace keel::actors {

// The meta key that reserves a name lost to a salvage; its value is
// {"salvage": stamp, "report": path} (ledger::batch_builder writes it).
using ledger::lost_name_key;

// Salvages the store in cfg.data_dir (see above); `opts` is what a normal
// start gets (the agent types, so the affected agents can record the
// loss). Returns the report. Errors: not_found when no log is damaged
// (nothing to salvage: the message says what else may stop the start),
// io_error / corruption when the store cannot be opened even so.
result<nlohmann::json> salvage(const config::node_config& cfg, start_options opts);

// Step 4 alone: what the batches `scan` lists after its damage held that
// `db` does not, as the report's "agents", "other_keys_lost",
// "keys_compared" and "keys_lost". Keys of families that are not an
// agent's (meta, outbox, raft) count under "other_keys_lost" only; a range
// erase counts each key it would have removed that `db` still holds.
// Errors: the store's.
result<nlohmann::json> survey_losses(persistence::store& db, const persistence::wal_scan& scan);

}  // namespace keel::actors
