// memory: resident memory per live idle agent and per hibernated agent, and
// node start-up time with many hibernated agents on disk.
//
// Each phase runs in a child process of its own (fork before any thread
// exists), so a baseline is never flattered by memory an earlier phase
// freed into the allocator. Phases:
//
//   spawn_empty / spawn_label   node with a huge idle_ms; RSS before and
//       after spawning N agents (empty label / ~1 KB label) through the API.
//       Includes what the spawns wrote into RocksDB's memtables.
//   activate_empty / activate_label   new node on the same directory (its
//       memtables flushed), small block cache; RSS before and after
//       activating the N agents with a query each. Actors + state only.
//   hibernate_empty / hibernate_label   new node with a small idle_ms and
//       the configured block cache; RSS before, then activate all N, let
//       them snapshot and hibernate, and measure RSS above the baseline
//       (also after malloc_trim, which returns freed heap to the OS).
//   startup   M agents (default 1,000,000) written straight into a store as
//       a node would leave them (agents entry + ledger seq 1 `spawned`), the
//       store closed; then, per run in a fresh process, time node::start()
//       and the first query to one of them. The first start after the bulk
//       load (which replays RocksDB's WAL tail) is reported on its own.

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>

#include "base/clock.hpp"
#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"
#include "ledger/codec.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "persistence/values.hpp"

