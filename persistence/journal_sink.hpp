#pragma once
// Where the journal writer's batches go. On a single node that is the store
// (store_sink: one RocksDB WriteBatch, its log fsynced); a test puts a sink
// in between that fails or delays writes on demand
// (tests/support/faulty_sink.hpp), and replication will be another sink.
//
// Thread-safety: the journal writer calls write() from its one thread only.

#include <memory>

#include "base/status.hpp"
#include "persistence/store.hpp"

namespace keel::persistence {

class journal_sink {
 public:
  virtual ~journal_sink() = default;
  // Applies `ops` atomically, durably when `sync`, and says whether they
  // are. An error does not prove the ops were not applied (an fsync that
  // fails may leave them on disk): the caller must not act on them, and a
  // later read may still find them. Errors: as store::write: no_space
  // (nothing written), unavailable (not durable, maybe on disk: retry).
  virtual status write(const write_set& ops, bool sync) = 0;
};

// The default sink: the node's store. Lifetime: `db` must outlive it.
class store_sink final : public journal_sink {
 public:
  explicit store_sink(store& db) : db_(db) {}
  status write(const write_set& ops, bool sync) override { return db_.write(ops, sync); }

 private:
  store& db_;
};

}  // namespace keel::persistence
