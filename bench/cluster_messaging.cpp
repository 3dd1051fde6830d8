// cluster_messaging: a message by name to an agent on another node, durable
// on both sides.
//
// One process, two nodes ("a" and "b") on 127.0.0.1, each with its own data
// directory, actors::node, net::cluster_node and net::api, wired as keeld
// wires them (api_options.cluster, attach, set_router). Counters whose names
// b owns (config::shard_map) are spawned on b. The driver thread calls
// cluster_node_a.deliver({name, inbox_kind::message, id, "", {"add": 1}}) and times
// each message from the call to its `accepted` callback: the outbox entry
// is fsynced on a, the batch goes to b over the cluster transport, b's
// node.send() makes it durable there (fsync) and b's acknowledgement comes
// back. No reply is awaited.
//
// Phases (the agents of phase 2 are spawned and left to hibernate first):
//   1. live: closed loop with C in {--levels} messages in flight, round
//      robin over --live-agents agents (kept live by b's idle_ms); warm-up,
//      then a timed window;
//   2. hibernated: wait until every agent on b has hibernated, then one
//      message to each of --hibernated-agents distinct agents per level
//      (activation on b + both fsyncs), closed loop with C in
//      {--hibernated-levels}.
//   Finally every agent's total is checked against the messages it was sent.
//
// References, to tell where the time goes: idle CPU of the pair; the
// transport round trip alone (forwarded GET /v1/health a -> b, no agent, no
// disk); the same message sent on b itself (one fsync); raw fsync'd 200 B
// writes. Per level, the nodes' own summaries give fsyncs per message and
// mean fsync / outbox commit (a) / accept (b) times over the window.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"
#include "config/cluster_config.hpp"
#include "net/api/api.hpp"
#include "net/cluster/node.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"

