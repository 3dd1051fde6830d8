#pragma once
// Wall and monotonic time, read only by the imperative shell: the agent core
// receives time as an input and never reads a clock.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace keel {

// Milliseconds since the Unix epoch.
inline int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Nanoseconds on a monotonic clock, for latency measurement.
inline int64_t mono_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

// "2025-06-01T12:00:00.123Z": Unix milliseconds as UTC ISO 8601, for
// logs and tables a person reads.
inline std::string utc_iso8601(int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = static_cast<int>(ms - int64_t{secs} * 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", frac);
  return buf;
}

}  // namespace keel
