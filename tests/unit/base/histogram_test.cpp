#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "base/histogram.hpp"

using keel::histogram;

namespace {

// True quantile of sorted samples, using the same rank rule as histogram.
uint64_t true_quantile(const std::vector<uint64_t>& sorted, double q) {
  auto rank = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1));
  return sorted[rank];
}

void check_close(uint64_t got, uint64_t want, double tolerance) {
  CAPTURE(got);
  CAPTURE(want);
  double lo = static_cast<double>(want) * (1.0 - tolerance);
  double hi = static_cast<double>(want) * (1.0 + tolerance);
  CHECK(static_cast<double>(got) >= lo);
  CHECK(static_cast<double>(got) <= hi);
}

}  // namespace

TEST_CASE("an empty histogram reports zero everywhere") {
  histogram h;
  CHECK(h.count() == 0);
  CHECK(h.sum() == 0);
  CHECK(h.max() == 0);
  CHECK(h.quantile(0.0) == 0);
  CHECK(h.quantile(0.5) == 0);
  CHECK(h.quantile(1.0) == 0);
}

TEST_CASE("every value falls in a bucket whose upper edge is at most 1/8 above it") {
  std::vector<uint64_t> values;
  for (uint64_t v = 0; v < 5000; ++v) values.push_back(v);
  for (int p = 12; p < 41; ++p) {
    uint64_t b = uint64_t{1} << p;
    for (uint64_t v : {b - 1, b, b + 1, b + b / 8 - 1, b + b / 8, b + b / 2, 2 * b - 1})
      values.push_back(v);
  }
  int previous_bucket = -1;
  uint64_t previous_value = 0;
  for (uint64_t v : values) {
    int b = histogram::bucket_of(v);
    uint64_t edge = histogram::upper_edge(b);
    CAPTURE(v);
    CAPTURE(b);
    REQUIRE(b >= 0);
    REQUIRE(b < histogram::bucket_count);
    CHECK(edge >= v);
    // 8 sub-buckets per power of two: the edge is at most one sub-bucket
    // (1/8 of the power) above the value.
    CHECK(static_cast<double>(edge) <= static_cast<double>(v) * 1.125 + 1.0);
    if (v >= previous_value) CHECK(b >= previous_bucket);
    previous_bucket = b;
    previous_value = v;
  }
  SUBCASE("the upper edge of a bucket maps back to that bucket") {
    for (int b = 0; b < histogram::bucket_count; ++b) {
      CAPTURE(b);
      CHECK(histogram::bucket_of(histogram::upper_edge(b)) == b);
      if (b > 0) CHECK(histogram::upper_edge(b) > histogram::upper_edge(b - 1));
    }
  }
}

TEST_CASE("count, sum and max are exact") {
  histogram h;
  uint64_t sum = 0;
  for (uint64_t v = 1; v <= 1000; ++v) {
    h.record(v * 3);
    sum += v * 3;
  }
  CHECK(h.count() == 1000);
  CHECK(h.sum() == sum);
  CHECK(h.max() == 3000);
  CHECK(h.quantile(1.0) == 3000);  // capped at the true max
}

TEST_CASE("quantiles are within ~10% of known distributions") {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> samples;

  SUBCASE("uniform 1..100000") {
    std::uniform_int_distribution<uint64_t> d(1, 100000);
    for (int i = 0; i < 200000; ++i) samples.push_back(d(rng));
  }
  SUBCASE("exponential, mean 50 us in ns") {
    std::exponential_distribution<double> d(1.0 / 50000.0);
    for (int i = 0; i < 200000; ++i) samples.push_back(static_cast<uint64_t>(d(rng)) + 1);
  }
  SUBCASE("log-normal latencies") {
    std::lognormal_distribution<double> d(13.0, 1.0);
    for (int i = 0; i < 200000; ++i) samples.push_back(static_cast<uint64_t>(d(rng)) + 1);
  }

  histogram h;
  for (uint64_t v : samples) h.record(v);
  std::sort(samples.begin(), samples.end());
  REQUIRE(h.count() == samples.size());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    CAPTURE(q);
    uint64_t got = h.quantile(q);
    uint64_t want = true_quantile(samples, q);
    // Reported values are bucket upper edges: never below the truth.
    CHECK(got >= want);
    check_close(got, want, 0.10);
  }
  CHECK(h.quantile(1.0) == samples.back());
}

TEST_CASE("a constant distribution reports that constant at every quantile") {
  histogram h;
  for (int i = 0; i < 100; ++i) h.record(1024);
  for (double q : {0.0, 0.5, 0.99, 1.0}) CHECK(h.quantile(q) == 1024);
}

TEST_CASE("merging adds the other histogram's samples") {
  histogram low, high, all;
  for (uint64_t v = 1; v <= 1000; ++v) {
    low.record(v);
    all.record(v);
  }
  for (uint64_t v = 1'000'001; v <= 1'001'000; ++v) {
    high.record(v);
    all.record(v);
  }
  histogram merged;
  merged.merge(low);
  merged.merge(high);
  CHECK(merged.count() == 2000);
  CHECK(merged.sum() == all.sum());
  CHECK(merged.max() == 1'001'000);
  for (double q : {0.0, 0.25, 0.49, 0.5, 0.51, 0.75, 0.99, 1.0}) {
    CAPTURE(q);
    CHECK(merged.quantile(q) == all.quantile(q));
  }
  // The 90th percentile moved from the low cluster to the high one.
  CHECK(low.quantile(0.9) <= 1125);
  CHECK(merged.quantile(0.9) >= 1'000'000);
  // The source is unchanged.
  CHECK(high.count() == 1000);
  CHECK(high.max() == 1'001'000);
}

TEST_CASE("merging a histogram with a lower max keeps the higher max") {
  histogram a, b;
  a.record(500);
  b.record(7);
  a.merge(b);
  CHECK(a.max() == 500);
  CHECK(a.count() == 2);
  CHECK(a.quantile(0.0) == 7);
}

TEST_CASE("reset empties the histogram") {
  histogram h;
  for (uint64_t v = 1; v < 100; ++v) h.record(v);
  h.reset();
  CHECK(h.count() == 0);
  CHECK(h.sum() == 0);
  CHECK(h.max() == 0);
  CHECK(h.quantile(0.5) == 0);
  h.record(3);
  CHECK(h.quantile(0.5) == 3);
}

TEST_CASE("concurrent record from 4 threads gives the exact count, sum and max") {
  constexpr int threads = 4;
  constexpr uint64_t per_thread = 100'000;
  histogram h;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&h, t] {
      for (uint64_t i = 1; i <= per_thread; ++i) h.record(i * threads + static_cast<uint64_t>(t));
    });
  for (auto& th : ts) th.join();

  uint64_t expected_sum = 0;
  uint64_t expected_max = 0;
  for (int t = 0; t < threads; ++t)
    for (uint64_t i = 1; i <= per_thread; ++i) {
      uint64_t v = i * threads + static_cast<uint64_t>(t);
      expected_sum += v;
      expected_max = std::max(expected_max, v);
    }
  CHECK(h.count() == threads * per_thread);
  CHECK(h.sum() == expected_sum);
  CHECK(h.max() == expected_max);
  // Buckets agree with the count: the top quantile is the max and the
  // median is near the middle value.
  CHECK(h.quantile(1.0) == expected_max);
  check_close(h.quantile(0.5), expected_max / 2, 0.125);
}
