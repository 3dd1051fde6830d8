#pragma once
// Threads for blocking effect calls (model providers, http and exec tools),
// so no scheduler thread ever waits on the outside world. Jobs run in
// submission order across `threads` workers; stop() lets running jobs finish
// and drops queued ones (their agents recover them: the effect is durable).
//
// Thread-safety: submit() from any thread. Lifetime: stop() before the
// objects jobs refer to are destroyed.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::actors {

class effect_pool {
 public:
  explicit effect_pool(uint32_t threads);
  ~effect_pool();
  effect_pool(const effect_pool&) = delete;
  effect_pool& operator=(const effect_pool&) = delete;

  // False (and `job` dropped) after stop().
  bool submit(std::function<void()> job);
  void stop();

  uint64_t queued() const;

 private:
  void run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace keel::actors
