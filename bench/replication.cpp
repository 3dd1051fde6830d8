// replication: what replicated groups cost and how fast they fail over, with
// real keeld processes on 127.0.0.1 (bench/keeld_cluster.hpp), every call
// over HTTP as a client makes it.
//
// Cluster M: 3 members, "replication": 3, default election and heartbeat
// settings. Figures, in this order:
//   4. idle: M up, every group led, no agent and no traffic: CPU per member
//      over --idle-s from /proc/<pid>/stat (utime + stime); then the same
//      for a 3-member cluster without replication, for reference;
//   1. sequential durable step: one counter, one message at a time, each
//      answered 202 once durable. Cluster R1 (3 members, "replication": 1:
//      each group has one replica, so the raft log commits on its own
//      fsync) runs beside M; blocks of --step-messages go to M's agent
//      through its group leader, to R1's through its leader, and to M's
//      through a member that does not lead its group (forwarded), in turn,
//      so drift on this machine hits all three alike. R1 is then stopped;
//   2. durable events/s: --agents counters on M, --clients client threads,
//      each a closed loop over its own agents sending {"add": 1} to the
//      leader of each agent's group; 202s counted per second. A counter
//      appends two events per message (message_received, state_changed);
//      the members' keel_events_appended_total deltas are reported beside;
//      every agent's total is checked at the end;
//   3. failover: --failover-rounds times, SIGKILL the leader of a probe
//      agent's group, then send to the probe through a surviving member
//      until one message is answered 202 (a failed attempt is retried after
//      10 ms with the same id). A watcher polls the survivors' GET
//      /v1/cluster every 10 ms: the first survivor whose entry for the group
//      is a candidate or has a higher term marks detection, the first ready
//      leader marks the end of the election. The killed member is restarted
//      and waited for until its copy of the group has applied what the
//      leader has.
// Not measured: a wiped member's catch-up (rebuilding a member without its
// data directory is not built yet).

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "bench/bench_util.hpp"
#include "bench/keeld_cluster.hpp"