namespace keel::bench {

namespace {

std::string empty_name(uint64_t i) {
  return numbered_name("mem/e-", i);
}
std::string label_name(uint64_t i) {
  return numbered_name("mem/l-", i);
}
std::string boot_name(uint64_t i) {
  return numbered_name("boot/agent-", i, 7);
}

std::string make_label(uint64_t i, std::size_t bytes) {
  std::string s = "agent " + std::to_string(i) + " ";
  while (s.size() < bytes) s += "lorem ipsum dolor sit amet ";
  s.resize(bytes);
  return s;
}

// Runs `fn` in a child process and returns the JSON it produced. The child
// ends with _exit; a failing child ends the bench.
ordered_json in_child(const std::string& what, const std::function<ordered_json()>& fn) {
  std::fflush(stdout);
  std::fflush(stderr);
  int fds[2];
  if (pipe(fds) != 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(fds[0]);
    std::string out = fn().dump();
    const char* p = out.data();
    std::size_t left = out.size();
    while (left > 0) {
      ssize_t w = write(fds[1], p, left);
      if (w <= 0) _exit(3);
      p += w;
      left -= static_cast<std::size_t>(w);
    }
    close(fds[1]);
    std::fflush(stdout);
    _exit(0);
  }
  close(fds[1]);
  std::string in;
  char buf[4096];
  for (;;) {
    ssize_t r = read(fds[0], buf, sizeof buf);
    if (r <= 0) break;
    in.append(buf, static_cast<std::size_t>(r));
  }
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("phase " + what + " failed");
  auto j = ordered_json::parse(in, nullptr, false);
  if (j.is_discarded()) die("phase " + what + " returned no result");
  std::printf("  [%s] %s\n", what.c_str(), j.dump().c_str());
  std::fflush(stdout);
  return j;
}

// RSS once the process has been quiet for a moment.
uint64_t settled_rss(int ms = 500) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return rss_bytes();
}

struct settings {
  uint64_t agents = 0;
  std::size_t label_bytes = 0;
  std::string dir;  // the N + N agents
  uint64_t block_cache = 0;
  uint64_t live_block_cache = 0;
  uint32_t idle_ms = 0;
  uint32_t threads = 0;
};

config::node_config node_cfg(const settings& s, const std::string& dir, uint32_t idle_ms,
                             uint64_t cache) {
  config::node_config c;
  c.data_dir = dir;
  c.idle_ms = idle_ms;
  c.block_cache_bytes = cache;
  c.scheduler_threads = s.threads;
  return c;
}

constexpr uint32_t huge_idle_ms = 24u * 3600 * 1000;

// RSS now against `before`, per agent, once all s.agents are live; stops
// the node.
ordered_json live_rss_report(actors::node& node, const settings& s, uint64_t before,
                             const char* after_what) {
  uint64_t after = settled_rss();
  if (node.live_agents() != s.agents)
    die("expected " + std::to_string(s.agents) + " live agents after " + after_what + ", found " +
        std::to_string(node.live_agents()));
  node.stop();
  ordered_json j;
  j["rss_before"] = before;
  j["rss_after"] = after;
  j["bytes_per_agent"] =
      round2(static_cast<double>(after - std::min(after, before)) / static_cast<double>(s.agents));
  return j;
}

ordered_json spawn_phase(const settings& s, bool label) {
  auto node = start_node(node_cfg(s, s.dir, huge_idle_ms, s.block_cache));
  uint64_t before = settled_rss();
  int64_t ns = spawn_all(*node, s.agents, label ? label_name : empty_name, [&](uint64_t i) {
    return label ? json{{"label", make_label(i, s.label_bytes)}} : json{{"label", ""}};
  });
  ordered_json j = live_rss_report(*node, s, before, "spawning");
  j["spawn_per_s"] = round2(static_cast<double>(s.agents) * 1e9 / static_cast<double>(ns));
  return j;
}

ordered_json activate_phase(const settings& s, bool label) {
  auto node = start_node(node_cfg(s, s.dir, huge_idle_ms, s.live_block_cache));
  uint64_t before = settled_rss();
  query_all(*node, s.agents, label ? label_name : empty_name, [](uint64_t) { return 0; });
  return live_rss_report(*node, s, before, "activation");
}

ordered_json hibernate_phase(const settings& s, bool label) {
  auto node = start_node(node_cfg(s, s.dir, s.idle_ms, s.block_cache));
  uint64_t before = settled_rss();
  query_all(*node, s.agents, label ? label_name : empty_name, [](uint64_t) { return 0; });
  uint64_t live_done = node->live_agents();
  int64_t wait_ms = wait_all_hibernated(*node, 120'000 + static_cast<int64_t>(s.agents) / 10);
  uint64_t after = settled_rss(1000);
  malloc_trim(0);
  uint64_t trimmed = settled_rss(200);
  uint64_t snapshots = static_cast<uint64_t>(node_metric(*node, "snapshots_total"));
  node->stop();
  auto above = [&](uint64_t v) { return static_cast<int64_t>(v) - static_cast<int64_t>(before); };
  ordered_json j;
  j["rss_before"] = before;
  j["rss_after"] = after;
  j["rss_after_trim"] = trimmed;
  j["rss_above_baseline"] = above(after);
  j["rss_above_baseline_after_trim"] = above(trimmed);
  j["bytes_per_agent"] = round2(static_cast<double>(above(after)) / static_cast<double>(s.agents));
  j["bytes_per_agent_after_trim"] =
      round2(static_cast<double>(above(trimmed)) / static_cast<double>(s.agents));
  j["peak_rss"] = peak_rss_bytes();
  j["live_when_activation_done"] = live_done;
  j["snapshots_written"] = snapshots;
  j["hibernate_wait_ms"] = wait_ms;
  return j;
}

// Writes `count` hibernated counters straight into a store, as a node leaves
// them after spawning: agents entry + ledger seq 1 `spawned`.
ordered_json populate_phase(const std::string& dir, uint64_t count) {
  int64_t t0 = now_ns();
  {
    auto db = persistence::store::open({dir, 8 << 20, true});
    if (!db) die("store::open " + dir + ": " + db.error().to_string());
    int64_t now = wall_ms();
    agent::event spawned{agent::event_type::spawned, now,
                         json{{"type", "counter"}, {"input", nullptr}, {"data", {{"total", 0}}}}};
    const std::string spawned_bytes = persistence::encode_record(actors::to_record(spawned));
    persistence::write_set ws;
    ws.reserve(20'000);
    for (uint64_t i = 0; i < count; ++i) {
      auto id = (*db)->allocate_agent_id();
      if (!id) die("allocate_agent_id: " + id.error().to_string());
      persistence::agent_meta meta{*id, "counter", agent_status::active, now};
      ws.push_back(
          {persistence::family::agents, false, boot_name(i), persistence::encode(meta, now)});
      ws.push_back(
          {persistence::family::ledger, false, persistence::agent_seq_key(*id, 1), spawned_bytes});
      if (ws.size() >= 20'000 || i + 1 == count) {
        if (auto st = (*db)->write(ws, false); !st) die("populate write: " + st.to_string());
        ws.clear();
      }
    }
  }
  int64_t t1 = now_ns();
  ordered_json j;
  j["agents"] = count;
  j["populate_s"] = round2(static_cast<double>(t1 - t0) / 1e9);
  j["dir_bytes"] = dir_bytes(dir);
  j["wal_bytes"] = wal_bytes(dir);
  return j;
}

ordered_json startup_phase(const settings& s, const std::string& dir, uint64_t count) {
  config::node_config c = node_cfg(s, dir, huge_idle_ms, s.block_cache);
  uint64_t wal_before = wal_bytes(dir);
  int64_t t0 = now_ns();
  auto node = start_node(c);
  int64_t t1 = now_ns();
  sync_driver d(*node);
  int64_t q = d.query_total(boot_name(count / 2), 0);
  int64_t t2 = now_ns();
  uint64_t live = node->live_agents();
  uint64_t rss = rss_bytes();
  uint64_t wal = wal_bytes(dir);
  node->stop();
  int64_t t3 = now_ns();
  ordered_json j;
  j["start_ms"] = round2(static_cast<double>(t1 - t0) / 1e6);
  j["first_query_us"] = round2(static_cast<double>(q) / 1e3);
  j["start_to_first_answer_ms"] = round2(static_cast<double>(t2 - t0) / 1e6);
  j["live_after_first_query"] = live;
  j["rss_after_start"] = rss;
  j["stop_ms"] = round2(static_cast<double>(t3 - t2) / 1e6);
  j["wal_bytes_before_start"] = wal_before;
  j["wal_bytes_after_start"] = wal;
  return j;
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("memory",
               "RSS per live idle agent and per hibernated agent; node start-up time with many "
               "hibernated agents on disk.");
  opts.add("agents", "100000", "agents for the RSS phases (each kind)");
  opts.add("label-bytes", "1000", "label size of the ~1 KB-state agents");
  opts.add("block-cache-mb", "64", "RocksDB block cache (spawn, hibernate and start-up phases)");
  opts.add("live-block-cache-mb", "8",
           "RocksDB block cache while activating agents for the live RSS figure");
  opts.add("idle-ms", "100", "idle time before hibernation in the hibernate phases");
  opts.add("threads", "0", "CAF scheduler threads (0 = one per core)");
  opts.add("startup-agents", "1000000",
           "hibernated agents on disk for the start-up phase (0 skips)");
  opts.add("startup-runs", "3", "node starts timed, each in a fresh process");
  opts.add("dir", "", "work directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the work directory");
  opts.add_switch("skip-rss", "skip the RSS phases");
  opts.parse(argc, argv);

  settings s;
  s.agents = opts.u64("agents");
  s.label_bytes = opts.u64("label-bytes");
  s.block_cache = opts.u64("block-cache-mb") << 20;
  s.live_block_cache = opts.u64("live-block-cache-mb") << 20;
  s.idle_ms = static_cast<uint32_t>(std::max<uint64_t>(1, opts.u64("idle-ms")));
  s.threads = static_cast<uint32_t>(opts.u64("threads"));
  uint64_t boot_agents = opts.u64("startup-agents");
  uint64_t runs = std::max<uint64_t>(1, opts.u64("startup-runs"));

  temp_dir tmp("keel-bench-memory");
  if (opts.on("keep")) tmp.keep();
  std::string work = opts.str("dir").empty() ? tmp.path() : opts.str("dir");
  s.dir = work + "/agents";

  report rep("memory");
  rep.params() = opts.params();
  rep.params()["work_dir"] = work;
  rep.params()["page_size"] = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

  if (!opts.on("skip-rss") && s.agents > 0) {
    std::printf("RSS phases, %llu agents of each kind\n",
                static_cast<unsigned long long>(s.agents));
    auto se = in_child("spawn_empty", [&] { return spawn_phase(s, false); });
    auto sl = in_child("spawn_label", [&] { return spawn_phase(s, true); });
    auto ae = in_child("activate_empty", [&] { return activate_phase(s, false); });
    auto al = in_child("activate_label", [&] { return activate_phase(s, true); });
    auto he = in_child("hibernate_empty", [&] { return hibernate_phase(s, false); });
    auto hl = in_child("hibernate_label", [&] { return hibernate_phase(s, true); });

    double label = static_cast<double>(s.label_bytes);
    rep.metric("live_idle_bytes_per_agent_empty", ae["bytes_per_agent"]);
    rep.metric("live_idle_bytes_per_agent_label", al["bytes_per_agent"]);
    rep.metric("live_idle_bytes_per_agent_label_minus_label",
               round2(al["bytes_per_agent"].get<double>() - label));
    rep.metric("spawned_live_bytes_per_agent_empty", se["bytes_per_agent"]);
    rep.metric("spawned_live_bytes_per_agent_label", sl["bytes_per_agent"]);
    rep.metric("spawn_per_s_empty", se["spawn_per_s"]);
    rep.metric("spawn_per_s_label", sl["spawn_per_s"]);
    for (auto* h : {&he, &hl}) {
      std::string p = h == &he ? "hibernated_empty_" : "hibernated_label_";
      rep.metric(p + "rss_above_baseline_bytes", (*h)["rss_above_baseline"]);
      rep.metric(p + "rss_above_baseline_minus_block_cache_bytes",
                 std::max<int64_t>(0, (*h)["rss_above_baseline"].get<int64_t>() -
                                          static_cast<int64_t>(s.block_cache)));
      rep.metric(p + "bytes_per_agent", (*h)["bytes_per_agent"]);
      rep.metric(p + "rss_above_baseline_after_trim_bytes", (*h)["rss_above_baseline_after_trim"]);
      rep.metric(p + "bytes_per_agent_after_trim", (*h)["bytes_per_agent_after_trim"]);
      rep.metric(p + "peak_rss_bytes", (*h)["peak_rss"]);
      rep.metric(p + "hibernate_wait_ms", (*h)["hibernate_wait_ms"]);
    }
    rep.metric("block_cache_bytes", s.block_cache);
    rep.metric("node_baseline_rss_bytes", he["rss_before"]);
  }

  if (boot_agents > 0) {
    std::string boot_dir = work + "/boot";
    std::printf("start-up phase, %llu hibernated agents on disk\n",
                static_cast<unsigned long long>(boot_agents));
    auto pop = in_child("populate", [&] { return populate_phase(boot_dir, boot_agents); });
    rep.metric("startup_agents_on_disk", boot_agents);
    rep.metric("startup_populate_s", pop["populate_s"]);
    rep.metric("startup_store_bytes", pop["dir_bytes"]);
    // The first start after the bulk load replays RocksDB's WAL tail (the
    // store does not flush memtables on close); later starts find none.
    auto first = in_child("first start after the bulk load",
                          [&] { return startup_phase(s, boot_dir, boot_agents); });
    rep.metric("startup_first_after_bulk_load_ms", first["start_ms"]);
    rep.metric("startup_first_after_bulk_load_wal_bytes", first["wal_bytes_before_start"]);
    std::vector<double> starts, firsts, totals;
    for (uint64_t r = 0; r < runs; ++r) {
      auto j = in_child("startup run " + std::to_string(r + 1),
                        [&] { return startup_phase(s, boot_dir, boot_agents); });
      starts.push_back(j["start_ms"].get<double>());
      firsts.push_back(j["first_query_us"].get<double>());
      totals.push_back(j["start_to_first_answer_ms"].get<double>());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    rep.metric("startup_ms_runs", starts);
    rep.metric("startup_ms_median", median(starts));
    rep.metric("startup_ms_max", *std::max_element(starts.begin(), starts.end()));
    rep.metric("startup_first_query_us_median", median(firsts));
    rep.metric("startup_to_first_answer_ms_median", median(totals));
  }

  rep.note(
      "live_idle_*: activation path (node restarted on the spawned agents, each activated by "
      "a query; live block cache " +
      opts.str("live-block-cache-mb") +
      " MiB); "
      "spawned_live_*: RSS delta while spawning through the API, memtable writes included");
  rep.note(
      "hibernated_*: RSS above the fresh node's baseline after N activations + snapshot + "
      "hibernation; includes block cache and memtables; _after_trim after malloc_trim(0)");
  rep.note(
      "start-up: each run in a fresh process; the OS page cache is not dropped; "
      "startup_ms_* exclude the first start after the bulk load, reported on its own");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
