#include "base/histogram.hpp"

#include <bit>

namespace keel {

int histogram::bucket_of(uint64_t value) {
  if (value < sub_buckets) return static_cast<int>(value);
  int pow = std::bit_width(value) - 1;  // value in [2^pow, 2^(pow+1))
  int sub = static_cast<int>((value >> (pow - 3)) & (sub_buckets - 1));
  int b = (pow - 2) * sub_buckets + sub;
  return b < bucket_count ? b : bucket_count - 1;
}

uint64_t histogram::upper_edge(int bucket) {
  if (bucket < sub_buckets) return static_cast<uint64_t>(bucket);
  int pow = bucket / sub_buckets + 2;
  uint64_t sub = static_cast<uint64_t>(bucket % sub_buckets);
  uint64_t base = uint64_t{1} << pow;
  return base + (sub + 1) * (base / sub_buckets) - 1;
}

void histogram::record(uint64_t value) {
  buckets_[static_cast<std::size_t>(bucket_of(value))].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
  uint64_t prev = max_.load(std::memory_order_relaxed);
  while (value > prev && !max_.compare_exchange_weak(prev, value, std::memory_order_relaxed)) {
  }
}

uint64_t histogram::quantile(double q) const {
  uint64_t total = count();
  if (total == 0) return 0;
  auto rank = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1;
  uint64_t seen = 0;
  for (int b = 0; b < bucket_count; ++b) {
    seen += buckets_[static_cast<std::size_t>(b)].load(std::memory_order_relaxed);
    if (seen >= rank) {
      uint64_t edge = upper_edge(b);
      uint64_t m = max();
      return edge < m ? edge : m;
    }
  }
  return max();
}

void histogram::merge(const histogram& other) {
  for (std::size_t b = 0; b < buckets_.size(); ++b)
    buckets_[b].fetch_add(other.buckets_[b].load(std::memory_order_relaxed),
                          std::memory_order_relaxed);
  count_.fetch_add(other.count(), std::memory_order_relaxed);
  sum_.fetch_add(other.sum(), std::memory_order_relaxed);
  uint64_t om = other.max(), prev = max_.load(std::memory_order_relaxed);
  while (om > prev && !max_.compare_exchange_weak(prev, om, std::memory_order_relaxed)) {
  }
}

void histogram::reset() {
  for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
  count_.store(0);
  sum_.store(0);
  max_.store(0);
}

}  // namespace keel
