#include "actors/agent_census.hpp"

#include <algorithm>
#include <vector>

namespace keel::actors {

using persistence::family;

std::string listed_phase_of(const persistence::agent_meta& m) {
  if (m.status != agent_status::active) return std::string(to_string(m.status));
  return m.phase.empty() ? "unknown" : m.phase;
}

census_entry census_of(const persistence::agent_meta& m) {
  return {listed_phase_of(m), m.status == agent_status::active};
}

status agent_census::count(persistence::store& db) {
  std::map<std::string, int64_t> phases;
  int64_t active = 0;
  std::string after;
  for (;;) {
    auto page = db.list_agents("", after, 1024);
    if (!page) return page.error();
    for (const auto& a : *page) {
      const census_entry e = census_of(a.meta);
      ++phases[e.phase];
      active += e.active ? 1 : 0;
    }
    if (page->size() < 1024) break;
    after = page->back().name;
  }
  std::lock_guard lk(mu_);
  by_phase_ = std::move(phases);
  active_ = active;
  return status::ok();
}

void agent_census::move(const std::optional<census_entry>& from,
                        const std::optional<census_entry>& to) {
  if (from == to) return;
  std::lock_guard lk(mu_);
  if (from) {
    auto it = by_phase_.find(from->phase);
    if (it != by_phase_.end() && --it->second <= 0) by_phase_.erase(it);
    active_ -= from->active ? 1 : 0;
  }
  if (to) {
    ++by_phase_[to->phase];
    active_ += to->active ? 1 : 0;
  }
}

std::map<std::string, uint64_t> agent_census::by_phase() const {
  std::lock_guard lk(mu_);
  std::map<std::string, uint64_t> out;
  for (const auto& [phase, n] : by_phase_)
    if (n > 0) out[phase] = static_cast<uint64_t>(n);
  return out;
}

uint64_t agent_census::hibernated() const {
  int64_t active = 0;
  {
    std::lock_guard lk(mu_);
    active = active_;
  }
  return static_cast<uint64_t>(
      std::max<int64_t>(0, active - live_active_.load(std::memory_order_relaxed)));
}

status write_counted(persistence::store& db, agent_census& census,
                     const persistence::write_set& ops) {
  // What the entries were and will be; the last op on a key wins, as in
  // the write itself.
  std::map<std::string, std::pair<std::optional<census_entry>, std::optional<census_entry>>> moves;
  for (const auto& op : ops) {
    if (op.cf != family::agents) continue;
    // A range erase would move entries the census never sees one by one.
    // Nothing writes one here; refused before anything is written.
    if (op.erase && !op.range_end.empty())
      return error(code::internal, "a range erase of directory entries (from '" + op.key +
                                       "') cannot be counted; such a write is never made");
    auto [it, fresh] = moves.try_emplace(op.key);
    if (fresh) {
      auto old = db.get_agent(op.key);
      if (!old) return old.error();
      if (*old) it->second.first = census_of(**old);
    }
    it->second.second.reset();
    if (!op.erase) {
      auto m = persistence::decode_agent_meta(op.value, "agents entry of " + op.key);
      if (!m) return m.error();
      it->second.second = census_of(*m);
    }
  }
  KEEL_TRY(db.write(ops, true));
  for (const auto& [key, m] : moves) census.move(m.first, m.second);
  return status::ok();
}

}  // namespace keel::actors
