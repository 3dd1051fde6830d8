#pragma once
// Internal to persistence/ (store.cpp, store_reads.cpp, store_doctor.cpp): the RocksDB side
// of the store. Nothing outside this folder includes it.

#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/listener.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "persistence/store.hpp"

namespace keel::persistence {

// A RocksDB status as ours; `what` says what was being done.
status from_rocks(const rocksdb::Status& s, const std::string& what);

class store_listener;

// A live read_view's RocksDB snapshot. `snap` is set and cleared with the
// store's `mu` held exclusively or, by the view itself, with it held shared
// and `views_mu` held; a reopen releases every snapshot (they belong to the
// database it closes) and leaves the views ended.
struct read_view::pin {
  const rocksdb::Snapshot* snap = nullptr;
};

struct store::impl {
  store_options opts;
  std::shared_ptr<rocksdb::Logger> logger;
  std::shared_ptr<store_listener> listener;
  std::shared_ptr<rocksdb::Cache> cache;

  // The database. Every use holds `mu` shared; reopening holds it
  // exclusively. `db` is null only while a reopen found no way to open.
  mutable std::shared_mutex mu;
  // Outlives every opening of `db` (RocksDB holds a raw pointer to it).
  std::unique_ptr<rocksdb::CompactionFilter> dedupe_filter;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // index = family
  rocksdb::ColumnFamilyHandle* default_cf = nullptr;
  // Set only with `mu` held exclusively; read without it (health).
  std::atomic<bool> read_only{false};

  rocksdb::ColumnFamilyHandle* cf(family f) const { return handles[static_cast<int>(f)]; }

  // Why writes are stopped; guarded by state_mu. A stop RocksDB reported
  // needs a reopen; the reserve check clears by itself.
  mutable std::mutex state_mu;
  status stopped;             // ok while writable
  bool needs_reopen = false;  // RocksDB itself refuses writes
  int64_t stopped_ms = 0;
  std::vector<std::string> warnings;
  std::vector<damaged_file> damage;
  std::function<void()> writable_fn;
  std::atomic<uint64_t> write_errors{0};
  std::atomic<uint64_t> recoveries{0};

  // Live read views (store_view.cpp); close_db releases their snapshots.
  std::mutex views_mu;
  std::vector<std::weak_ptr<read_view::pin>> views;
  // REQUIRES: mu held exclusively.
  void end_views();

  // Free space, re-read at most every 50 ms; lowered by what was written
  // since, so a burst cannot run past the reserve between two reads.
  std::atomic<int64_t> space_checked_ns{0};
  std::atomic<uint64_t> free_bytes{UINT64_MAX};

  // The recovery thread.
  std::mutex wake_mu;
  std::condition_variable wake;
  bool stopping = false;  // guarded by wake_mu
  std::thread doctor;

  ~impl();

  // Opens RocksDB for writing (or reading only); fills db, handles.
  // REQUIRES: mu held exclusively, or no other thread yet.
  status open_db(bool read_only_mode);
  // Destroys handles and the db; `flush` first (a clean close only).
  void close_db(bool flush);

  uint64_t refresh_free_space(bool force);
  // ok, or why a write must be refused now.
  status write_gate(std::size_t bytes);
  // Records that writes stopped (or were refused) for `why`.
  void stop_writes(status why, bool reopen);
  void warn(std::string text);
  // A read or compaction met a corrupt block: record the file it names.
  // REQUIRES: mu held (shared is enough).
  void note_corruption(const rocksdb::Status& s);
  // The status for a failed read: corruption is recorded and explained.
  status read_error(const rocksdb::Status& s, const std::string& what);
  void run_doctor();
  void start_doctor();
};

// Hears RocksDB's background errors (store_doctor.cpp): a corrupt table
// file met by a compaction is reported and writes go on; a hard error stops
// writes until the recovery thread reopens; a soft one is only reported.
// RocksDB's own recovery is refused (store.cpp says why).
class store_listener final : public rocksdb::EventListener {
 public:
  explicit store_listener(store::impl* s) : s_(s) {}
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* e) override;
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status,
                            bool* auto_recovery) override;

  // Guarded by s_->state_mu.
  std::vector<std::string> pending_corruption_;

 private:
  store::impl* s_;
};

}  // namespace keel::persistence
