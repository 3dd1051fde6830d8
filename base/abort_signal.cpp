#include "base/abort_signal.hpp"

#include <condition_variable>
#include <mutex>

namespace keel {

// std::stop_source does the hard part: raising exactly once, and hooks
// that are never run after (nor destroyed while) their callback runs.
// A wait is a hook that notifies a condition variable of its own.
bool abort_signal::wait_for(std::chrono::milliseconds timeout) const {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;
  std::stop_callback wake(source_.get_token(), [&] {
    std::lock_guard lk(mu);
    woken = true;
    cv.notify_all();
  });
  std::unique_lock lk(mu);
  cv.wait_for(lk, timeout, [&] { return woken; });
  return raised();
}

abort_signal::hook abort_signal::on_raise(std::function<void()> fn) const {
  return hook(std::make_unique<std::stop_callback<std::function<void()>>>(source_.get_token(),
                                                                          std::move(fn)));
}

}  // namespace keel
