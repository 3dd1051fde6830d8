#pragma once
// The state machine of one replicated group (a libraft `raft_fsm`, version
// 2) over the node's store. It applies committed entries (entry.hpp) as
// blind writes, so every replica writes the leader's bytes:
//
// - Each entry's writes and the group's applied index go in one batch,
//   unsynced: the raft log is the durable record, and the next synced write
//   to the store (any log append) makes the batch durable with it.
// - An entry at or below the stored applied index is skipped, so libraft
//   re-applying from its snapshot after a restart changes nothing.
// - `leader_begin{T}` sets the term of record; `writes` stamped with any
//   other term are fenced: their ops are dropped on every replica alike (a
//   shell that outlived its leadership cannot write from stale memory).
//   Fencing is per entry: the term is in the entry's header, so whoever
//   batches proposals puts only proposals of one term in an entry.
// - The snapshot is a small marker (group, applied index, term of record);
//   the group's data itself is the store's. Restoring checks that the store
//   already holds the state the marker names (its ranges are streamed in
//   before a follower installs a snapshot). A refused restore leaves the
//   buffer to libraft, which in 0.15 frees its bytes but loses its 16-byte
//   array: refusal is for a bug in the streaming, not a routine path. A
//   store whose group data a fetch left incomplete (fetching_key) accepts
//   any marker: the io applies nothing before a new fetch replaced it.
//
// Outcome of an apply: libraft hands the `*result` the state machine set to
// the proposer's raft_apply callback, on the leader only, right after apply
// returns; followers drop it. So `*result` points at a report inside the
// state machine (no allocation to leak), valid until the next apply:
// report_of() reads it in the callback.
//
// When a write fails (no_space, unavailable), apply returns RAFT_NOSPACE or
// RAFT_IOERR and writes nothing; last_error() says why. libraft 0.15 then
// leaves its last applied index where it was. On the leader it tries the
// same entry again at the next append completion or AppendEntries result,
// and the proposer's callback waits until then. On a follower a failure met
// while handling an AppendEntries message stops the instance
// (RAFT_UNAVAILABLE): the node must close the group and start it again once
// the store takes writes (store::on_writable); the skip above makes the
// re-apply harmless. An entry that does not decode returns RAFT_CORRUPT.
//
// Thread-safety: none; libraft calls it on the thread that drives the raft
// instance, and the accessors belong to that thread too.
// Lifetime: `db` (and `writes`) must outlive it; it must outlive the raft
// instance it serves.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.hpp"
#include "net/raft/keys.hpp"
#include "net/raft/raft_c.hpp"
#include "persistence/journal_sink.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

enum class apply_outcome : uint8_t {
  applied,
  fenced,  // a writes entry of a term other than the term of record
  // At or below the stored applied index: applied before a restart. A
  // proposer never sees it (its request does not survive the restart).
  already_applied,
};

struct apply_report {
  uint64_t index = 0;
  apply_outcome outcome = apply_outcome::applied;
};

// The snapshot's content (docs/formats.md, "Replicated group entries"):
// u8 format (1), u32 group, u64 applied index, u64 term of record, big
// endian.
struct snapshot_marker {
  group_id group = 0;
  uint64_t applied = 0;
  uint64_t term_of_record = 0;
};
std::string encode_marker(const snapshot_marker& m);
// Errors: corruption when the bytes are not a marker.
result<snapshot_marker> decode_marker(std::string_view bytes);

class group_fsm {
 public:
  // Reads the group's applied index, term of record and reserved ids from
  // `db`. Writes go to `writes` when given (a test's faulty sink), else to
  // `db`. Errors: as store::get; corruption when a stored value is not 8
  // bytes.
  static result<std::unique_ptr<group_fsm>> open(persistence::store& db, group_id g,
                                                 persistence::journal_sink* writes = nullptr);
  group_fsm(const group_fsm&) = delete;
  group_fsm& operator=(const group_fsm&) = delete;

  // What raft_init (or raft_fixture_grow) takes.
  raft_fsm* fsm() { return &fsm_; }
  // The raft instance it serves: apply takes an entry's index from its
  // last applied index (0.15's apply has no index argument). REQUIRES:
  // called before the instance applies anything.
  void attach(struct raft* r) { raft_ = r; }

  group_id group() const { return group_; }
  // The index of the last command entry applied (0: none).
  uint64_t applied_index() const { return applied_; }
  uint64_t term_of_record() const { return term_of_record_; }
  uint64_t reserved_ids() const { return reserved_ids_; }
  // Rereads the applied index, term of record and reserved ids from the
  // store, after a fetch replaced the group's data. Errors: as open.
  status reload() { return load(); }

  // Why the last apply or restore failed; ok when the last one did not.
  const status& last_error() const { return last_error_; }

  // In a raft_apply callback with status 0: what the apply of `req`'s entry
  // did. nullopt when `result` is not this entry's report (a failed
  // request has none).
  static std::optional<apply_report> report_of(const apply_request* req, const void* result);

 private:
  group_fsm(persistence::store& db, group_id g, persistence::journal_sink* writes);
  status load();
  int apply(const raft_buffer& buf, void** result);
  int snapshot(raft_buffer* bufs[], unsigned* n_bufs);
  int restore(raft_buffer* buf);
  int fail(int rv, status why);

  static int apply_cb(raft_fsm* f, const raft_buffer* buf, void** result);
  static int snapshot_cb(raft_fsm* f, raft_buffer* bufs[], unsigned* n_bufs);
  static int restore_cb(raft_fsm* f, raft_buffer* buf);
  static int finalize_cb(raft_fsm* f, raft_buffer* bufs[], unsigned* n_bufs);

  persistence::store& db_;
  persistence::store_sink own_sink_;
  persistence::journal_sink& writes_;
  group_id group_;
  raft_fsm fsm_{};
  struct raft* raft_ = nullptr;
  uint64_t applied_ = 0;
  uint64_t term_of_record_ = 0;
  uint64_t reserved_ids_ = 0;
  apply_report report_;
  status last_error_;
};

}  // namespace keel::raft
