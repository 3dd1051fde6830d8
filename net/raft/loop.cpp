#include "net/raft/loop.hpp"

#include <cassert>
#include <utility>

namespace keel::raft {

namespace {

// The first multiple of `period` after `now`, shifted by this loop's phase:
// timers of one period fire in the same turn of the loop (every group's
// tick together, so their heartbeats to one member leave as one message),
// while another process's loop ticks at another phase (members whose
// election timers fire in the same tick would split their votes).
loop::clock::time_point next_boundary(loop::clock::time_point now, std::chrono::milliseconds period,
                                      uint64_t phase_seed) {
  const auto p = std::chrono::duration_cast<loop::clock::duration>(period);
  if (p.count() <= 0) return now;
  const loop::clock::duration phase(static_cast<loop::clock::rep>(phase_seed % p.count()));
  const auto since = now.time_since_epoch() - phase;
  return loop::clock::time_point((since / p + 1) * p + phase);
}

}  // namespace

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
    timers_.emplace(id,
                    timer{period, next_boundary(clock::now(), period, phase_seed_), std::move(fn)});
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
      t.due = next_boundary(now, t.period, phase_seed_);
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
