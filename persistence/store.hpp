#pragma once
// The node's RocksDB: one database, one column family per concern (see
// docs/formats.md). Reads are thread-safe and served from memtable / block
// cache (microseconds); all writes go through write(), normally called by
// the journal writer's thread. RocksDB headers stay behind this interface.
//
// Faults (docs/operations.md "Faults"): the store never takes the process
// down and never acknowledges a write that is not durable.
// - A write-ahead log damaged anywhere but in a torn last record makes
//   open() fail, naming the file and offset (scan_wal); the operator
//   salvages what is intact (actors/salvage.hpp) or restores a backup.
// - Below `reserved_disk_bytes` of free space, writes are refused
//   (code::no_space) before the disk is full. A write RocksDB fails (the
//   disk filled anyway, too many open files, an I/O error) stops writes
//   (no_space, or unavailable) while reads go on; the store recovers by
//   itself once the cause is gone, by reopening RocksDB (what it logged is
//   replayed). open() on a disk too full to open for writing opens
//   read-only and likewise switches to writing once it can.
// - Corrupt table files are recorded (health().damage) with the keys they
//   hold; a compaction that meets one fails without stopping writes, and
//   the start-up scans skip past them, so only the data in them is lost to
//   readers.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.hpp"
#include "persistence/record.hpp"
#include "persistence/values.hpp"

namespace keel::persistence {

enum class family : uint8_t {
  agents,
  ledger,
  snapshots,
  inbox,
  dedupe,
  timers,
  meta,
  effects,
  blobs,
  outbox,
  // Replicated groups' own bookkeeping: their raft log, term, vote and
  // snapshot metadata, and the index each group's state machine has
  // applied (net/raft; docs/formats.md). Empty on a node without a cluster.
  raft
};
inline constexpr int family_count = 11;
const char* family_name(family f);

struct write_op {
  family cf;
  bool erase = false;
  std::string key;
  std::string value;
  // With erase: erases every key in [key, range_end) instead of key alone
  // (one RocksDB range deletion). Empty: a single-key erase.
  std::string range_end = {};
};
using write_set = std::vector<write_op>;

struct store_options {
  std::string dir;
  uint64_t block_cache_bytes = 64ull << 20;
  // Create the database when missing. Default true.
  bool create = true;
  // Free space kept on the store's disk: writes are refused below it.
  // 0 turns the check off. Default 0 (keeld sets node_config's).
  uint64_t reserved_disk_bytes = 0;
  // Table files RocksDB keeps open at once; 0 = no bound (RocksDB's -1).
  uint32_t max_open_files = 0;
  // Size of one memtable of a family before it is flushed to a table file;
  // 0 = RocksDB's default (64 MiB). Small values make tests flush often.
  uint64_t write_buffer_bytes = 0;
  // Processed message ids (dedupe entries) written without an expiry, by
  // versions before it existed, are trimmed this long after they were
  // written; 0 keeps them. Default 0 (keeld sets node_config's window).
  int64_t dedupe_default_window_ms = 0;
  // The recovery thread's first retry delay; doubles up to 16 times that.
  // Default 1 s.
  uint32_t recovery_interval_ms = 1000;
  // Open to the last intact record of a damaged write-ahead log, dropping
  // what follows it (keeld --salvage only; see actors/salvage.hpp). Default
  // false: a damaged log is refused.
  bool point_in_time_recovery = false;
};

// A table file found corrupt, and what it holds.
struct damaged_file {
  std::string file;               // path
  std::string family;             // column family name
  std::string smallest, largest;  // its key range, printable
  std::string error;              // the first read error that named it
  int64_t seen_ms = 0;
};

// What the store can do now (store::health).
struct store_health {
  bool writable = true;
  // Opened read-only: the disk had no room to open it for writing.
  bool read_only = false;
  // Why writes are refused (no_space, io_error, corruption), or ok.
  code problem = code::ok;
  std::string reason;
  int64_t since_ms = 0;  // when writes stopped
  uint64_t free_bytes = 0;
  uint64_t reserved_bytes = 0;
  uint64_t write_errors = 0;  // writes refused or failed since open
  uint64_t recoveries = 0;    // times writes resumed after a stop
  std::vector<damaged_file> damage;
  // Trouble that does not stop writes (a compaction short of space, keys a
  // scan had to skip), newest last, at most 16.
  std::vector<std::string> warnings;
};

struct agent_listing {
  std::string name;
  agent_meta meta;
};

struct running_effect {
  uint64_t agent_id;
  uint64_t effect;
  effect_marker marker;
};

struct due_timer {
  int64_t due_ms;
  uint64_t agent_id;
  uint64_t timer_id;
  std::string key;
  timer_entry entry;
};

class store;

// A consistent read-only view of the whole store as it was when
// store::view() made it (a RocksDB snapshot): later writes are not seen.
// Thread-safety: any thread; one view may be read from several at once.
// Lifetime: must not outlive its store. A reopen of the store (recovery
// after a write failure) ends every view: its reads then fail with
// unavailable, and the caller starts over with a new one.
class read_view {
 public:
  ~read_view();
  read_view(const read_view&) = delete;
  read_view& operator=(const read_view&) = delete;

  result<std::optional<std::string>> get(family f, std::string_view key) const;
  // Pairs of family f with keys in [from, end) (end empty: to the family's
  // end), in key order: at most `limit` pairs, and no more once the keys
  // and values returned reach `max_bytes` (at least one pair is returned
  // when one is there). Errors: unavailable (the view ended), corruption,
  // io_error.
  result<std::vector<std::pair<std::string, std::string>>> scan(family f, std::string_view from,
                                                                std::string_view end,
                                                                std::size_t limit,
                                                                std::size_t max_bytes) const;

