#pragma once
// Waiting on a condition with a deadline: the only way tests wait.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace keel::test {

// Polls `pred` (with a short yield between polls) until it holds or
// `timeout` passes; returns whether it held.
template <class Pred>
bool eventually(Pred&& pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// The largest of `sample()` taken every `every` over `window`: for
// measurements (a process's memory over a while), never for waiting.
template <class F>
auto peak_over(std::chrono::milliseconds window, F&& sample,
               std::chrono::milliseconds every = std::chrono::milliseconds(100)) {
  auto peak = sample();
  auto end = std::chrono::steady_clock::now() + window;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(every);
    peak = std::max(peak, sample());
  }
  return peak;
}

// A value delivered once from another thread (a callback), awaited with a
// deadline.
template <class T>
class future_value {
 public:
  void set(T v) {
    std::lock_guard lk(mu_);
    value_.emplace(std::move(v));
    cv_.notify_all();
  }
  // nullopt on timeout.
  std::optional<T> wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return value_.has_value(); })) return std::nullopt;
    return value_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<T> value_;
};

}  // namespace keel::test
