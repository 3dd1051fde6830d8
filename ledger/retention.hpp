#pragma once
// Automatic compaction: a background thread that walks the agent directory
// a page at a time and applies each type's retention policy (agent_spec
// retention: keep the last N events, and every event younger than a time)
// through ledger_ops::apply_retention, which archives and compacts exactly as
// keel compact does. Bounded work per pass: at most `page` directory
// entries read and `max_compactions` agents compacted, then it sleeps for
// `interval_ms`; a cursor carries on where the last pass stopped.
// CAF-free.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "agent/registry.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

class retention_worker {
 public:
  struct options {
    uint32_t interval_ms = 60'000;
    std::size_t page = 256;
    std::size_t max_compactions = 16;
  };
  // `apply` compacts one agent if its policy calls for it; true when it
  // did. `is_local` says whether this node serves a name (a cluster).
  retention_worker(persistence::store& db, const agent::type_registry& types, options o,
                   std::function<bool(const std::string&)> apply,
                   std::function<bool(const std::string&)> is_local);
  ~retention_worker();  // stops the thread
  retention_worker(const retention_worker&) = delete;
  retention_worker& operator=(const retention_worker&) = delete;

  // One pass now (tests; the thread runs them on its own). Returns how many
  // agents it compacted.
  std::size_t pass();

 private:
  void run();
  std::size_t pass_locked();
  persistence::store& db_;
  const agent::type_registry& types_;
  options opts_;
  std::function<bool(const std::string&)> apply_;
  std::function<bool(const std::string&)> is_local_;
  std::mutex mu_;  // one pass at a time; guards cursor_ and stop_
  std::condition_variable wake_;
  bool stop_ = false;
  std::string cursor_;
  std::thread thread_;
};

}  // namespace keel::actors