  struct pin;  // what the store tracks of a live view (store_engine.hpp)

 private:
  friend class store;
  read_view(store& s, std::shared_ptr<pin> p) : store_(s), pin_(std::move(p)) {}
  store& store_;
  std::shared_ptr<pin> pin_;
};

// The process that has the store in `dir` open, by its lock on DIR/LOCK
// (RocksDB takes an fcntl lock there): its pid, or 0 when it is in another
// PID namespace. nullopt when no process holds it (or there is no LOCK
// file yet). REQUIRES: this process does not have the store open: the probe
// opens and closes DIR/LOCK, and closing a file drops every fcntl lock the
// process holds on it.
std::optional<int> lock_holder(const std::string& dir);

class store {
 public:
  // Opens (or creates) the database and checks its schema version. Errors:
  // conflict when another process has the directory's store open (its
  // LOCK file is locked; lock_holder() names the process), io_error when
  // RocksDB cannot open the directory, corruption when the schema is not
  // one this build reads.
  static result<std::unique_ptr<store>> open(const store_options& opts);
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // Applies all ops atomically, fsyncing the WAL when `sync`. Errors:
  // no_space (below the reserve, or the disk is full), unavailable (this
  // write failed in RocksDB, and may still be replayed when the store
  // reopens; or writes are stopped by an earlier failure, or the store is
  // read-only).
  status write(const write_set& ops, bool sync);

  store_health health() const;
  // `fn` runs (on the store's recovery thread) each time writes resume
  // after a stop, so what waited for them can go on. Set once, before
  // anything can stop.
  void on_writable(std::function<void()> fn);

  result<std::optional<agent_meta>> get_agent(std::string_view name);
  // Allocates a fresh agent id. Ids are reserved durably in blocks, so a
  // crash may skip ids but never reuses one. Thread-safe; blocks (one fsync)
  // once per block.
  result<uint64_t> allocate_agent_id();

  // Raw ledger records of one agent with seq in [from, from + limit), in seq
  // order, verified; `who` names the agent in errors.
  result<std::vector<std::pair<uint64_t, record>>> read_ledger(uint64_t agent_id, uint64_t from,
                                                               std::size_t limit,
                                                               std::string_view who);
  // Highest seq in the agent's ledger; 0 when empty.
  result<uint64_t> last_ledger_seq(uint64_t agent_id);
  // The newest snapshot (seq, record), if any.
  result<std::optional<std::pair<uint64_t, record>>> latest_snapshot(uint64_t agent_id,
                                                                     std::string_view who);
  // The snapshot at exactly `seq` (a point lookup), if present.
  result<std::optional<record>> read_snapshot(uint64_t agent_id, uint64_t seq,
                                              std::string_view who);
  // Every unconsumed inbox entry of one agent, in arrival order.
  result<std::vector<inbox_entry>> read_inbox(uint64_t agent_id, std::string_view who);
  result<std::optional<dedupe_entry>> find_message(uint64_t agent_id, std::string_view message_id,
                                                   std::string_view who);
  // Agents (by name order) whose name starts with `prefix` and sorts after
  // `after`; at most `limit`.
  result<std::vector<agent_listing>> list_agents(std::string_view prefix, std::string_view after,
                                                 std::size_t limit);
  // Names of agents that have unconsumed inbox entries; cost grows with
  // those agents only, not with all agents on disk.
  result<std::vector<std::string>> agents_with_inbox();
  // Timers due at or before `now_ms`, oldest first, at most `limit`.
  // Resumes after the key `after` when it is not empty.
  result<std::vector<due_timer>> due_timers(int64_t now_ms, std::size_t limit,
                                            std::string_view after = {});
  // Due time of the earliest timer, if any.
  result<std::optional<int64_t>> next_timer_due();

  // Every effect marker (effects family), in key order: the effects that
  // were running or queued when the node stopped.
  result<std::vector<running_effect>> running_effects();

  // A blob by its key (content hash), if present.
  result<std::optional<std::string>> get_blob(std::string_view key);
  // Whether a blob is stored (a bloom-filter check first; a read only when
  // the filter cannot rule it out).
  bool has_blob(std::string_view key);

  // Generic access for layers that keep their own keys (the cluster's outbox
  // and shard state in `outbox` and `meta`): one value, or the pairs whose
  // key starts with `prefix` from `from` on (from >= prefix), at most
  // `limit`, in key order.
  result<std::optional<std::string>> get(family f, std::string_view key);
  result<std::vector<std::pair<std::string, std::string>>> scan(family f, std::string_view prefix,
                                                                std::string_view from,
                                                                std::size_t limit);

  // A consistent view of the store as it is now (read_view). Errors:
  // unavailable while the store is being reopened.
  result<std::unique_ptr<read_view>> view();

  // Rewrites a whole family now (what compactions do over time): expired
  // message ids are trimmed by it. Blocking; for operators and tests.
  status compact(family f);

  // Number of keys RocksDB estimates in a family (for metrics).
  uint64_t estimate_keys(family f);
  // RocksDB's id of the family, as write-ahead log records name it.
  uint32_t family_id(family f) const;

  struct impl;

 private:
  friend class read_view;
  explicit store(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
  status reserve_id_block(uint64_t limit);
  std::mutex id_mu_;
  uint64_t next_id_ = 0;
  uint64_t id_limit_ = 0;
};

}  // namespace keel::persistence
