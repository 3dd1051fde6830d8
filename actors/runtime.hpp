#pragma once
// Internal to actors/: what every actor of a node shares (the runtime
// context); the requests it routes are in request.hpp.
// CAF-free, so it can be included anywhere in the layer.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "actors/agent_census.hpp"
#include "actors/effect_calls.hpp"
#include "actors/effect_pool.hpp"
#include "actors/node.hpp"
#include "actors/replicator.hpp"
#include "actors/request.hpp"
#include "actors/task_queue.hpp"
#include "agent/registry.hpp"
#include "base/histogram.hpp"
#include "config/node_config.hpp"
#include "effects/contexts.hpp"
#include "persistence/journal_writer.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

class timer_service;
class type_catalog;
class secret_table;

struct node_metrics {
  std::atomic<uint64_t> live{0};
  std::atomic<uint64_t> activations{0};
  std::atomic<uint64_t> hibernations{0};
  std::atomic<uint64_t> snapshots{0};
  std::atomic<uint64_t> spawns{0};
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> duplicates{0};
  std::atomic<uint64_t> signals{0};
  std::atomic<uint64_t> signals_refused{0};
  std::atomic<uint64_t> queries{0};
  std::atomic<uint64_t> events{0};
  std::atomic<uint64_t> inbox_spills{0};
  std::atomic<uint64_t> timers_fired{0};
  std::atomic<uint64_t> agent_failures{0};
  std::atomic<uint64_t> model_calls{0};
  std::atomic<uint64_t> tool_calls{0};
  std::atomic<uint64_t> effect_failures{0};
  std::atomic<uint64_t> recoveries{0};
  histogram activation_ns;  // shell spawn -> state loaded
  histogram accept_ns;      // request received by the node -> durable acknowledgement
};

// Shared by all actors of one node; outlives them (owned by node::impl).
struct runtime {
  config::node_config cfg;
  persistence::store* db = nullptr;
  persistence::journal_writer* journal = nullptr;
  // In a replicated cluster, where shells' writes go instead of the journal
  // (actors/replicator.hpp); null on a single node.
  replicator* repl = nullptr;
  timer_service* timers = nullptr;
  const agent::type_registry* types = nullptr;
  // The types' versions in the store: finds a version the registry lacks,
  // registers new ones (ledger/type_catalog.hpp).
  type_catalog* catalog = nullptr;
  // The shortest idle time of any agent type: the supervisor's sweep uses it.
  // Lowered when a version with a shorter idle_ms is registered.
  std::atomic<uint32_t> sweep_idle_ms{30'000};
  void lower_sweep_idle(uint32_t ms) {
    uint32_t cur = sweep_idle_ms.load();
    while (ms < cur && !sweep_idle_ms.compare_exchange_weak(cur, ms)) {
    }
  }
  effect_plugins plugins;
  // The node's secrets (effects/secret_table.hpp): effects expand their
  // references and redact their outcomes through it.
  secret_table* secrets = nullptr;
  effect_pool* pool = nullptr;
  // The blocking calls handed to `pool` and not finished, with their abort
  // signals (node::abort_effects).
  effect_calls calls;
  task_queue tasks;
  node_metrics metrics;
  // Agents on disk by phase, and the live ones (actors/agent_census.hpp).
  agent_census census;
  // Hands a request to the supervisor (from any thread); after stop() it
  // fails the request with unavailable. Set by the node.
  std::function<void(std::shared_ptr<request>)> route;
  // Where requests for agents not served here go (node::set_router); null
  // on a single node.
  std::atomic<std::shared_ptr<remote_router>> router;

  // Names with a live shell, for listings (the supervisor's table is only
  // readable from inside the supervisor).
  std::mutex live_mu;
  std::unordered_set<std::string> live_names;
  void set_live(const std::string& name, bool live) {
    std::lock_guard lk(live_mu);
    if (live)
      live_names.insert(name);
    else
      live_names.erase(name);
  }
  bool is_live(const std::string& name) {
    std::lock_guard lk(live_mu);
    return live_names.count(name) != 0;
  }
};

// Stops the live shells whose names `pick` selects (a shard handed to
// another node); `done` gets how many were stopped.
struct evict_order {
  std::function<bool(std::string_view)> pick;
  std::function<void(std::size_t)> done;
  std::size_t stopped = 0;  // shells told to stop
  std::size_t waiting = 0;  // ... not yet down
};
using evict_ptr = std::shared_ptr<evict_order>;

// Ids the node gives messages sent without one; clients may not use the
// prefix, and such ids are not dedupe keys.
inline constexpr std::string_view generated_id_prefix = "auto-";
inline bool is_generated_id(std::string_view id) {
  return id.starts_with(generated_id_prefix);
}

// When the cluster does not serve r->name here: hands a message or spawn to
// the router, fails anything else with unavailable, and returns true.
bool hand_elsewhere(runtime& rt, request_ptr& r);

// node_listing.cpp: what the node tells without activating an agent. A
// page of the directory entries `filter` keeps (blocking store reads); the
// metrics (`journal`, `db` null once stopped).
result<agent_list> list_agents(runtime& rt, std::string_view prefix, std::string_view after,
                               std::size_t limit, const list_filter& filter);
std::string render_metrics(runtime& rt, persistence::journal_writer* journal,
                           persistence::store* db);

}  // namespace keel::actors
