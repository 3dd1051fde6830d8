// step_throughput: durable steps per second with 1, 10, 100 and 1,000
// concurrent agents, closed loop.
//
// Each agent has exactly one {"add": 1} in flight; when it is acknowledged
// (durable) and the agent has replied, the next one is sent from the
// callback. The agents are spawned once; each level runs on a fresh node
// over the same directory (so the node's latency summaries cover that level
// only), warms up (activating its agents), then runs for a fixed time; only
// messages acknowledged inside that window count. Each message appends two
// ledger events (message_received + state_changed), so durable events/s is
// counted as 2 x acknowledged messages/s; the node's
// keel_events_appended_total delta over the window is reported next to it
// as a cross-check.
//
// The reference: one raw fsync'd RocksDB write of ~200 B through
// persistence::store::write(sync=true) on a store of its own, measured in
// rounds alternating with the single-agent level's closed loop (fsync
// latency on this shared disk drifts), so the report can say how far a
// single agent's sequential durable step is from one fsync.

#include <algorithm>
#include <mutex>
#include <thread>

#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"

namespace keel::bench {

namespace {

std::string agent_name(uint64_t i) {
  return numbered_name("step/agent-", i);
}

// One agent of the closed loop. Touched only by that agent's chain of
// callbacks (each runs after the previous one), then by the main thread
// once the chain has ended.
struct agent_slot {
  std::string name;
  int64_t total = 0;  // what the agent's total is once the message in flight is applied
  int64_t sent_ns = 0;
  std::vector<int64_t> samples;
};

class closed_loop {
 public:
  closed_loop(actors::node& n, std::vector<agent_slot>& slots) : node_(n), slots_(slots) {}

  enum phase : int { warmup = 0, measure = 1, draining = 2 };

  void start() {
    in_flight_.store(static_cast<int64_t>(slots_.size()), std::memory_order_release);
    for (std::size_t i = 0; i < slots_.size(); ++i) send_next(i);
  }
  void set_phase(phase p) { phase_.store(p, std::memory_order_release); }
  uint64_t acked_in_window() const { return acked_.load(std::memory_order_acquire); }
  // Waits until every agent's last message is answered.
  void drain() {
    set_phase(draining);
    bool ok = poll_until([&] { return in_flight_.load(std::memory_order_acquire) == 0; },
                         std::chrono::seconds(60), std::chrono::milliseconds(1));
    check();
    if (!ok) die("closed loop did not drain within 60 s");
  }
  void check() {
    if (!failed_.load(std::memory_order_acquire)) return;
    std::lock_guard lk(mu_);
    die(error_);
  }

 private:
  void fail(std::string why) {
    {
      std::lock_guard lk(mu_);
      if (error_.empty()) error_ = std::move(why);
    }
    failed_.store(true, std::memory_order_release);
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  }

  void send_next(std::size_t i) {
    agent_slot& a = slots_[i];
    a.total += 1;
    a.sent_ns = now_ns();
    // Every message carries a client id, as an exactly-once sender's would:
    // each one is looked up and recorded in the agent's dedupe family.
    node_.send(
        a.name, actors::inbound_message{"m" + std::to_string(a.total), "bench", json{{"add", 1}}},
        [this, i](result<actors::send_ack> ack) {
          if (!ack) return;  // the reply callback reports it
          int64_t t = now_ns();
          if (phase_.load(std::memory_order_acquire) == measure) {
            slots_[i].samples.push_back(t - slots_[i].sent_ns);
            acked_.fetch_add(1, std::memory_order_relaxed);
          }
        },
        [this, i](result<actors::agent_reply> r) {
          agent_slot& a = slots_[i];
          if (!r) return fail("send " + a.name + ": " + r.error().to_string());
          if (!r->ok) return fail("send " + a.name + ": agent answered " + r->code);
          if (r->body.value("total", INT64_MIN) != a.total)
            return fail("send " + a.name + " replied " + r->body.dump() + ", expected total " +
                        std::to_string(a.total));
          if (phase_.load(std::memory_order_acquire) == draining) {
            in_flight_.fetch_sub(1, std::memory_order_acq_rel);
            return;
          }
          send_next(i);
        });
  }

