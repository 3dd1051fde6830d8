#pragma once
// Shared pieces of the benchmark programs: flags, latency percentiles, RSS,
// the JSON report, busy-waiting on a callback, temp directories and reading
// counters out of node::metrics_text().
//
// Every bench writes {"bench": NAME, "params": {...}, "metrics": {...}} to
// --json PATH (when given) and prints the same figures to stdout. Latencies
// are in microseconds with two decimals; percentiles are nearest-rank over
// every sample (no histogram buckets).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::persistence {
class store;
}

namespace keel::bench {

// Each bench program defines its run(); bench_main.cpp calls it from main().
int run(int argc, char** argv);

using ordered_json = nlohmann::ordered_json;

// --- flags ------------------------------------------------------------------

// "--name value" options and "--name" switches, declared before parse().
// --json PATH and --help are always there.
class options {
 public:
  options(std::string program, std::string summary);

  void add(std::string name, std::string default_value, std::string help);
  void add_switch(std::string name, std::string help);

  // Prints usage and exits 0 on --help; prints the problem and exits 2 on an
  // unknown flag or a missing value.
  void parse(int argc, char** argv);

  const std::string& str(const std::string& name) const;
  uint64_t u64(const std::string& name) const;  // exits 2 if not a number
  double f64(const std::string& name) const;
  bool on(const std::string& name) const;  // a switch was given
  // A comma-separated list of integers, e.g. "1,10,100".
  std::vector<uint64_t> u64_list(const std::string& name) const;

  // Every option and switch with its value, for the report's "params".
  ordered_json params() const;

 private:
  struct entry {
    std::string value;
    std::string help;
    bool is_switch = false;
    bool set = false;
  };
  [[noreturn]] void usage(int rc) const;

  std::string program_;
  std::string summary_;
  std::vector<std::string> order_;
  std::map<std::string, entry> entries_;
};

// --- measurement ------------------------------------------------------------

// Nanoseconds on the monotonic clock.
int64_t now_ns();

struct latency {
  std::size_t count = 0;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double mean_us = 0;
  double max_us = 0;
};

// Nearest-rank percentiles of samples in nanoseconds (sorts `ns`).
latency summarize(std::vector<int64_t>& ns);

// Rounds to two decimals, for reporting.
double round2(double v);

// Resident set size of this process, from /proc/self/statm.
uint64_t rss_bytes();
// Peak resident set size (VmHWM in /proc/self/status).
uint64_t peak_rss_bytes();

// --- report -----------------------------------------------------------------

class report {
 public:
  explicit report(std::string bench);

  ordered_json& params() { return params_; }
  void metric(const std::string& name, const ordered_json& value);
  // Adds NAME_p50_us, NAME_p99_us, NAME_p999_us (and _max_us) from `l`.
  void latency_metrics(const std::string& name, const latency& l, bool with_p999 = true);
  // A line printed under the figures (and stored as "notes" in the JSON).
  void note(std::string text);

  // Prints the report; writes the JSON to `json_path` unless it is empty.
  // Exits 1 if the file cannot be written.
  void finish(const std::string& json_path) const;

 private:
  std::string bench_;
  ordered_json params_ = ordered_json::object();
  ordered_json metrics_ = ordered_json::object();
  std::vector<std::string> notes_;
  double load_at_start_ = -1;
};

// --- control ----------------------------------------------------------------

// Prints "<bench>: FAILED: <message>" to stderr and ends the process with
// status 1 at once (no destructors: node threads may still be running).
[[noreturn]] void die(const std::string& message);

// Busy-waits until `flag` is true (acquire). Spinning, not sleeping: a
// condition variable would add tens of microseconds of wake-up latency that
// is not the runtime's. Dies naming `what` after `timeout`.
void spin_until(const std::atomic<bool>& flag, const char* what,
                std::chrono::milliseconds timeout = std::chrono::seconds(60));

// How spin_until waits: `pause` spins on the CPU's pause instruction;
// `yield` calls sched_yield between checks, which lets a runnable node
// thread take the core at once when cores are oversubscribed.
enum class spin_mode { pause, yield };
void set_spin_mode(spin_mode m);
// Parses "spin" / "yield"; dies otherwise.
spin_mode parse_spin_mode(const std::string& s);

// The 1-minute load average (/proc/loadavg), to judge how busy the machine was.
double load_average();

// Waits (polling every `poll`, not spinning) until `pred()` or `timeout`;
// returns whether it held.
template <class Pred>
bool poll_until(Pred&& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = std::chrono::milliseconds(10));

// A fresh directory under ${TMPDIR:-/tmp}, removed by the destructor unless
// keep() was called.
class temp_dir {
 public:
  explicit temp_dir(const std::string& prefix);
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

// Total size in bytes of the files under `dir` (whose names end with
// `suffix`, when given).
uint64_t dir_bytes(const std::string& dir, std::string_view suffix = {});
// Bytes of RocksDB write-ahead log in `dir` (its *.log files): what the next
// open replays.
inline uint64_t wal_bytes(const std::string& dir) {
  return dir_bytes(dir, ".log");
}

// The value of the unlabelled sample `name` in Prometheus text, or of the
// labelled one when `name` includes its labels (e.g.
// `keel_journal_write_seconds{quantile="0.5"}`); -1 when absent.
double prom_value(std::string_view text, std::string_view name);

// One fsync'd ~200 B write at a time on a store of its own in `dir`: what
// one fsync costs on this disk now, to set other figures against.
class raw_fsync {
 public:
  explicit raw_fsync(const std::string& dir);
  ~raw_fsync();
  // Appends `count` samples (ns) to `out`.
  void measure(uint64_t count, std::vector<int64_t>& out);

 private:
  std::unique_ptr<persistence::store> db_;
  std::string value_ = std::string(200, 'v');
  uint64_t seq_ = 0;
};

// "bench/agent-000042": `prefix` followed by `i` zero-padded to `width`.
std::string numbered_name(std::string_view prefix, uint64_t i, int width = 6);

// --- inline definitions -------------------------------------------------------

template <class Pred>
bool poll_until(Pred&& pred, std::chrono::milliseconds timeout, std::chrono::milliseconds poll) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace keel::bench