namespace keel::bench {

namespace {

using nlohmann::json;

constexpr double target_step_ratio = 2.0;
constexpr double target_events_per_s = 20'000;
constexpr double target_failover_ms = 2000;
constexpr double target_idle_core_share = 0.02;
// A counter's events per {"add": n} message: message_received, state_changed.
constexpr double counter_events_per_message = 2;

double ms_since(int64_t t0_ns) {
  return static_cast<double>(now_ns() - t0_ns) / 1e6;
}

void spawn_counter(member_clients& c, const std::string& via, const std::string& name) {
  auto a = c.post(via, "/v1/agents", {{"name", name}, {"type", "counter"}});
  if (!a.ok || a.status != 201) die("spawn " + name + " via " + via + ": " + a.describe());
}

std::optional<int64_t> query_total(member_clients& c, const std::string& via,
                                   const std::string& name) {
  auto a = c.post(via, agent_path(name) + "/query", {{"get", true}});
  if (!a.ok || a.status != 200 || !a.body.is_object()) return std::nullopt;
  return a.body.value("total", int64_t{-1});
}

// One message; its latency in ns. Dies unless it is answered 202.
int64_t send_one(member_clients& c, const std::string& via, const std::string& name,
                 const std::string& id) {
  int64_t t0 = now_ns();
  auto a = c.post(via, agent_path(name) + "/messages", {{"id", id}, {"body", {{"add", 1}}}});
  int64_t t1 = now_ns();
  if (!a.ok || a.status != 202) die("message " + id + " via " + via + ": " + a.describe());
  return t1 - t0;
}

double events_appended(keeld_cluster& c) {
  double sum = 0;
  for (const auto& id : c.ids()) {
    auto a = c.clients().call(id, "GET", "/metrics");
    double v = a.ok && a.status == 200 ? prom_value(a.raw, "keel_events_appended_total") : -1;
    if (v < 0) die(id + ": keel_events_appended_total unreadable: " + a.describe());
    sum += v;
  }
  return sum;
}

void print_latency(const char* what, const latency& l) {
  std::printf("  %-34s p50 %9.1f us  p99 %9.1f us  p999 %9.1f us  (%zu)\n", what, l.p50_us,
              l.p99_us, l.p999_us, l.count);
  std::fflush(stdout);
}

std::string verdict(bool met) {
  return met ? "met" : "MISSED";
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// --- 4. idle ------------------------------------------------------------------------

// The most any member of `m` used over `seconds`, as a share of one core.
double idle_cpu(report& rep, keeld_cluster& m, double seconds, const std::string& prefix) {
  std::vector<double> c0;
  for (const auto& id : m.ids()) c0.push_back(m.cpu_seconds(id));
  const int64_t w0 = now_ns();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double wall = static_cast<double>(now_ns() - w0) / 1e9;
  double worst = 0;
  for (std::size_t i = 0; i < m.ids().size(); ++i) {
    double share = (m.cpu_seconds(m.ids()[i]) - c0[i]) / wall;
    worst = std::max(worst, share);
    rep.metric(prefix + "_core_pct_" + m.ids()[i], round2(share * 100));
    std::printf("  %s %s: %.2f%% of a core\n", prefix.c_str(), m.ids()[i].c_str(), share * 100);
  }
  rep.metric(prefix + "_core_pct_max", round2(worst * 100));
  return worst;
}

// --- 1. sequential step ------------------------------------------------------------

void sequential_step(report& rep, keeld_cluster& m, keeld_cluster& r1, uint64_t blocks,
                     uint64_t per_block) {
  const std::string name = "bench/step";
  const std::string lead3 = m.ready_leader(m.group_of(name));
  const std::string lead1 = r1.ready_leader(r1.group_of(name));
  if (lead3.empty() || lead1.empty()) die("the step agent's group has no ready leader");
  // Through a member that does not lead the group (forwarded) on M; on R1
  // through its one replica: a member outside a group does not learn its
  // leader and answers 503 (see RESULTS.md).
  spawn_counter(m.clients(), lead3 == m.ids()[0] ? m.ids()[1] : m.ids()[0], name);
  spawn_counter(r1.clients(), lead1, name);
  const std::string other3 = lead3 == m.ids()[0] ? m.ids()[1] : m.ids()[0];
  uint64_t k = 0;
  auto id = [&] { return "s-" + std::to_string(k++); };
  // Warm-up: connections, activation.
  for (int i = 0; i < 20; ++i) {
    send_one(m.clients(), lead3, name, id());
    send_one(r1.clients(), lead1, name, id());
    send_one(m.clients(), other3, name, id());
  }
  std::vector<int64_t> l3, l1, lf;
  for (uint64_t b = 0; b < blocks; ++b) {
    for (uint64_t i = 0; i < per_block; ++i) l3.push_back(send_one(m.clients(), lead3, name, id()));
    for (uint64_t i = 0; i < per_block; ++i)
      l1.push_back(send_one(r1.clients(), lead1, name, id()));
    for (uint64_t i = 0; i < per_block; ++i)
      lf.push_back(send_one(m.clients(), other3, name, id()));
  }
  auto s3 = summarize(l3), s1 = summarize(l1), sf = summarize(lf);
  print_latency("step r3 via leader", s3);
  print_latency("step r1 via leader", s1);
  print_latency("step r3 via a non-leader", sf);
  rep.latency_metrics("step_r3_leader", s3);
  rep.latency_metrics("step_r1_leader", s1);
  rep.latency_metrics("step_r3_forwarded", sf);
  rep.metric("step_r3_leader_mean_us", round2(s3.mean_us));
  rep.metric("step_r1_leader_mean_us", round2(s1.mean_us));
  rep.metric("step_r3_forwarded_mean_us", round2(sf.mean_us));
  rep.metric("step_r3_leader_per_s", round2(1e6 / s3.mean_us));
  rep.metric("step_r1_leader_per_s", round2(1e6 / s1.mean_us));
  const double ratio = s3.p50_us / s1.p50_us;
  rep.metric("step_ratio_p50_r3_over_r1", round2(ratio));
  rep.metric("step_ratio_mean_r3_over_r1", round2(s3.mean_us / s1.mean_us));
  rep.note("sequential step p50: r3 " + fmt("%.1f", s3.p50_us) + " us / r1 " +
           fmt("%.1f", s1.p50_us) + " us = " + fmt("%.2f", ratio) +
           "x (target <= 2.0x: " + verdict(ratio <= target_step_ratio) + "); through a " +
           "non-leader " + fmt("%.1f", sf.p50_us) + " us");
  auto t3 = query_total(m.clients(), lead3, name);
  auto t1 = query_total(r1.clients(), lead1, name);
  const auto want = static_cast<int64_t>(20 * 2 + blocks * per_block * 2);
  const auto want1 = static_cast<int64_t>(20 + blocks * per_block);
  if (t3 != want || t1 != want1)
    die("step totals: r3 " + std::to_string(t3.value_or(-1)) + " (expected " +
        std::to_string(want) + "), r1 " + std::to_string(t1.value_or(-1)) + " (expected " +
        std::to_string(want1) + ")");
}

// --- 2. durable events/s ------------------------------------------------------------

struct load_shared {
  std::mutex mu;
  std::vector<int64_t> done_at;  // ns, of each 202
  std::vector<int64_t> lat;      // ns, same order
  std::vector<int64_t> acked;    // per agent
  uint64_t unavailable = 0;      // 503s
  std::string error;
};

void events_per_s(report& rep, keeld_cluster& m, uint64_t agents, uint64_t clients, double warmup_s,
                  double duration_s) {
  clients = std::min(clients, agents);
  std::vector<std::string> names, leader;
  for (uint64_t i = 0; i < agents; ++i) names.push_back(numbered_name("bench/e-", i));
  std::vector<std::string> group_leader(m.groups());
  for (uint32_t g = 0; g < m.groups(); ++g) group_leader[g] = m.ready_leader(g);
  for (const auto& n : names) {
    leader.push_back(group_leader[m.group_of(n)]);
    if (leader.back().empty()) die("no ready leader for " + n);
  }
  load_shared sh;
  sh.acked.assign(agents, 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> spawned{0};
  const int64_t start = now_ns();
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      member_clients c(m.http_ports());
      for (uint64_t i = t; i < agents; i += clients) spawn_counter(c, leader[i], names[i]);
      spawned.fetch_add(1);
      while (spawned.load() < clients) std::this_thread::yield();
      std::vector<int64_t> done, lat;
      std::vector<uint64_t> mine;
      uint64_t k = 0, unavailable = 0;
      std::string error;
      for (uint64_t i = t; !stop.load(std::memory_order_relaxed); i += clients, ++k) {
        if (i >= agents) i = t;
        std::string id = "e-" + std::to_string(t) + "-" + std::to_string(k);
        int64_t t0 = now_ns();
        auto a = c.post(leader[i], agent_path(names[i]) + "/messages",
                        {{"id", id}, {"body", {{"add", 1}}}});
        int64_t t1 = now_ns();
        if (a.ok && a.status == 202) {
          done.push_back(t1);
          lat.push_back(t1 - t0);
          mine.push_back(i);
        } else if (a.ok && a.status == 503) {
          ++unavailable;  // may have landed: the agent's total is not checked
          mine.push_back(i + agents);
        } else {
          error = "message " + id + ": " + a.describe();
          break;
        }
      }
      std::lock_guard lk(sh.mu);
      sh.done_at.insert(sh.done_at.end(), done.begin(), done.end());
      sh.lat.insert(sh.lat.end(), lat.begin(), lat.end());
      for (auto i : mine) {
        if (i < agents)
          ++sh.acked[i];
        else
          sh.acked[i - agents] = INT64_MIN / 2;
      }
      sh.unavailable += unavailable;
      if (sh.error.empty()) sh.error = error;
    });
  }
  if (!poll_until([&] { return spawned.load() == clients; }, std::chrono::seconds(120)))
    die("spawning " + std::to_string(agents) + " agents took over 120 s");
  rep.metric("spawn_ms", round2(ms_since(start)));
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
  const double ev0 = events_appended(m);
  std::vector<double> cpu0;
  for (const auto& id : m.ids()) cpu0.push_back(m.cpu_seconds(id));
  const int64_t from = now_ns();
  std::this_thread::sleep_for(std::chrono::duration<double>(duration_s));
  const int64_t to = now_ns();
  const double ev1 = events_appended(m);
  double members_cpu = 0;
  for (std::size_t i = 0; i < m.ids().size(); ++i)
    members_cpu += m.cpu_seconds(m.ids()[i]) - cpu0[i];
  stop.store(true);
  for (auto& th : threads) th.join();
  if (!sh.error.empty()) die(sh.error);

