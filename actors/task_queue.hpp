#pragma once
// Worker queues: tasks of `worker` tools wait here until an external worker
// polls them (POST /v1/tasks/poll), then stay leased until the worker
// completes or fails them, or the lease runs out and they are ready again.
//
// The queue is memory only; it is rebuilt at start-up from the durable
// effect markers (a task is durable from the write that started its
// effect). A completed task is recorded by its agent exactly once: results
// for a task that is no longer here answer not_found.
//
// Thread-safety: every method may be called from any thread.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::actors {

struct worker_task {
  std::string id;  // "<agent id>.<effect>.<attempt>"
  std::string queue;
  std::string agent;  // name
  uint64_t effect = 0;
  uint32_t attempt = 1;
  std::string tool;
  nlohmann::json arguments;
  uint32_t lease_ms = 30'000;
  // Filled in by poll():
  std::string worker;
  int64_t lease_until_ms = 0;
  uint32_t deliveries = 0;  // times it was handed to a worker
  // The tool's calls may be repeated: a task whose lease ran out is handed
  // to the next worker. Otherwise it leaves the queue instead (take_lapsed):
  // the worker may have done it, and only a human can say.
  bool idempotent = true;
};

std::string task_id(uint64_t agent_id, uint64_t effect, uint32_t attempt);

class task_queue {
 public:
  // Adds a task, ready unless `leased_until_ms` is in the future; a task with
  // the same id is replaced. At start-up tasks come back leased for one
  // lease: a worker that held one before the restart may still finish it,
  // and no second worker gets it meanwhile.
  void add(worker_task t, int64_t leased_until_ms = 0);
  // add() unless a task with the same id is known (then it is left as it
  // is, its lease too) or was finished, removed or taken as lapsed lately
  // (among the last done_kept); whether it added.
  bool add_new(worker_task t, int64_t leased_until_ms);
  // Forgets the task of (agent, effect), whatever its attempt.
  void remove(const std::string& agent, uint64_t effect);
  // Forgets every task `pick` selects (the agents moved to another node).
  void remove_where(const std::function<bool(const worker_task&)>& pick);
  // The oldest ready task of `queue` (expired leases of idempotent tasks are
  // ready again), now leased to `worker`; nullopt when none.
  std::optional<worker_task> poll(const std::string& queue, const std::string& worker,
                                  int64_t now_ms);
  // The task `id` while it is known, for `worker` (empty: any). Errors:
  // not_found; conflict when another worker holds a lease that has not run
  // out.
  result<worker_task> find(const std::string& id, const std::string& worker, int64_t now_ms);
  // Drops `id` once its agent has recorded the result.
  void finish(const std::string& id);
  // Removes and returns the non-idempotent tasks whose lease ran out before
  // their worker reported (their agents put them in doubt).
  std::vector<worker_task> take_lapsed(int64_t now_ms);

  struct queue_stats {
    uint64_t ready = 0;
    uint64_t leased = 0;
  };
  std::map<std::string, queue_stats> stats(int64_t now_ms);
  uint64_t requeued() const;

 private:
  void add_locked(worker_task t, int64_t leased_until_ms);
  void note_done_locked(const std::string& id);

  static constexpr std::size_t done_kept = 4096;

  mutable std::mutex mu_;
  std::map<std::string, worker_task> tasks_;              // by id
  std::map<std::string, std::deque<std::string>> order_;  // queue -> ids, oldest first
  std::set<std::string> done_;                            // ids ended lately ...
  std::deque<std::string> done_order_;                    // ... oldest first
  uint64_t requeued_ = 0;
};

}  // namespace keel::actors
