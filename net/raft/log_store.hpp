#pragma once
// The durable state of one replicated group's raft log, in the store's
// raft column family (keys: net/raft/keys.hpp; values: docs/formats.md,
// "Replicated groups"): current term, vote, the last snapshot's metadata,
// and the log entries the snapshot does not cover.
//
// Reads and the rare synchronous writes (term, vote, bootstrap) go to the
// store directly; the frequent ones (append, truncate, snapshot) are built
// here as write_sets and submitted by the io, so they share the journal's
// group commit and keep its submission order.
//
// Thread-safety: a log_store has no state of its own beyond the group id;
// calls are as thread-safe as the store's reads and writes. The io calls it
// from its loop thread only.
// Lifetime: `db` must outlive the log_store.

#include <cstdint>
#include <functional>

#include "base/status.hpp"
#include "net/raft/keys.hpp"
#include "net/raft/raft_c.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

// How the io makes a write_set durable: in the node, the journal writer's
// submit (synced); `done` may run on any thread.
using submit_fn = std::function<void(persistence::write_set, std::function<void(const status&)>)>;

inline constexpr uint8_t snapshot_meta_format = 1;

// What raft_io.load hands to libraft. Every pointer is raft_malloc'd and
// owned by whoever holds the struct: libraft once load returns it, else
// release(). entries' data lives in one batch buffer that every entry's
// `batch` points to.
struct loaded_log {
  raft_term term = 0;
  raft_id vote = 0;
  raft_snapshot* snapshot = nullptr;  // null: no snapshot yet
  raft_index start_index = 1;         // index of entries[0]
  raft_entry* entries = nullptr;
  size_t n_entries = 0;
};
void release(loaded_log& log);
// Frees a snapshot as load() and read_snapshot() build it.
void release(raft_snapshot* snapshot);

class log_store {
 public:
  log_store(persistence::store& db, group_id g);

  group_id group() const { return group_; }

  // Everything stored, as libraft wants it at start. Errors: corruption
  // (a value that does not decode, or entries that are not contiguous
  // from start_index, or that leave a gap after the snapshot), and the
  // store's read errors.
  result<loaded_log> load() const;
  // The last snapshot's metadata and data (one buffer), raft_malloc'd;
  // null when there is none.
  result<raft_snapshot*> read_snapshot() const;

  // Synced writes. set_term also clears the vote (a vote is per term).
  status set_term(raft_term term);
  status set_vote(raft_id id);
  // The first entry (index 1, term 1, RAFT_CHANGE with libraft's encoding
  // of `conf`) and term 1. Errors: conflict when the group already has a
  // term, entries or a snapshot.
  status bootstrap(const raft_configuration& conf);
  // The index of the last entry stored, or the snapshot's when the log is
  // empty past it; 0 for a group without state.
  result<raft_index> last_index() const;
  // Appends a configuration entry (libraft's raft_recover): `conf` at the
  // last index + 1 in the current term, synced. Errors: conflict for a
  // group without state.
  status recover(const raft_configuration& conf);

  // Entries stored from index `first` on (copies: the entries may be freed
  // once the write_set is built).
  persistence::write_set append_ops(raft_index first, const raft_entry* entries, unsigned n) const;
  // Drops the entries from `index` on.
  persistence::write_set truncate_ops(raft_index index) const;
  // Stores the snapshot's metadata and data and drops the entries it makes
  // unneeded: those up to snapshot.index - trailing (libraft keeps
  // `trailing` entries before the snapshot in its own log too), or every
  // entry when trailing is 0 (an installed snapshot replaces the log).
  persistence::write_set snapshot_ops(const raft_snapshot& snapshot, unsigned trailing) const;

 private:
  persistence::store& db_;
  const group_id group_;
};

}  // namespace keel::raft
