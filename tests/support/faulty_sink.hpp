#pragma once
// A journal sink that fails or delays writes on demand, in front of a real
// one (persistence/journal_sink.hpp): RocksDB's FaultInjectionTestFS, at the
// seam where the journal writer meets the disk.
//
// - fail(fault, n): the next n writes fail. fault::fsync_failed writes the
//   batch without syncing it and then fails it as the store does, unavailable (a failed
//   fsync leaves: the data may or may not be on disk); fault::no_space
//   writes nothing and fails with no_space (ENOSPC).
// - fail_when(fault, pick): every write `pick` selects fails, until clear().
// - hold() / release(): writes block inside the sink (as a slow disk does)
//   until release(); wait_held() waits until one is blocked.
//
// Thread-safety: every method may be called from any thread; write() runs
// on the journal writer's thread.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/status.hpp"
#include "persistence/journal_sink.hpp"

namespace keel::test {

class faulty_sink final : public persistence::journal_sink {
 public:
  enum class fault { fsync_failed, no_space };

  explicit faulty_sink(std::unique_ptr<persistence::journal_sink> inner)
      : inner_(std::move(inner)) {}

  void fail(fault f, std::size_t n = 1) {
    std::lock_guard lk(mu_);
    fault_ = f;
    fail_next_ = n;
  }
  void fail_when(fault f, std::function<bool(const persistence::write_set&)> pick) {
    std::lock_guard lk(mu_);
    fault_ = f;
    pick_ = std::move(pick);
  }
  void clear() {
    std::lock_guard lk(mu_);
    fail_next_ = 0;
    pick_ = nullptr;
  }
  void hold() {
    std::lock_guard lk(mu_);
    holding_ = true;
  }
  void release() {
    std::lock_guard lk(mu_);
    holding_ = false;
    cv_.notify_all();
  }
  // True once a write is blocked by hold(), false after `timeout`.
  bool wait_held(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return held_ > 0; });
  }

  // The size (ops) of every batch written, and of every one failed, in order.
  std::vector<std::size_t> written() {
    std::lock_guard lk(mu_);
    return written_;
  }
  std::vector<std::size_t> failed() {
    std::lock_guard lk(mu_);
    return failed_;
  }

  status write(const persistence::write_set& ops, bool sync) override {
    fault f;
    {
      std::unique_lock lk(mu_);
      if (holding_) {
        ++held_;
        cv_.notify_all();
        cv_.wait(lk, [&] { return !holding_; });
        --held_;
      }
      const bool fails = fail_next_ > 0 || (pick_ && pick_(ops));
      if (!fails) {
        written_.push_back(ops.size());
      } else {
        if (fail_next_ > 0) --fail_next_;
        failed_.push_back(ops.size());
      }
      if (!fails) {
        lk.unlock();
        return inner_->write(ops, sync);
      }
      f = fault_;
    }
    if (f == fault::no_space)
      return error(code::no_space,
                   "writing batch: the disk is full (IO error: No space left on "
                   "device; injected)");
    // The batch reaches the log, but the fsync that would make it durable fails.
    inner_->write(ops, false).ignore();
    return error(code::unavailable,
                 "the write did not become durable: writing batch: IO error: fsync failed "
                 "(injected)");
  }

 private:
  std::unique_ptr<persistence::journal_sink> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  fault fault_ = fault::fsync_failed;
  std::size_t fail_next_ = 0;
  std::function<bool(const persistence::write_set&)> pick_;
  bool holding_ = false;
  int held_ = 0;
  std::vector<std::size_t> written_;
  std::vector<std::size_t> failed_;
};

}  // namespace keel::test