namespace keel::bench {

namespace {

constexpr double target_p50_us = 1000;
constexpr double target_msgs_per_s = 10'000;

// Free TCP ports on 127.0.0.1: each bound to port 0 and read back, all held
// open until the last is picked (so they differ), then closed.
std::vector<uint16_t> free_ports(std::size_t n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (std::size_t i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      die("cannot bind a free port on 127.0.0.1");
    fds.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

int64_t cpu_ns() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto ns = [](const timeval& t) {
    return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + static_cast<int64_t>(t.tv_usec) * 1000;
  };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

// One member of the pair: its node, cluster membership and API.
struct member {
  std::unique_ptr<actors::node> node;
  std::shared_ptr<net::cluster_node> cluster;
  std::unique_ptr<net::api> api;

  void start(const config::node_config& cfg, const config::cluster_config& cc,
             const std::string& id) {
    node = start_node(cfg);
    auto c = net::cluster_node::start(*node, {cc, id, false, {}});
    if (!c) die("cluster_node::start(" + id + "): " + c.error().to_string());
    cluster = std::move(*c);
    net::api_options ao;
    ao.cluster = cluster.get();
    // Nothing here uses ?wait (the only user of defer): deferred work is
    // dropped.
    api = std::make_unique<net::api>(
        *node, [](std::chrono::milliseconds, std::function<void()>) {}, ao);
    cluster->attach(*api);
    node->set_router(cluster);
  }

  void stop() {
    node->set_router(nullptr);
    cluster->stop();
  }

  // Sums and counts of the node's summaries, to take means over a window.
  struct sums {
    double fsyncs = 0;
    double write_sum = 0, write_count = 0;    // journal write incl. fsync
    double commit_sum = 0, commit_count = 0;  // journal submit -> durable
    double accept_sum = 0, accept_count = 0;  // request -> durable ack
    double activations = 0;
  };
  sums read_sums() {
    std::string t = node->metrics_text();
    auto v = [&](std::string_view name) {
      double x = prom_value(t, name);
      if (x < 0) die("metric " + std::string(name) + " is missing");
      return x;
    };
    return {v("keel_journal_batches_total"),        v("keel_journal_write_seconds_sum"),
            v("keel_journal_write_seconds_count"),  v("keel_journal_commit_seconds_sum"),
            v("keel_journal_commit_seconds_count"), v("keel_accept_seconds_sum"),
            v("keel_accept_seconds_count"),         v("keel_activations_total")};
  }
};

// One call at a time from a to b over the cluster transport, answered by
// b's API without touching an agent or the disk: forward("b", GET
// /v1/health). The floor of any cross-node request.
std::vector<int64_t> transport_round_trips(net::cluster_node& a, uint64_t count) {
  std::vector<int64_t> out;
  out.reserve(count);
  std::mutex mu;
  std::condition_variable cv;
  for (uint64_t i = 0; i < count; ++i) {
    bool done = false;
    unsigned status = 0;
    int64_t t1 = 0;
    int64_t t0 = now_ns();
    a.forward("b", net::http_request{"GET", "/v1/health", "", {}, {}}, [&](net::http_response r) {
      std::lock_guard lk(mu);
      t1 = now_ns();
      status = r.status;
      done = true;
      cv.notify_one();
    });
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(30), [&] { return done; }))
      die("forwarded GET /v1/health unanswered for 30 s");
    if (status != 200) die("forwarded GET /v1/health -> " + std::to_string(status));
    out.push_back(t1 - t0);
  }
  return out;
}

bool sees_other_up(net::cluster_node& c) {
  auto st = c.status();
  for (const auto& m : st["members"])
    if (!m.value("up", false)) return false;
  return true;
}

// --- the closed loop ------------------------------------------------------------

enum class wait_mode { block, spin, yield };

// Shared with the accepted callbacks (they run on a's transport threads).
struct flight {
  std::atomic<int64_t> in_flight{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<int64_t, int64_t>> samples;  // (completed at, latency), ns
  uint64_t queued = 0;
  std::string first_error;
};

struct loop_result {
  latency lat;
  uint64_t messages = 0;  // acknowledged by b inside the window
  uint64_t queued = 0;
  double window_s = 0;
  double msgs_per_s = 0;
  member::sums a0, a1, b0, b1;
  int64_t cpu = 0;
};

// Sends message `id` with body {"add": 1} to agent `name`; `accepted` gets
// the owner's acknowledgement.
using send_fn = std::function<void(const std::string& name, const std::string& id,
                                   actors::callback<actors::send_ack> accepted)>;

class closed_loop {
 public:
  closed_loop(member& a, member& b, wait_mode mode) : a_(a), b_(b), mode_(mode) {}

  // Keeps `c` messages in flight. Time-bound when `count` is 0 (`warmup_ns`
  // unmeasured, then `duration_ns` measured: samples that complete inside),
  // else exactly `count` messages, all measured. target(k) names the agent
  // of message k.
  loop_result run(const send_fn& send, std::size_t c, uint64_t count, int64_t warmup_ns,
                  int64_t duration_ns, const std::function<const std::string&(uint64_t)>& target) {
    auto f = std::make_shared<flight>();
    f->samples.reserve(count ? count : 1 << 16);
    loop_result res;
    const int64_t start = now_ns();
    int64_t from = count ? start : start + warmup_ns;
    int64_t to = count ? INT64_MAX : from + duration_ns;
    bool opened = false;
    auto open_window = [&] {
      opened = true;
      res.a0 = a_.read_sums();
      res.b0 = b_.read_sums();
      res.cpu = cpu_ns();
      from = std::max(from, now_ns());
    };
    if (count) open_window();
    for (uint64_t k = 0;; ++k) {
      if (count && k == count) break;
      int64_t now = now_ns();
      if (!opened && now >= from) open_window();
      if (now >= to) break;
      wait_below(*f, static_cast<int64_t>(c));
      issue(send, f, target(k));
    }
    wait_below(*f, 1);
    int64_t end = count ? now_ns() : to;
    res.a1 = a_.read_sums();
    res.b1 = b_.read_sums();
    res.cpu = cpu_ns() - res.cpu;
    std::vector<int64_t> lat;
    lat.reserve(f->samples.size());
    for (auto [done, ns] : f->samples)
      if (done >= from && done <= end) lat.push_back(ns);
    res.messages = lat.size();
    res.queued = f->queued;
    res.window_s = static_cast<double>(end - from) / 1e9;
    res.msgs_per_s = static_cast<double>(res.messages) / res.window_s;
    res.lat = summarize(lat);
    return res;
  }

