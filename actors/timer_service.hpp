#pragma once
// Durable timers: the `timers` column family is keyed by due time, so the
// service scans only what is due. A thread of its own (never a CAF thread)
// sleeps until the earliest due time, then hands each due timer to `fire`
// (which routes it to the agent, activating it if hibernated). A timer stays
// on disk until its agent consumes it in the same batch as its
// `timer_fired` event; one that is not consumed is offered again after
// `refire_ms`, so a crash or a lost delivery never loses a timer.
//
// Thread-safety: notify() and stop() from any thread.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "persistence/store.hpp"

namespace keel::actors {

class timer_service {
 public:
  using fire_fn = std::function<void(const std::string& agent, uint64_t timer_id)>;

  timer_service(persistence::store& db, fire_fn fire, int64_t refire_ms = 5000);
  ~timer_service();

  // A timer due at `due_ms` was made durable; wake earlier if needed.
  void notify(int64_t due_ms);
  void stop();
  uint64_t fired() const { return fired_count_.load(); }

 private:
  void run();
  int64_t scan(int64_t now);  // fires what is due; returns next wake-up time

  persistence::store& db_;
  fire_fn fire_;
  const int64_t refire_ms_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t wake_at_ = 0;  // 0: scan now
  bool stopping_ = false;
  std::map<std::string, int64_t> offered_;  // timer key -> when it was last fired
  std::atomic<uint64_t> fired_count_{0};
  std::thread thread_;
};

}  // namespace keel::actors
