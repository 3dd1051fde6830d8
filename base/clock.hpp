#pragma once
// Wall and monotonic time, read only by the imperative shell: the agent core
// receives time as an input and never reads a clock.

#include <chrono>
#include <cstdint>

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

}  // namespace keel
