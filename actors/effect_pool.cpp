#include "actors/effect_pool.hpp"

namespace keel::actors {

effect_pool::effect_pool(uint32_t threads) {
  threads_.reserve(threads);
  for (uint32_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

effect_pool::~effect_pool() {
  stop();
}

bool effect_pool::submit(std::function<void()> job) {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

void effect_pool::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    jobs_.clear();
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

uint64_t effect_pool::queued() const {
  std::lock_guard lk(mu_);
  return jobs_.size();
}

void effect_pool::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace keel::actors
