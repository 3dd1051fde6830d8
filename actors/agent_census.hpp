#pragma once
// How many agents this node's store holds in each phase, and how many of
// the active ones have a live actor: the keel_agents{phase} and
// keel_agents_hibernated gauges, kept exact without activating anyone.
// Counted once from the directory entries at start, then moved by every
// write of a directory entry (agent shells, shard handoffs) once it is
// durable. CAF-free.
//
// Thread-safety: all methods are thread-safe.

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "persistence/store.hpp"

namespace keel::actors {

// What the census counts of one directory entry.
struct census_entry {
  std::string phase;  // agent_meta::phase, its status when it has none, or "unknown"
  bool active = false;

  friend bool operator==(const census_entry&, const census_entry&) = default;
};
census_entry census_of(const persistence::agent_meta& m);
// The phase an entry lists with: its own, its status once the agent is no
// longer active, "unknown" for an active agent's entry written before
// phases were kept.
std::string listed_phase_of(const persistence::agent_meta& m);

class agent_census {
 public:
  // Counts every directory entry in `db` (once, at start). Errors: the
  // store's, or corruption for an entry that does not decode.
  status count(persistence::store& db);
  // One entry changed from `from` to `to` (nullopt: it did not or no
  // longer exists).
  void move(const std::optional<census_entry>& from, const std::optional<census_entry>& to);
  // A live actor of an active agent came (+1) or went (-1).
  void add_live(int64_t n) { live_active_.fetch_add(n, std::memory_order_relaxed); }

  std::map<std::string, uint64_t> by_phase() const;
  // Active agents on disk without a live actor.
  uint64_t hibernated() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, int64_t> by_phase_;
  int64_t active_ = 0;
  std::atomic<int64_t> live_active_{0};
};

// A synced write of `ops` (a shard handoff's directory entries, among
// other keys) that moves the census with the entries it puts or erases.
// REQUIRES: no live actor holds those agents. Errors: the store's, and
// internal (nothing written) for a range erase in the agents family.
status write_counted(persistence::store& db, agent_census& census,
                     const persistence::write_set& ops);

// One actor's part in the census's live count: held while the agent it
// serves is on disk and active; given back at the latest when it dies.
class live_mark {
 public:
  live_mark() = default;
  live_mark(const live_mark&) = delete;
  live_mark& operator=(const live_mark&) = delete;
  ~live_mark() { set(nullptr, false); }
  void set(agent_census* census, bool live) {
    if (live == held_) return;
    if (live) census_ = census;
    if (census_) census_->add_live(live ? 1 : -1);
    held_ = live;
  }

 private:
  agent_census* census_ = nullptr;
  bool held_ = false;
};

}  // namespace keel::actors
