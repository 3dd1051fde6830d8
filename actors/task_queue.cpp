#include "actors/task_queue.hpp"

#include <algorithm>

namespace keel::actors {

namespace {
// The holder of tasks rebuilt at start-up until their first lease runs out.
constexpr std::string_view restart_holder = "(before restart)";
}  // namespace

std::string task_id(uint64_t agent_id, uint64_t effect, uint32_t attempt) {
  return std::to_string(agent_id) + "." + std::to_string(effect) + "." + std::to_string(attempt);
}

void task_queue::add(worker_task t, int64_t leased_until_ms) {
  std::lock_guard lk(mu_);
  add_locked(std::move(t), leased_until_ms);
}

bool task_queue::add_new(worker_task t, int64_t leased_until_ms) {
  std::lock_guard lk(mu_);
  // Known, or ended a moment ago: a scan of the store that found its
  // marker still open may have raced the agent recording its result.
  if (tasks_.count(t.id) || done_.count(t.id)) return false;
  add_locked(std::move(t), leased_until_ms);
  return true;
}

void task_queue::add_locked(worker_task t, int64_t leased_until_ms) {
  t.worker = leased_until_ms > 0 ? std::string(restart_holder) : std::string();
  t.lease_until_ms = leased_until_ms;
  auto& order = order_[t.queue];
  if (!tasks_.count(t.id)) order.push_back(t.id);
  tasks_[t.id] = std::move(t);
}

void task_queue::remove(const std::string& agent, uint64_t effect) {
  std::lock_guard lk(mu_);
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    if (it->second.agent == agent && it->second.effect == effect) {
      auto& order = order_[it->second.queue];
      order.erase(std::remove(order.begin(), order.end(), it->first), order.end());
      note_done_locked(it->first);
      it = tasks_.erase(it);
    } else {
      ++it;
    }
  }
}

void task_queue::note_done_locked(const std::string& id) {
  if (!done_.insert(id).second) return;
  done_order_.push_back(id);
  if (done_order_.size() > done_kept) {
    done_.erase(done_order_.front());
    done_order_.pop_front();
  }
}

void task_queue::remove_where(const std::function<bool(const worker_task&)>& pick) {
  std::lock_guard lk(mu_);
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    if (pick(it->second)) {
      auto& order = order_[it->second.queue];
      order.erase(std::remove(order.begin(), order.end(), it->first), order.end());
      it = tasks_.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<worker_task> task_queue::poll(const std::string& queue, const std::string& worker,
                                            int64_t now_ms) {
  std::lock_guard lk(mu_);
  auto q = order_.find(queue);
  if (q == order_.end()) return std::nullopt;
  // Oldest first; a lease that ran out makes its task ready where it stands.
  for (const auto& id : q->second) {
    auto& t = tasks_.at(id);
    if (!t.worker.empty() && t.lease_until_ms > now_ms) continue;
    if (!t.worker.empty() && !t.idempotent) continue;  // lapsed: take_lapsed's
    if (!t.worker.empty()) ++requeued_;
    t.worker = worker;
    t.lease_until_ms = now_ms + t.lease_ms;
    ++t.deliveries;
    return t;
  }
  return std::nullopt;
}

result<worker_task> task_queue::find(const std::string& id, const std::string& worker,
                                     int64_t now_ms) {
  std::lock_guard lk(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end())
    return error(code::not_found, "task " + id + " is unknown or already finished");
  const worker_task& t = it->second;
  if (!worker.empty() && !t.worker.empty() && t.worker != worker && t.worker != restart_holder &&
      t.lease_until_ms > now_ms)
    return error(code::conflict, "task " + id + " is leased to worker " + t.worker);
  return t;
}

void task_queue::finish(const std::string& id) {
  std::lock_guard lk(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  auto& order = order_[it->second.queue];
  order.erase(std::remove(order.begin(), order.end(), id), order.end());
  note_done_locked(id);
  tasks_.erase(it);
}

std::vector<worker_task> task_queue::take_lapsed(int64_t now_ms) {
  std::lock_guard lk(mu_);
  std::vector<worker_task> out;
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    const worker_task& t = it->second;
    if (t.idempotent || t.worker.empty() || t.lease_until_ms > now_ms) {
      ++it;
      continue;
    }
    auto& order = order_[t.queue];
    order.erase(std::remove(order.begin(), order.end(), it->first), order.end());
    note_done_locked(it->first);
    out.push_back(std::move(it->second));
    it = tasks_.erase(it);
  }
  return out;
}

std::map<std::string, task_queue::queue_stats> task_queue::stats(int64_t now_ms) {
  std::lock_guard lk(mu_);
  std::map<std::string, queue_stats> out;
  for (const auto& [id, t] : tasks_) {
    auto& s = out[t.queue];
    if (!t.worker.empty() && t.lease_until_ms > now_ms)
      ++s.leased;
    else
      ++s.ready;
  }
  return out;
}

uint64_t task_queue::requeued() const {
  std::lock_guard lk(mu_);
  return requeued_;
}

}  // namespace keel::actors
