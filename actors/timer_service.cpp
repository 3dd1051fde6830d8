#include "actors/timer_service.hpp"

#include <chrono>
#include <cstdio>

#include "base/clock.hpp"
#include "base/log.hpp"

namespace keel::actors {

namespace {
constexpr std::size_t scan_batch = 4096;
constexpr int64_t idle_wait_ms = 60'000;
}  // namespace

timer_service::timer_service(persistence::store& db, fire_fn fire, int64_t refire_ms)
    : db_(db), fire_(std::move(fire)), refire_ms_(refire_ms), thread_([this] { run(); }) {}

timer_service::~timer_service() {
  stop();
}

void timer_service::notify(int64_t due_ms) {
  std::lock_guard lk(mu_);
  if (due_ms < wake_at_) {
    wake_at_ = due_ms;
    cv_.notify_one();
  }
}

void timer_service::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

int64_t timer_service::scan(int64_t now) {
  // Every due timer is looked at on every scan, in batches, so timers that
  // were offered but not consumed yet never hide the ones behind them.
  std::map<std::string, int64_t> still_offered;
  std::string after;
  for (;;) {
    auto due = db_.due_timers(now, scan_batch, after);
    if (!due) {
      log::error("timer scan failed: " + due.error().to_string());
      return now + 1000;
    }
    for (auto& t : *due) {
      auto it = offered_.find(t.key);
      if (it != offered_.end() && now - it->second < refire_ms_) {
        still_offered.emplace(t.key, it->second);
        continue;
      }
      still_offered.emplace(t.key, now);
      fired_count_.fetch_add(1, std::memory_order_relaxed);
      fire_(t.entry.agent, t.timer_id);
    }
    if (due->size() < scan_batch) break;
    after = due->back().key;
  }
  // Timers no longer on disk were consumed; forget them.
  offered_.swap(still_offered);
  auto next = db_.next_timer_due();
  int64_t wake = now + idle_wait_ms;
  if (next && *next && **next > now) wake = std::min(wake, **next);
  // Offered timers stay on disk until their agents consume them: look again
  // soon, so later timers (and refires) are not missed behind them.
  if (!offered_.empty()) wake = std::min(wake, now + 100);
  return wake;
}

void timer_service::run() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    int64_t now = wall_ms();
    if (now >= wake_at_) {
      wake_at_ = INT64_MAX;  // notify() lowers it while we scan
      lk.unlock();
      int64_t next = scan(now);
      lk.lock();
      wake_at_ = std::min(wake_at_, next);
      continue;
    }
    cv_.wait_for(lk, std::chrono::milliseconds(wake_at_ - now));
  }
}

}  // namespace keel::actors
