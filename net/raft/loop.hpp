#pragma once
// The raft loop: one thread that runs every libraft call and callback of a
// node's groups (libraft is single-threaded per instance; many instances
// share the thread). Other threads hand it work with post(); periodic work
// (each group's tick) is registered with every().
//
// Thread-safety: post, every, cancel and stop may be called from any
// thread, the loop's own included. Tasks run one at a time, in the order
// they were posted; a timer's task runs on the loop like any other.
// Lifetime: stop() (or the destructor) runs what is already queued, then
// joins the thread; posts after it are dropped.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace keel::raft {

class loop {
 public:
  using task = std::function<void()>;
  using timer_id = uint64_t;
  using clock = std::chrono::steady_clock;

  loop();
  ~loop();
  loop(const loop&) = delete;
  loop& operator=(const loop&) = delete;

  // Queues `fn`; false (and `fn` dropped) once stop() has begun.
  bool post(task fn);
  // Runs `fn` every `period`, at the multiples of `period` on the clock
  // (the first one after now; timers of one period run in the same turn),
  // until cancel(id) or stop(). A run that falls behind is not repeated to
  // catch up.
  timer_id every(std::chrono::milliseconds period, task fn);
  // After cancel returns, `fn` does not start again (when called on the
  // loop, it may be the timer's own run that cancels).
  void cancel(timer_id id);

  // Runs what is queued, then joins the thread. Idempotent. REQUIRES: not
  // called from the loop thread.
  void stop();

  bool on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  struct timer {
    std::chrono::milliseconds period;
    clock::time_point due;
    task fn;
  };
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<task> queue_;
  std::map<timer_id, timer> timers_;
  timer_id next_timer_ = 1;
  bool stopping_ = false;
  // This loop's phase for its timers (loop.cpp, next_boundary).
  const uint64_t phase_seed_ = std::random_device{}() * uint64_t{0x9E3779B97F4A7C15};
  std::thread thread_;
};

}  // namespace keel::raft
