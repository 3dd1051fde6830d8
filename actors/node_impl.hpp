#pragma once
// The node's state (internal to actors/: node.cpp, the agent calls;
// node_lifecycle.cpp, start, stop, recovery and shard handoff). Includes
// CAF: only those two translation units see it.

#include <atomic>
#include <memory>
#include <mutex>

#include "actors/caf_types.hpp"
#include "actors/effect_pool.hpp"
#include "actors/ledger_ops.hpp"
#include "actors/node.hpp"
#include "actors/runtime.hpp"
#include "actors/timer_service.hpp"
#include "agent/registry.hpp"
#include "base/clock.hpp"
#include "base/names.hpp"
#include "effects/secret_table.hpp"
#include "ledger/retention.hpp"
#include "ledger/type_catalog.hpp"
#include "persistence/journal_writer.hpp"

namespace keel::actors {

struct node::impl {
  runtime rt;
  std::unique_ptr<persistence::store> db;
  std::unique_ptr<persistence::journal_writer> journal;
  std::unique_ptr<timer_service> timers;
  std::unique_ptr<agent::type_registry> types;
  std::unique_ptr<type_catalog> catalog;
  std::unique_ptr<ledger_ops> ledgers;
  // Started last and stopped first: it calls into the node.
  std::unique_ptr<retention_worker> retention;
  // Before the pool: destroyed after it, so no call outlives it.
  std::unique_ptr<secret_table> secrets;
  std::unique_ptr<effect_pool> pool;
  std::unique_ptr<caf::actor_system_config> caf_cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor supervisor;
  std::mutex stop_mu;
  std::atomic<bool> stopped{false};
  // start_options::hold_recovery: no recovery and no timers until begin().
  std::atomic<bool> held{false};

  status recover();
  // Wakes the agents with accepted, unconsumed messages or effects in
  // flight (not worker tasks: those wait in the queues).
  status wake_pending(bool requeue_tasks);
  // Counts a crash since the last clean stop against every effect that was
  // running through it, then marks this run as running.
  void count_crash();

  void submit(request_ptr r) {
    if (stopped.load(std::memory_order_acquire)) {
      fail(*r, error(code::unavailable, "node is shutting down"));
      return;
    }
    if (hand_elsewhere(rt, r)) return;
    r->received_ns = mono_ns();
    caf::anon_send(supervisor, std::move(r));
  }

  // Requests naming an agent validate the name before anything else.
  bool reject_bad_name(request& r) {
    status s = validate_agent_name(r.name);
    if (s) return false;
    fail(r, s);
    return true;
  }
};

}  // namespace keel::actors