 private:
  void issue(const send_fn& send, const std::shared_ptr<flight>& f, const std::string& name) {
    std::string id = "cm-" + std::to_string(next_id_++);
    f->in_flight.fetch_add(1, std::memory_order_acq_rel);
    int64_t t0 = now_ns();
    send(name, id, [f, t0, id](result<actors::send_ack> r) {
      int64_t t1 = now_ns();
      std::string bad;
      if (!r)
        bad = "message " + id + ": " + r.error().to_string();
      else if (!r->queued && (r->id != id || r->seq == 0 || r->duplicate))
        bad = "message " + id + ": unexpected ack id=" + r->id + " seq=" + std::to_string(r->seq) +
              (r->duplicate ? " duplicate" : "");
      {
        std::lock_guard lk(f->mu);
        if (!bad.empty() && f->first_error.empty()) f->first_error = bad;
        if (r && r->queued)
          ++f->queued;
        else if (r)
          f->samples.emplace_back(t1, t1 - t0);
        f->in_flight.fetch_sub(1, std::memory_order_acq_rel);
      }
      f->cv.notify_one();
    });
  }

  // Waits until fewer than `limit` are in flight; dies on a callback error
  // or when nothing comes back for 60 s.
  void wait_below(flight& f, int64_t limit) {
    auto check = [&] {
      std::lock_guard lk(f.mu);
      if (!f.first_error.empty()) die(f.first_error);
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    if (mode_ == wait_mode::block) {
      std::unique_lock lk(f.mu);
      bool ok = f.cv.wait_until(lk, deadline, [&] {
        return f.in_flight.load(std::memory_order_acquire) < limit || !f.first_error.empty();
      });
      if (!f.first_error.empty()) die(f.first_error);
      if (!ok)
        die("stalled: " + std::to_string(f.in_flight.load()) +
            " messages unacknowledged for 60 s; a: " + a_.cluster->status().dump());
      return;
    }
    while (f.in_flight.load(std::memory_order_acquire) >= limit) {
      if (std::chrono::steady_clock::now() > deadline)
        die("stalled: " + std::to_string(f.in_flight.load()) + " messages unacknowledged for 60 s");
      if (mode_ == wait_mode::yield) std::this_thread::yield();
    }
    check();
  }

  member& a_;
  member& b_;
  wait_mode mode_;
  uint64_t next_id_ = 0;
};

void report_level(report& rep, const std::string& prefix, std::size_t c, const loop_result& r) {
  rep.latency_metrics(prefix, r.lat);
  rep.metric(prefix + "_mean_us", round2(r.lat.mean_us));
  rep.metric(prefix + "_msgs_per_s", round2(r.msgs_per_s));
  rep.metric(prefix + "_queued", r.queued);
  double n = static_cast<double>(r.messages);
  double fa = r.a1.fsyncs - r.a0.fsyncs, fb = r.b1.fsyncs - r.b0.fsyncs;
  rep.metric(prefix + "_fsyncs_per_msg_a", round2(fa / n));
  rep.metric(prefix + "_fsyncs_per_msg_b", round2(fb / n));
  auto mean_us = [](double s0, double s1, double c0, double c1) {
    return c1 > c0 ? round2((s1 - s0) / (c1 - c0) * 1e6) : 0.0;
  };
  rep.metric(prefix + "_fsync_mean_us_a",
             mean_us(r.a0.write_sum, r.a1.write_sum, r.a0.write_count, r.a1.write_count));
  rep.metric(prefix + "_fsync_mean_us_b",
             mean_us(r.b0.write_sum, r.b1.write_sum, r.b0.write_count, r.b1.write_count));
  rep.metric(prefix + "_outbox_commit_mean_us_a",
             mean_us(r.a0.commit_sum, r.a1.commit_sum, r.a0.commit_count, r.a1.commit_count));
  rep.metric(prefix + "_accept_mean_us_b",
             mean_us(r.b0.accept_sum, r.b1.accept_sum, r.b0.accept_count, r.b1.accept_count));
  rep.metric(prefix + "_activations_b", r.b1.activations - r.b0.activations);
  rep.metric(prefix + "_cores_busy", round2(static_cast<double>(r.cpu) / 1e9 / r.window_s));
  rep.metric(prefix + "_cpu_us_per_msg", round2(static_cast<double>(r.cpu) / 1e3 / n));
  rep.metric(prefix + "_rss_mb", round2(static_cast<double>(rss_bytes()) / (1 << 20)));
  std::printf(
      "  %-18s C=%-4zu %8.0f msgs/s  p50 %8.1f us  p99 %9.1f us  p999 %9.1f us  (%llu msgs)\n",
      prefix.c_str(), c, r.msgs_per_s, r.lat.p50_us, r.lat.p99_us, r.lat.p999_us,
      static_cast<unsigned long long>(r.messages));
  std::fflush(stdout);
}

// Queries every agent on b until its total is what it was sent; dies naming
// the first that still differs after `timeout`.
void verify_totals(actors::node& b, const std::vector<std::string>& names,
                   const std::vector<int64_t>& expected, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::size_t> todo(names.size());
  for (std::size_t i = 0; i < todo.size(); ++i) todo[i] = i;
  std::string last;
  while (!todo.empty()) {
    struct batch {
      std::mutex mu;
      std::condition_variable cv;
      std::size_t pending = 0;
      std::vector<std::size_t> wrong;
      std::string why;
    };
    auto st = std::make_shared<batch>();
    st->pending = todo.size();
    for (std::size_t i : todo) {
      b.query(names[i], json{{"get", true}},
              [st, i, want = expected[i], nm = names[i]](result<json> r) {
                std::lock_guard lk(st->mu);
                int64_t got = r && r->is_object() ? r->value("total", INT64_MIN) : INT64_MIN;
                if (got != want) {
                  st->wrong.push_back(i);
                  if (st->why.empty())
                    st->why = nm + ": total " + (r ? r->dump() : r.error().to_string()) +
                              ", expected " + std::to_string(want);
                }
                if (--st->pending == 0) st->cv.notify_one();
              });
    }
    std::unique_lock lk(st->mu);
    if (!st->cv.wait_until(lk, deadline, [&] { return st->pending == 0; }))
      die("verifying totals: queries unanswered");
    todo = st->wrong;
    last = st->why;
    if (!todo.empty()) {
      if (std::chrono::steady_clock::now() > deadline)
        die(std::to_string(todo.size()) + " agents have wrong totals, e.g. " + last);
      lk.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

// --- main -----------------------------------------------------------------------

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("cluster_messaging",
               "Latency and throughput of messages by name from node a to counters on node b "
               "(two nodes in one process on 127.0.0.1): a's outbox fsync, b's inbox fsync.");
  opts.add("levels", "1,16,128", "messages in flight (closed loop) to live agents");
  opts.add("live-agents", "128", "agents on b the live levels go round robin over");
  opts.add("duration-s", "3", "measured seconds per live level");
  opts.add("warmup-s", "0.5", "unmeasured seconds before each live level");
  opts.add("local-s", "1",
           "seconds of the reference: the same message sent on b itself, one in flight (0 skips)");
  opts.add("forward-samples", "300",
           "reference: forwarded GET /v1/health a -> b, one at a time (transport round trip)");
  opts.add("idle-s", "1", "seconds of doing nothing after start-up, to measure idle CPU (0 skips)");
  opts.add("fsync-samples", "400",
           "raw fsync'd 200 B writes for reference, half before and half after the levels");
  opts.add("hibernated-levels", "1,16", "messages in flight to hibernated agents");
  opts.add("hibernated-agents", "1000",
           "hibernated agents per hibernated level (one message each)");
  opts.add("idle-ms", "2000",
           "b's idle time before an agent hibernates (live agents must hear more often)");
  opts.add("shards", "256", "shards of the cluster");
  opts.add("threads", "0", "CAF scheduler threads per node (0 = one per core)");
  opts.add("wait", "block",
           "how the driver waits for a free slot: block (condition variable), spin or yield; "
           "latency is taken in the callback either way");
  opts.add_switch("keep", "keep the data directories");
  opts.parse(argc, argv);

  wait_mode mode = wait_mode::block;
  if (opts.str("wait") == "spin")
    mode = wait_mode::spin;
  else if (opts.str("wait") == "yield")
    mode = wait_mode::yield;
  else if (opts.str("wait") != "block")
    die("--wait must be block, spin or yield");
  const auto levels = opts.u64_list("levels");
  const auto hib_levels = opts.u64_list("hibernated-levels");
  const uint64_t live_n = opts.u64("live-agents");
  const uint64_t hib_n = opts.u64("hibernated-agents");
  if (live_n == 0 && !levels.empty()) die("--live-agents must be at least 1");
  for (auto c : levels)
    if (c == 0) die("--levels must be at least 1");
  for (auto c : hib_levels)
    if (c == 0) die("--hibernated-levels must be at least 1");
  const auto warmup_ns = static_cast<int64_t>(opts.f64("warmup-s") * 1e9);
  const auto duration_ns = static_cast<int64_t>(opts.f64("duration-s") * 1e9);
  const auto local_ns = static_cast<int64_t>(opts.f64("local-s") * 1e9);

  temp_dir tmp("keel-bench-cluster");
  if (opts.on("keep")) tmp.keep();
  report rep("cluster_messaging");
  rep.params() = opts.params();
  rep.params()["data_dir"] = tmp.path();

  // The cluster: two members, ports picked up front (the HTTP ports are only
  // placeholders the config requires: no HTTP server runs).
  auto ports = free_ports(4);
  config::cluster_config cc;
  cc.cluster_id = "bench-cluster";
  cc.secret = "cluster-messaging-bench-secret";
  cc.shards = static_cast<uint32_t>(opts.u64("shards"));
  for (int i = 0; i < 2; ++i) {
    config::cluster_member m;
    m.id = i == 0 ? "a" : "b";
    m.cluster_port = ports[i];
    m.http_port = ports[2 + i];
    cc.members.push_back(m);
  }
  if (auto s = config::validate(cc); !s) die("cluster config: " + s.to_string());
  config::shard_map map(1, cc.shards, cc.members);

  config::node_config cfg_a, cfg_b;
  cfg_a.data_dir = tmp.path() + "/a";
  cfg_b.data_dir = tmp.path() + "/b";
  cfg_a.scheduler_threads = cfg_b.scheduler_threads = static_cast<uint32_t>(opts.u64("threads"));
  cfg_b.idle_ms = static_cast<uint32_t>(opts.u64("idle-ms"));

  int64_t t0 = now_ns();
  member a, b;
  a.start(cfg_a, cc, "a");
  b.start(cfg_b, cc, "b");
  if (!poll_until([&] { return sees_other_up(*a.cluster) && sees_other_up(*b.cluster); },
                  std::chrono::seconds(15)))
    die("the two nodes did not see each other up within 15 s: a " + a.cluster->status().dump() +
        " b " + b.cluster->status().dump());
  rep.metric("cluster_up_ms", round2(static_cast<double>(now_ns() - t0) / 1e6));
  rep.metric("rss_mb_started", round2(static_cast<double>(rss_bytes()) / (1 << 20)));
  if (double idle_s = opts.f64("idle-s"); idle_s > 0) {
    int64_t c0 = cpu_ns(), w0 = now_ns();
    std::this_thread::sleep_for(std::chrono::duration<double>(idle_s));
    rep.metric("idle_cores_busy",
               round2(static_cast<double>(cpu_ns() - c0) / static_cast<double>(now_ns() - w0)));
  }
  if (uint64_t n = opts.u64("forward-samples"); n > 0) {
    auto rt = transport_round_trips(*a.cluster, n);
    rep.latency_metrics("transport_ref", summarize(rt));
  }

  // Agents owned by b: the live set, then one pool per hibernated level.
  std::vector<std::string> names;
  const uint64_t total_agents = live_n + hib_n * hib_levels.size();
  for (uint64_t i = 0; names.size() < total_agents; ++i) {
    std::string nm = numbered_name("bench/c-", i);
    if (map.owner_of(nm) == "b") names.push_back(std::move(nm));
  }
  if (a.cluster->owner_elsewhere(names.front()) != "b") die("a does not route to b");
  std::vector<int64_t> sent(names.size(), 0);
  auto zero = [](uint64_t) { return json{{"total", 0}}; };
  const int64_t hibernate_timeout_ms = 60'000 + cfg_b.idle_ms;
  // The hibernated pools first, asleep before anything is measured: a mass
  // hibernation (one snapshot per agent through b's journal) during a live
  // level would delay its messages.
  int64_t spawn_ns = spawn_all(
      *b.node, names.size() - live_n, [&](uint64_t i) { return names[live_n + i]; }, zero);
  rep.metric("hibernate_after_spawn_ms", wait_all_hibernated(*b.node, hibernate_timeout_ms));
  spawn_ns += spawn_all(
      *b.node, live_n, [&](uint64_t i) { return names[i]; }, zero);
  rep.metric("spawn_per_s",
             round2(static_cast<double>(names.size()) * 1e9 / static_cast<double>(spawn_ns)));

  closed_loop loop(a, b, mode);
  // The measured path: a's cluster member, by name, to b.
  send_fn remote = [&a](const std::string& name, const std::string& id,
                        actors::callback<actors::send_ack> accepted) {
    a.cluster->deliver(
        net::remote_delivery{name, persistence::inbox_kind::message, id, "", json{{"add", 1}}},
        std::move(accepted), nullptr);
  };
  // The reference: the same message sent on b itself (one fsync, no outbox,
  // no transport).
  send_fn local = [&b](const std::string& name, const std::string& id,
                       actors::callback<actors::send_ack> accepted) {
    b.node->send(name, actors::inbound_message{id, "bench", json{{"add", 1}}}, std::move(accepted),
                 nullptr);
  };
  raw_fsync raw(tmp.path() + "/raw_fsync");
  std::vector<int64_t> fsync_ns;
  const uint64_t fsync_samples = opts.u64("fsync-samples");
  raw.measure(fsync_samples / 2, fsync_ns);
  std::printf("cluster_messaging: a -> b on 127.0.0.1 (ports %u, %u), %zu agents on b\n", ports[0],
              ports[1], names.size());

  // 1. Live agents. One message to each first (activation, connection
  // warm-up), not measured.
  std::vector<std::pair<std::size_t, loop_result>> live;
  if (!levels.empty()) {
    loop.run(remote, 16, live_n, 0, 0, [&](uint64_t k) -> const std::string& {
      ++sent[k];
      return names[k];
    });
    for (auto c : levels) {
      auto r =
          loop.run(remote, c, 0, warmup_ns, duration_ns, [&](uint64_t k) -> const std::string& {
            ++sent[k % live_n];
            return names[k % live_n];
          });
      report_level(rep, "live_c" + std::to_string(c), c, r);
      if (r.b1.activations > r.b0.activations)
        rep.note("live C=" + std::to_string(c) + ": b activated " +
                 std::to_string(static_cast<uint64_t>(r.b1.activations - r.b0.activations)) +
                 " agents (they hibernated between messages: raise --idle-ms)");
      live.emplace_back(c, r);
    }
    if (local_ns > 0) {
      auto r = loop.run(local, 1, 0, warmup_ns, local_ns, [&](uint64_t k) -> const std::string& {
        ++sent[k % live_n];
        return names[k % live_n];
      });
      report_level(rep, "local_ref_c1", 1, r);
    }
  }

  // 2. Hibernated agents: every agent on b asleep, then one message each.
  std::vector<std::pair<std::size_t, loop_result>> hib;
  if (!hib_levels.empty() && hib_n > 0) {
    int64_t cpu0 = cpu_ns();
    int64_t ms = wait_all_hibernated(*b.node, hibernate_timeout_ms);
    rep.metric("hibernate_wait_ms", ms);
    // Nothing is sent meanwhile: what the process burns (mostly) idle.
    if (ms > 0)
      rep.metric("cores_busy_while_waiting_for_hibernation",
                 round2(static_cast<double>(cpu_ns() - cpu0) / 1e6 / static_cast<double>(ms)));
    for (std::size_t l = 0; l < hib_levels.size(); ++l) {
      const std::size_t base = live_n + l * hib_n;
      auto r = loop.run(remote, hib_levels[l], hib_n, 0, 0, [&](uint64_t k) -> const std::string& {
        ++sent[base + k];
        return names[base + k];
      });
      std::string prefix = "hibernated_c" + std::to_string(hib_levels[l]);
      if (r.b1.activations - r.b0.activations != static_cast<double>(hib_n))
        rep.note(prefix + ": b activated " +
                 std::to_string(static_cast<uint64_t>(r.b1.activations - r.b0.activations)) +
                 " agents for " + std::to_string(hib_n) + " messages to hibernated agents");
      report_level(rep, prefix, hib_levels[l], r);
      hib.emplace_back(hib_levels[l], r);
    }
  }

  raw.measure(fsync_samples - fsync_samples / 2, fsync_ns);
  if (!fsync_ns.empty()) rep.latency_metrics("raw_fsync", summarize(fsync_ns));

  // 3. Every message took effect exactly once.
  int64_t v0 = now_ns();
  verify_totals(*b.node, names, sent, std::chrono::seconds(30));
  rep.metric("verify_ms", round2(static_cast<double>(now_ns() - v0) / 1e6));
  auto st_a = a.cluster->status();
  rep.metric("outbox_a", st_a["outbox"]);
  // Whole run, from the nodes' histograms (up to 12.5% above the true value).
  auto fsync_us = [](member& m, const char* q) {
    return round2(
        node_metric(*m.node, std::string("journal_write_seconds{quantile=\"") + q + "\"}") * 1e6);
  };
  rep.metric("journal_write_p50_us_a", fsync_us(a, "0.5"));
  rep.metric("journal_write_p50_us_b", fsync_us(b, "0.5"));
  rep.metric("journal_write_p999_us_a", fsync_us(a, "0.999"));
  rep.metric("journal_write_p999_us_b", fsync_us(b, "0.999"));
  rep.metric("peak_rss_mb", round2(static_cast<double>(peak_rss_bytes()) / (1 << 20)));

  // Targets, next to the figures.
  auto fmt = [](const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return std::string(buf);
  };
  auto verdict = [](bool met) { return std::string(met ? "met" : "MISSED"); };
  auto target_note = [&](const char* what, std::size_t c, const loop_result& r) {
    rep.note(std::string(what) + " C=" + std::to_string(c) + ": p50 " + fmt("%.1f", r.lat.p50_us) +
             " us (target <= 1000 us: " + verdict(r.lat.p50_us <= target_p50_us) + "), " +
             fmt("%.0f", r.msgs_per_s) +
             " msgs/s (target >= 10000: " + verdict(r.msgs_per_s >= target_msgs_per_s) + ")");
  };
  for (auto& [c, r] : live) target_note("live", c, r);
  for (auto& [c, r] : hib) target_note("hibernated", c, r);
  rep.note(
      "latency = deliver() on a -> accepted (b's ack: outbox entry fsynced on a, message durable "
      "on b); fsync/commit/accept means are the nodes' own summaries over each window");

  a.stop();
  b.stop();
  a.node->stop();
  b.node->stop();
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