  std::vector<int64_t> lat;
  std::vector<uint64_t> per_second(static_cast<std::size_t>(duration_s) + 1, 0);
  for (std::size_t i = 0; i < sh.done_at.size(); ++i) {
    if (sh.done_at[i] < from || sh.done_at[i] > to) continue;
    lat.push_back(sh.lat[i]);
    ++per_second[static_cast<std::size_t>((sh.done_at[i] - from) / 1'000'000'000)];
  }
  const double window = static_cast<double>(to - from) / 1e9;
  const double msgs = static_cast<double>(lat.size()) / window;
  const double events = msgs * counter_events_per_message;
  const auto full = static_cast<std::size_t>(window);
  auto [lo, hi] = std::minmax_element(per_second.begin(), per_second.begin() + full);
  auto l = summarize(lat);
  print_latency("load ack (per message)", l);
  std::printf("  load: %.0f msgs/s = %.0f durable events/s (%llu clients, %llu agents)\n", msgs,
              events, static_cast<unsigned long long>(clients),
              static_cast<unsigned long long>(agents));
  rep.latency_metrics("load_ack", l);
  rep.metric("load_msgs_per_s", round2(msgs));
  rep.metric("load_events_per_s", round2(events));
  rep.metric("load_msgs_per_s_lowest_second", full ? *lo : 0);
  rep.metric("load_msgs_per_s_highest_second", full ? *hi : 0);
  rep.metric("load_events_appended_per_s_all_members", round2((ev1 - ev0) / window));
  rep.metric("load_503", sh.unavailable);
  rep.metric("load_members_cores_busy", round2(members_cpu / window));
  rep.metric("load_members_cpu_us_per_msg",
             round2(members_cpu * 1e6 / static_cast<double>(lat.size())));
  rep.note("durable events/s: " + fmt("%.0f", events) + " (2 x " + fmt("%.0f", msgs) +
           " acknowledged messages/s; target >= 20000: " + verdict(events >= target_events_per_s) +
           ")");

  // Every acknowledged message took effect once (agents that got a 503 are
  // not checked: the write may or may not have landed).
  uint64_t checked = 0;
  for (uint64_t i = 0; i < agents; ++i) {
    if (sh.acked[i] < 0) continue;
    auto got = query_total(m.clients(), leader[i], names[i]);
    if (got != sh.acked[i])
      die(names[i] + ": total " + std::to_string(got.value_or(-1)) + ", acknowledged " +
          std::to_string(sh.acked[i]));
    ++checked;
  }
  rep.metric("load_agents_checked", checked);
}

// --- 3. failover ------------------------------------------------------------------

struct failover_times {
  double detect_ms = -1, elected_ms = -1, acked_ms = -1;
};

// A number of the group's entry in a GET /v1/cluster answer; 0 when absent.
uint64_t group_field(const json& status, uint32_t g, const char* field) {
  if (!status.is_object() || !status.contains("groups")) return 0;
  for (const auto& e : status["groups"])
    if (e.value("group", UINT32_MAX) == g) return e.value(field, uint64_t{0});
  return 0;
}

failover_times failover_round(keeld_cluster& m, const std::string& probe, int round) {
  const uint32_t g = m.group_of(probe);
  const std::string leader = m.ready_leader(g);
  if (leader.empty()) die("the probe's group has no ready leader");
  std::vector<std::string> survivors;
  for (const auto& id : m.ids())
    if (id != leader) survivors.push_back(id);
  const uint64_t old_term = group_field(m.status(leader), g, "term");
  send_one(m.clients(), survivors[0], probe, "warm-" + std::to_string(round));

  failover_times out;
  std::atomic<int64_t> detect_ns{-1}, elected_ns{-1};
  const int64_t killed = now_ns();
  m.kill9(leader);
  std::thread watcher([&] {
    member_clients c(m.http_ports(), std::chrono::seconds(5));
    // Runs until it has seen the ready leader (a 202 may come before the
    // next poll does; the figure is then clamped to the 202).
    while (elected_ns.load() < 0 && ms_since(killed) < 60'000) {
      for (const auto& id : survivors) {
        auto a = c.call(id, "GET", "/v1/cluster");
        if (!a.ok || a.status != 200 || !a.body.contains("groups")) continue;
        for (const auto& e : a.body["groups"]) {
          if (e.value("group", UINT32_MAX) != g) continue;
          const int64_t t = now_ns() - killed;
          if (detect_ns.load() < 0 &&
              (e.value("role", "") == "candidate" || e.value("term", uint64_t{0}) > old_term))
            detect_ns.store(t);
          if (e.value("role", "") == "leader" && e.value("ready", false)) {
            if (detect_ns.load() < 0) detect_ns.store(t);
            elected_ns.store(t);
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  const std::string id = "f-" + std::to_string(round);
  for (uint64_t attempt = 0;; ++attempt) {
    const std::string& via = survivors[attempt % survivors.size()];
    auto a = m.clients().post(via, agent_path(probe) + "/messages",
                              {{"id", id}, {"body", {{"add", 1}}}});
    if (a.ok && a.status == 202) break;
    // 503 (no leader yet) and 502/504 (forwarded to the dead leader) are
    // retried; anything else is a bug.
    if (a.ok && a.status < 500) die("failover message via " + via + ": " + a.describe());
    if (ms_since(killed) > 60'000) die("no acknowledged write 60 s after the kill\n" + m.logs());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  out.acked_ms = ms_since(killed);
  watcher.join();
  out.detect_ms = std::min(static_cast<double>(detect_ns.load()) / 1e6, out.acked_ms);
  out.elected_ms = std::min(static_cast<double>(elected_ns.load()) / 1e6, out.acked_ms);

  // The killed member returns and catches up before the next round.
  m.restart(leader);
  std::string last;
  bool caught_up = poll_until(
      [&] {
        const std::string now_leader = m.ready_leader(g);
        if (now_leader.empty()) return false;
        const uint64_t mine = group_field(m.status(leader), g, "applied_index");
        const uint64_t lead = group_field(m.status(now_leader), g, "applied_index");
        last = "applied " + std::to_string(mine) + " of " + std::to_string(lead);
        return lead > 0 && mine >= lead;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(100));
  if (!caught_up) die(leader + " did not catch up after its restart: " + last + "\n" + m.logs());
  for (uint32_t k = 0; k < m.groups(); ++k)
    if (!poll_until([&] { return !m.ready_leader(k).empty(); }, std::chrono::seconds(30),
                    std::chrono::milliseconds(100)))
      die("group " + std::to_string(k) + " has no leader after round " + std::to_string(round));
  return out;
}

void failover(report& rep, keeld_cluster& m, uint64_t rounds) {
  const std::string probe = "bench/probe";
  spawn_counter(m.clients(), m.ids()[0], probe);
  std::vector<int64_t> acked, detect, elected;
  for (uint64_t r = 0; r < rounds; ++r) {
    auto t = failover_round(m, probe, static_cast<int>(r));
    std::printf("  failover round %llu: detected %.0f ms, ready leader %.0f ms, 202 at %.0f ms\n",
                static_cast<unsigned long long>(r), t.detect_ms, t.elected_ms, t.acked_ms);
    std::fflush(stdout);
    acked.push_back(static_cast<int64_t>(t.acked_ms * 1e6));
    if (t.detect_ms >= 0) detect.push_back(static_cast<int64_t>(t.detect_ms * 1e6));
    if (t.elected_ms >= 0) elected.push_back(static_cast<int64_t>(t.elected_ms * 1e6));
  }
  auto a = summarize(acked), d = summarize(detect), e = summarize(elected);
  rep.metric("failover_rounds", rounds);
  rep.metric("failover_ack_p50_ms", round2(a.p50_us / 1e3));
  rep.metric("failover_ack_max_ms", round2(a.max_us / 1e3));
  rep.metric("failover_detect_p50_ms", round2(d.p50_us / 1e3));
  rep.metric("failover_detect_max_ms", round2(d.max_us / 1e3));
  rep.metric("failover_ready_leader_p50_ms", round2(e.p50_us / 1e3));
  rep.metric("failover_ready_leader_max_ms", round2(e.max_us / 1e3));
  auto total = query_total(m.clients(), m.ready_leader(m.group_of(probe)), probe);
  if (total != static_cast<int64_t>(2 * rounds))
    die("probe total " + std::to_string(total.value_or(-1)) + ", expected " +
        std::to_string(2 * rounds));
  rep.note("failover SIGKILL -> first 202: p50 " + fmt("%.0f", a.p50_us / 1e3) + " ms, max " +
           fmt("%.0f", a.max_us / 1e3) + " ms over " + std::to_string(rounds) +
           " rounds (target <= 2000 ms: " + verdict(a.max_us / 1e3 <= target_failover_ms) +
           " for the max, " + verdict(a.p50_us / 1e3 <= target_failover_ms) + " for the p50)");
}

// --- 4. catch-up of a wiped member ---------------------------------------------

// Wipes the last member (after the load figure there is data to copy) and
// starts it empty: how long until it has joined every group it replicates
// as a voter under its new raft id and applied, on it, everything the
// group's leader had committed at the wipe, and how many bytes its data
// directory then holds.
void catch_up(report& rep, keeld_cluster& m) {
  const std::string x = m.ids().back();
  const uint64_t before = m.data_bytes(x);
  // What each group's leader had committed; the wiped member must apply
  // that much of every group it is a replica of.
  std::map<uint32_t, uint64_t> target;
  for (uint32_t g = 0; g < m.groups(); ++g) {
    const std::string l = m.ready_leader(g);
    if (l.empty()) die("group " + std::to_string(g) + " has no ready leader before the wipe");
    target[g] = group_field(m.status(l), g, "commit_index");
  }
  m.wipe(x);
  const int64_t t0 = now_ns();
  m.restart(x);
  std::string last;
  const bool ok = poll_until(
      [&] {
        json st = m.status(x);
        if (st.is_null() || !st.contains("groups")) return last = x + " does not answer", false;
        // An empty store asks the others first; its groups then run
        // under a new raft id and join (docs/replication.md).
        if (st.value("raft_id", uint64_t{0}) == 0)
          return last = x + " has not chosen its raft id", false;
        for (const auto& e : st["groups"]) {
          if (e.contains("joining"))
            return last = "group " + std::to_string(e.value("group", UINT32_MAX)) +
                          " is joining: " + e["joining"].get<std::string>(),
                   false;
          const uint32_t g = e.value("group", UINT32_MAX);
          const uint64_t applied = e.value("applied_index", uint64_t{0});
          if (target.count(g) && applied < target[g])
            return last = "group " + std::to_string(g) + " applied " + std::to_string(applied) +
                          " of " + std::to_string(target[g]),
                   false;
          if (e.contains("snapshot") && e["snapshot"].value("incomplete", false))
            return last = "group " + std::to_string(g) + " is still fetching", false;
        }
        return true;
      },
      std::chrono::minutes(5), std::chrono::milliseconds(50));
  if (!ok) die("the wiped member did not catch up: " + last + "\n" + m.logs());
  const double seconds = ms_since(t0) / 1e3;
  const uint64_t after = m.data_bytes(x);
  const double mb = static_cast<double>(after) / (1 << 20);
  rep.metric("catchup_seconds", round2(seconds));
  rep.metric("catchup_data_mb_before_wipe", round2(static_cast<double>(before) / (1 << 20)));
  rep.metric("catchup_data_mb_after", round2(mb));
  rep.metric("catchup_mb_per_s", round2(mb / seconds));
  rep.note("a wiped member (" + x + ") was back at every group's committed index in " +
           fmt("%.2f", seconds) + " s from its start, its data directory " + fmt("%.1f", mb) +
           " MB (" + fmt("%.1f", mb / seconds) + " MB/s, start-up included)");
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("replication",
               "Replicated groups with real keeld processes on 127.0.0.1: idle CPU, sequential "
               "step replication 3 vs 1, durable events/s, failover after a SIGKILL.");
  opts.add("keeld", KEEL_KEELD_PATH, "the keeld binary");
  opts.add("figures", "idle,step,load,failover,catchup", "which figures to measure, in this order");
  opts.add("shards", "256", "shards of each cluster");
  opts.add("groups", "32", "groups of each cluster");
  opts.add("idle-s", "20", "seconds of the idle CPU figure");
  opts.add("step-blocks", "5", "blocks of the sequential step (r3, r1, forwarded in turn)");
  opts.add("step-messages", "100", "messages per block and cluster");
  opts.add("agents", "1000", "agents of the load figure");
  opts.add("clients", "64", "client threads (one message in flight each) of the load figure");
  opts.add("warmup-s", "3", "unmeasured seconds of load before the window");
  opts.add("duration-s", "10", "measured seconds of load");
  opts.add("failover-rounds", "5", "SIGKILLs of the probe's leader");
  opts.add_switch("keep", "keep the data directories and logs");
  opts.parse(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);

  std::string figures = "," + opts.str("figures") + ",";
  auto wants = [&](const char* f) {
    return figures.find("," + std::string(f) + ",") != std::string::npos;
  };
  temp_dir tmp("keel-bench-replication");
  if (opts.on("keep")) tmp.keep();
  report rep("replication");
  rep.params() = opts.params();
  rep.params()["data_dir"] = tmp.path();
  const auto shards = static_cast<uint32_t>(opts.u64("shards"));
  const auto groups = opts.u64("groups");

  keeld_cluster m(opts.str("keeld"), tmp.path() + "/r3", "m", 3, shards,
                  {{"replication", 3}, {"groups", groups}});
  int64_t t0 = now_ns();
  m.start_all();
  rep.metric("r3_cluster_up_ms", round2(ms_since(t0)));
  std::printf("replication: 3 members, replication 3, %llu groups, up in %.0f ms\n",
              static_cast<unsigned long long>(groups), ms_since(t0));
  std::fflush(stdout);

  if (wants("idle")) {
    const double idle_s = opts.f64("idle-s");
    const double worst = idle_cpu(rep, m, idle_s, "idle");
    rep.note("idle CPU per member over " + fmt("%.0f", idle_s) + " s, " + std::to_string(groups) +
             " groups x 3 replicas: max " + fmt("%.2f", worst * 100) +
             "% of a core (target < 2%: " + verdict(worst < target_idle_core_share) + ")");
    // The same members without replication: what the cluster's own
    // heartbeats and the nodes cost, to tell the groups' share.
    keeld_cluster r0(opts.str("keeld"), tmp.path() + "/r0", "u", 3, shards, json::object());
    r0.start_all();
    const double plain = idle_cpu(rep, r0, idle_s, "idle_unreplicated");
    r0.stop_all();
    rep.note("idle CPU per member of the same cluster without replication: max " +
             fmt("%.2f", plain * 100) + "% of a core");
  }
  if (wants("step")) {
    keeld_cluster r1(opts.str("keeld"), tmp.path() + "/r1", "s", 3, shards,
                     {{"replication", 1}, {"groups", groups}});
    r1.start_all();
    sequential_step(rep, m, r1, opts.u64("step-blocks"), opts.u64("step-messages"));
    r1.stop_all();
  }
  if (wants("load"))
    events_per_s(rep, m, opts.u64("agents"), opts.u64("clients"), opts.f64("warmup-s"),
                 opts.f64("duration-s"));
  if (wants("failover")) failover(rep, m, opts.u64("failover-rounds"));
  if (wants("catchup")) catch_up(rep, m);
  m.stop_all();
  rep.metric("peak_rss_mb_driver", round2(static_cast<double>(peak_rss_bytes()) / (1 << 20)));
  rep.note("all members and the driver share this machine's cores: figures are upper bounds");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
