#include "net/raft/loop.hpp"

#include <cassert>
#include <utility>

namespace keel::raft {

loop::loop() : thread_([this] { run(); }) {}

loop::~loop() {
  stop();
}

bool loop::post(task fn) {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return false;
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
  return true;
}

loop::timer_id loop::every(std::chrono::milliseconds period, task fn) {
  timer_id id;
  {
    std::lock_guard lk(mu_);
    id = next_timer_++;
    timers_.emplace(id, timer{period, clock::now() + period, std::move(fn)});
  }
  // The loop may be waiting for a later deadline than this one.
  cv_.notify_one();
  return id;
}

void loop::cancel(timer_id id) {
  std::lock_guard lk(mu_);
  timers_.erase(id);
}

void loop::stop() {
  assert(!on_loop_thread());
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void loop::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    if (!queue_.empty()) {
      task fn = std::move(queue_.front());
      queue_.pop_front();
      lk.unlock();
      fn();
      lk.lock();
      continue;
    }
    if (stopping_) return;
    // The earliest timer due; a due one runs now, after the queue (posted
    // work never waits behind a burst of ticks for long).
    auto next = timers_.end();
    for (auto it = timers_.begin(); it != timers_.end(); ++it) {
      if (next == timers_.end() || it->second.due < next->second.due) next = it;
    }
    auto now = clock::now();
    if (next != timers_.end() && next->second.due <= now) {
      timer& t = next->second;
      t.due = now + t.period;
      // A copy: the task may cancel its own timer while it runs.
      task fn = t.fn;
      lk.unlock();
      fn();
      lk.lock();
      continue;
    }
    if (next == timers_.end()) {
      cv_.wait(lk);
    } else {
      // A copy: cancel() may erase the timer while the loop waits.
      clock::time_point due = next->second.due;
      cv_.wait_until(lk, due);
    }
  }
}

}  // namespace keel::raft
