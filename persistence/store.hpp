#pragma once
// The node's RocksDB: one database, one column family per concern (see
// docs/formats.md). Reads are thread-safe and served from memtable / block
// cache (microseconds); all writes go through write(), normally called by
// the journal writer's thread. RocksDB headers stay behind this interface.

#include <atomic>
#include <cstdint>
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
  outbox
};
inline constexpr int family_count = 10;
const char* family_name(family f);

struct write_op {
  family cf;
  bool erase = false;
  std::string key;
  std::string value;
};
using write_set = std::vector<write_op>;

struct store_options {
  std::string dir;
  uint64_t block_cache_bytes = 64ull << 20;
  // Create the database when missing. Default true.
  bool create = true;
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

class store {
 public:
  // Opens (or creates) the database and checks its schema version. Errors:
  // io_error when RocksDB cannot open the directory, corruption when the
  // schema is not one this build reads.
  static result<std::unique_ptr<store>> open(const store_options& opts);
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // Applies all ops atomically, fsyncing the WAL when `sync`.
  status write(const write_set& ops, bool sync);

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

  // Number of keys RocksDB estimates in a family (for metrics).
  uint64_t estimate_keys(family f);

  struct impl;

 private:
  explicit store(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
  std::mutex id_mu_;
  uint64_t next_id_ = 0;
  uint64_t id_limit_ = 0;
};

}  // namespace keel::persistence