  actors::node& node_;
  std::vector<agent_slot>& slots_;
  std::atomic<int> phase_{warmup};
  std::atomic<uint64_t> acked_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::string error_;
};

struct journal_counters {
  double batches, appends, events, write_seconds;
  static journal_counters read(actors::node& n) {
    std::string m = n.metrics_text();
    auto get = [&](const char* name) {
      double v = prom_value(m, name);
      if (v < 0) die(std::string("metric ") + name + " is missing");
      return v;
    };
    return {get("keel_journal_batches_total"), get("keel_journal_appends_total"),
            get("keel_events_appended_total"), get("keel_journal_write_seconds_sum")};
  }
};

// What one or more measured windows of a level add up to.
struct level_result {
  uint64_t acked = 0;
  double secs = 0;
  journal_counters delta{0, 0, 0, 0};
  std::vector<int64_t> samples;
  std::vector<uint64_t> per_agent;  // messages acknowledged in the window(s), per agent
};

// Runs the closed loop over `active` on `n`: warm-up, then a window of
// `duration_s`; adds to `out`.
void run_window(actors::node& n, std::vector<agent_slot>& active, double warmup_s,
                double duration_s, level_result& out) {
  for (auto& a : active) a.samples.clear();
  closed_loop loop(n, active);
  loop.start();
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
  loop.check();
  auto c0 = journal_counters::read(n);
  int64_t t0 = now_ns();
  loop.set_phase(closed_loop::measure);
  std::this_thread::sleep_for(std::chrono::duration<double>(duration_s));
  loop.set_phase(closed_loop::draining);
  int64_t t1 = now_ns();
  auto c1 = journal_counters::read(n);
  out.acked += loop.acked_in_window();
  loop.drain();
  out.secs += static_cast<double>(t1 - t0) / 1e9;
  out.delta.batches += c1.batches - c0.batches;
  out.delta.appends += c1.appends - c0.appends;
  out.delta.events += c1.events - c0.events;
  out.delta.write_seconds += c1.write_seconds - c0.write_seconds;
  out.per_agent.resize(active.size());
  for (std::size_t i = 0; i < active.size(); ++i) {
    out.samples.insert(out.samples.end(), active[i].samples.begin(), active[i].samples.end());
    out.per_agent[i] += active[i].samples.size();
  }
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("step_throughput",
               "Durable events/s with N concurrent agents in a closed loop (one message in "
               "flight per agent), and one raw fsync for reference.");
  opts.add("levels", "1,10,100,1000", "numbers of concurrent agents");
  opts.add("duration-s", "3", "measured time per level, seconds");
  opts.add("warmup-s", "0.5", "unmeasured time before each level's window, seconds");
  opts.add("threads", "0", "CAF scheduler threads (0 = one per core)");
  opts.add("fsync-samples", "2000",
           "raw fsync'd writes, interleaved with the 1-agent level (0 skips them)");
  opts.add("rounds", "10",
           "the 1-agent level alternates this many raw-fsync and closed-loop rounds");
  opts.add("dir", "", "work directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the work directory");
  opts.add_switch("node-metrics", "print each level's node metrics_text() to stderr");
  opts.parse(argc, argv);

  auto levels = opts.u64_list("levels");
  if (levels.empty() || std::count(levels.begin(), levels.end(), 0))
    die("--levels needs positive numbers");
  uint64_t max_level = *std::max_element(levels.begin(), levels.end());
  double duration_s = opts.f64("duration-s");
  double warmup_s = opts.f64("warmup-s");
  uint64_t fsync_samples = opts.u64("fsync-samples");
  uint64_t rounds = std::max<uint64_t>(1, opts.u64("rounds"));

  temp_dir tmp("keel-bench-step");
  if (opts.on("keep")) tmp.keep();
  std::string work = opts.str("dir").empty() ? tmp.path() : opts.str("dir");

  report rep("step_throughput");
  rep.params() = opts.params();
  rep.params()["work_dir"] = work;

  config::node_config cfg;
  cfg.data_dir = work + "/node";
  cfg.idle_ms = 3'600'000;  // steady-state steps: nothing hibernates
  cfg.scheduler_threads = static_cast<uint32_t>(opts.u64("threads"));
  std::vector<agent_slot> slots(max_level);
  for (uint64_t i = 0; i < max_level; ++i) slots[i].name = agent_name(i);
  {
    auto setup = start_node(cfg);
    spawn_all(*setup, max_level, agent_name, [](uint64_t) { return json(nullptr); });
    setup->stop();
  }
  raw_fsync raw(work + "/raw_fsync");
  std::vector<int64_t> fsync_ns;
  double agent1_p50 = -1;

  for (uint64_t level : levels) {
    // A fresh node per level, so its latency summaries cover this level only
    // (the warm-up activates the agents).
    auto node = start_node(cfg);
    std::vector<agent_slot> active(slots.begin(),
                                   slots.begin() + static_cast<std::ptrdiff_t>(level));
    level_result res;
    if (level == 1 && fsync_samples > 0) {
      // fsync latency on this shared disk drifts by several times within
      // seconds: alternate raw fsyncs and closed-loop rounds so both see the
      // same disk.
      run_window(*node, active, warmup_s, 0, res);
      res = {};
      for (uint64_t r = 0; r < rounds; ++r) {
        raw.measure(fsync_samples / rounds, fsync_ns);
        run_window(*node, active, 0.02, duration_s / static_cast<double>(rounds), res);
      }
    } else {
      run_window(*node, active, warmup_s, duration_s, res);
    }
    // Carry each agent's total into the next level.
    for (uint64_t i = 0; i < level; ++i) slots[i].total = active[i].total;

    double fsyncs = res.delta.batches;
    std::string p = "agents" + std::to_string(level) + "_";
    double msgs_per_s = static_cast<double>(res.acked) / res.secs;
    rep.metric(p + "messages_per_s", round2(msgs_per_s));
    rep.metric(p + "durable_events_per_s", round2(2.0 * msgs_per_s));
    rep.metric(p + "events_per_s_node_metric", round2(res.delta.events / res.secs));
    auto l = summarize(res.samples);
    rep.latency_metrics(p + "ack", l);
    rep.metric(p + "fsyncs", fsyncs);
    rep.metric(p + "fsyncs_per_s", round2(fsyncs / res.secs));
    rep.metric(p + "appends_per_fsync", fsyncs > 0 ? round2(res.delta.appends / fsyncs) : 0.0);
    // How much of the window the journal thread spent in RocksDB writes
    // (memtable inserts, WAL, fsync): near 1, the single writer is the limit.
    rep.metric(p + "journal_busy_fraction", round2(res.delta.write_seconds / res.secs));
    // Fairness: a starved agent shows up as a low minimum.
    auto [lo, hi] = std::minmax_element(res.per_agent.begin(), res.per_agent.end());
    rep.metric(p + "msgs_per_agent_min", *lo);
    rep.metric(p + "msgs_per_agent_max", *hi);
    auto q50 = [&](const char* name) {
      return round2(node_metric(*node, std::string(name) + "{quantile=\"0.5\"}") * 1e6);
    };
    rep.metric(p + "journal_write_p50_us", q50("journal_write_seconds"));
    rep.metric(p + "journal_commit_p50_us", q50("journal_commit_seconds"));
    if (opts.on("node-metrics"))
      std::fprintf(stderr, "--- node metrics after level %llu\n%s",
                   static_cast<unsigned long long>(level), node->metrics_text().c_str());
    node->stop();
    node.reset();
    if (level == 1) agent1_p50 = l.p50_us;
    std::printf("level %llu: %.0f msgs/s, ack p50 %.2f us, %.1f appends/fsync\n",
                static_cast<unsigned long long>(level), msgs_per_s, l.p50_us,
                fsyncs > 0 ? res.delta.appends / fsyncs : 0.0);
    std::fflush(stdout);
  }

  if (fsync_samples > 0) {
    if (fsync_ns.empty()) raw.measure(fsync_samples, fsync_ns);
    auto f = summarize(fsync_ns);
    rep.latency_metrics("raw_fsync", f);
    if (agent1_p50 >= 0 && f.p50_us > 0) {
      double ratio = agent1_p50 / f.p50_us;
      rep.metric("single_agent_step_over_fsync", round2(ratio));
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "single agent sequential durable step = %.2fx one fsync (ack p50 %.2f us vs "
                    "raw fsync p50 %.2f us, interleaved in %llu rounds)",
                    ratio, agent1_p50, f.p50_us, static_cast<unsigned long long>(rounds));
      rep.note(buf);
    }
  }
  rep.note(
      "durable_events_per_s = 2 x messages acknowledged in the window (message_received + "
      "state_changed per {\"add\":1}); events_per_s_node_metric = keel_events_appended_total "
      "delta over the same window");
  rep.note(
      "fsyncs = keel_journal_batches_total delta; appends_per_fsync = "
      "keel_journal_appends_total delta / fsyncs");
  rep.note(
      "journal_write = the journal's RocksDB write incl. fsync; journal_commit = write set "
      "submitted -> durable (node summaries over warm-up + window, quantile within ~9%)");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
