#pragma once
// A lock-free latency histogram: log-linear buckets (8 per power of two, so a
// quantile is at most 12.5% above the true value) from 1 ns to ~2^40 ns.
// record() may be called from any thread; reads are approximate while
// writers run, exact once they stop.

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace keel {

class histogram {
 public:
  static constexpr int sub_buckets = 8;
  static constexpr int max_pow = 40;
  static constexpr int bucket_count = max_pow * sub_buckets;

  void record(uint64_t value);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  // Value at quantile q in [0, 1] (upper edge of its bucket, capped at max);
  // 0 when empty.
  uint64_t quantile(double q) const;
  // Adds every sample of `other` (taken at the moment of the call).
  void merge(const histogram& other);
  void reset();

  static int bucket_of(uint64_t value);
  static uint64_t upper_edge(int bucket);

 private:
  std::array<std::atomic<uint64_t>, bucket_count> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_{0};
  std::atomic<uint64_t> max_{0};
};

}  // namespace keel
