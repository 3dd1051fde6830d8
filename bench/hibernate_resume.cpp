// hibernate_resume: what it costs to talk to an agent that is asleep.
//
// N counters with ~1 KB of state each (a label). One driver thread issues
// one request at a time and spins on the answer. Phases:
//
//   1. spawn all on a node whose idle_ms is small; wait until every agent
//      has snapshotted and hibernated;
//   2. warm query pass: per agent, a query (the resume: snapshot in
//      memtable / block cache) and at once a second one (the live sample);
//   3. wait for hibernation; warm message pass: {"add": 1} (activation plus
//      one group-committed fsync), then a second one (live, one fsync);
//   4. wait for hibernation; stop; start a new node on the same directory;
//      query each agent once (resume after restart);
//   5. wait; stop; start again; {"add": 1} to each (message resume after
//      restart);
//   6. wait; the same queries through the HTTP API on loopback (resume, then
//      live), with net::http_server + net::api in process and one
//      keep-alive net::http_client.
//
// Every answer is checked against the total the agent must have; resume
// passes also check that each agent was activated exactly once (the node's
// keel_activations_total).

#include <cstdio>

#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"
#include "http/client.hpp"
#include "http/server.hpp"
#include "net/api/api.hpp"

namespace keel::bench {

namespace {

std::string agent_name(uint64_t i) {
  return numbered_name("bench/agent-", i);
}

std::string make_label(uint64_t i, std::size_t bytes) {
  std::string s = "agent " + std::to_string(i) + " ";
  while (s.size() < bytes) s += "lorem ipsum dolor sit amet ";
  s.resize(bytes);
  return s;
}

struct settings {
  uint64_t agents = 0;
  std::size_t label_bytes = 0;
  config::node_config cfg;
  int64_t hibernate_timeout_ms = 0;
};

// Runs one pass over all agents; `first` and `second` get one sample per
// agent from `step(i, sample_index)` (second only when `twice`). Checks that
// the pass activated exactly `expect_activations` agents.
template <class Step>
void pass(actors::node& n, uint64_t agents, bool twice, std::vector<int64_t>& first,
          std::vector<int64_t>& second, const char* what, Step&& step) {
  double act0 = node_metric(n, "activations_total");
  first.reserve(agents);
  if (twice) second.reserve(agents);
  for (uint64_t i = 0; i < agents; ++i) {
    first.push_back(step(i, 0));
    if (twice) second.push_back(step(i, 1));
  }
  double act = node_metric(n, "activations_total") - act0;
  if (act != static_cast<double>(agents))
    die(std::string(what) + ": " + std::to_string(static_cast<uint64_t>(act)) +
        " activations for " + std::to_string(agents) + " agents (each should resume exactly once)");
}

void wait_hibernated(actors::node& n, const settings& s, report& rep, const std::string& metric) {
  int64_t ms = wait_all_hibernated(n, s.hibernate_timeout_ms);
  if (!metric.empty()) rep.metric(metric, ms);
}

// --- HTTP -------------------------------------------------------------------

// Queries every agent through POST /v1/agents/{name}/query on loopback:
// first request resumes it, the second finds it live. `offset` is what each
// agent's total exceeds its index by.
void run_http_phase(actors::node& n, const settings& s, int64_t offset, report& rep) {
  config::node_config hc = s.cfg;
  hc.http_host = "127.0.0.1";
  hc.http_port = 0;
  auto srv = net::http_server::open(hc);
  if (!srv) die("http_server::open: " + srv.error().to_string());
  net::http_server* server = srv->get();
  net::api api(n, [server](std::chrono::milliseconds delay, std::function<void()> fn) {
    server->run_after(delay, std::move(fn));
  });
  server->start([&api](net::http_request req, net::respond_fn respond) {
    api.handle(std::move(req), std::move(respond));
  });

  net::http_client client;
  client.set_timeout(std::chrono::seconds(30));
  if (auto st = client.connect("127.0.0.1", server->port()); !st)
    die("http connect: " + st.to_string());
  for (int i = 0; i < 100; ++i) {  // warm the connection and the server's threads
    auto r = client.request("GET", "/v1/health");
    if (!r || r->status != 200) die("GET /v1/health failed");
  }

  auto query = [&](uint64_t i) {
    std::string target = "/v1/agents/" + net::percent_encode(agent_name(i)) + "/query";
    int64_t t0 = now_ns();
    auto r = client.request("POST", target, R"({"get":true})");
    int64_t t1 = now_ns();
    if (!r) die("POST " + target + ": " + r.error().to_string());
    if (r->status != 200)
      die("POST " + target + " -> " + std::to_string(r->status) + " " + r->body);
    auto j = json::parse(r->body, nullptr, false);
    int64_t want = static_cast<int64_t>(i) + offset;
    if (!j.is_object() || j.value("total", INT64_MIN) != want)
      die("POST " + target + " answered " + r->body + ", expected total " + std::to_string(want));
    return t1 - t0;
  };
  std::vector<int64_t> resume, live;
  pass(n, s.agents, true, resume, live, "http pass", [&](uint64_t i, int) { return query(i); });
  client.close();
  server->stop();
  rep.latency_metrics("http_resume", summarize(resume));
  rep.latency_metrics("http_live", summarize(live));
}

// --- main -------------------------------------------------------------------

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("hibernate_resume",
               "Latency of a query / message to a live agent, a hibernated one (warm) and one "
               "after a node restart, in process and over HTTP.");
  opts.add("agents", "10000", "number of agents");
  opts.add("label-bytes", "1000", "size of each agent's label (its state)");
  opts.add("idle-ms", "100", "idle time before an agent hibernates");
  opts.add("threads", "0", "CAF scheduler threads (0 = one per core)");
  opts.add("block-cache-mb", "64", "RocksDB block cache");
  opts.add("dir", "", "data directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the data directory");
  opts.add_switch("no-http", "skip the HTTP phase");
  opts.add("wait", "spin",
           "how the driver waits for an answer: spin (pause loop) or yield "
           "(sched_yield loop)");
  opts.parse(argc, argv);
  set_spin_mode(parse_spin_mode(opts.str("wait")));

  settings s;
  s.agents = opts.u64("agents");
  s.label_bytes = opts.u64("label-bytes");
  if (s.agents == 0) die("--agents must be at least 1");
  temp_dir tmp("keel-bench-hibernate");
  if (opts.on("keep")) tmp.keep();
  s.cfg.data_dir = opts.str("dir").empty() ? tmp.path() + "/data" : opts.str("dir");
  s.cfg.idle_ms = static_cast<uint32_t>(opts.u64("idle-ms"));
  s.cfg.scheduler_threads = static_cast<uint32_t>(opts.u64("threads"));
  s.cfg.block_cache_bytes = opts.u64("block-cache-mb") << 20;
  s.hibernate_timeout_ms = 60'000 + s.cfg.idle_ms + static_cast<int64_t>(s.agents) / 50;

  report rep("hibernate_resume");
  rep.params() = opts.params();
  rep.params()["data_dir"] = s.cfg.data_dir;
  const uint64_t n_agents = s.agents;
  auto total0 = [](uint64_t i) { return static_cast<int64_t>(i); };

  // 1. Spawn, then let everything hibernate.
  auto node = start_node(s.cfg);
  int64_t spawn_ns = spawn_all(*node, n_agents, agent_name, [&](uint64_t i) {
    return json{{"total", total0(i)}, {"label", make_label(i, s.label_bytes)}};
  });
  rep.metric("spawn_per_s",
             round2(static_cast<double>(n_agents) * 1e9 / static_cast<double>(spawn_ns)));
  wait_hibernated(*node, s, rep, "hibernate_all_after_spawn_ms");

  sync_driver driver(*node);
  // 2. Warm query pass.
  {
    std::vector<int64_t> resume, live;
    pass(*node, n_agents, true, resume, live, "warm query pass",
         [&](uint64_t i, int) { return driver.query_total(agent_name(i), total0(i)); });
    rep.latency_metrics("live", summarize(live));
    rep.latency_metrics("resume_warm", summarize(resume));
  }
  // 3. Warm message pass.
  wait_hibernated(*node, s, rep, "");
  {
    std::vector<int64_t> resume, live;
    pass(*node, n_agents, true, resume, live, "warm message pass",
         [&](uint64_t i, int k) { return driver.send_add(agent_name(i), 1, total0(i) + 1 + k); });
    rep.latency_metrics("msg_live", summarize(live));
    rep.latency_metrics("msg_resume_warm", summarize(resume));
  }
  wait_hibernated(*node, s, rep, "hibernate_all_after_messages_ms");
  rep.metric("activation_p50_us_node_metric",
             round2(node_metric(*node, "activation_seconds{quantile=\"0.5\"}") * 1e6));
  node->stop();
  node.reset();

  // 4. Restart, query pass.
  {
    // RocksDB does not flush memtables on close: the next open replays this.
    rep.metric("wal_bytes_before_restart", wal_bytes(s.cfg.data_dir));
    int64_t t0 = now_ns();
    node = start_node(s.cfg);
    rep.metric("restart_start_ms", round2(static_cast<double>(now_ns() - t0) / 1e6));
    sync_driver d(*node);
    std::vector<int64_t> resume, unused;
    pass(*node, n_agents, false, resume, unused, "query pass after restart",
         [&](uint64_t i, int) { return d.query_total(agent_name(i), total0(i) + 2); });
    rep.latency_metrics("resume_after_restart", summarize(resume));
    wait_hibernated(*node, s, rep, "");
    node->stop();
    node.reset();
  }
  // 5. Restart, message pass.
  {
    uint64_t wal = wal_bytes(s.cfg.data_dir);
    int64_t t0 = now_ns();
    node = start_node(s.cfg);
    rep.metric("second_restart_start_ms", round2(static_cast<double>(now_ns() - t0) / 1e6));
    rep.metric("wal_bytes_before_second_restart", wal);
  }
  {
    sync_driver d(*node);
    std::vector<int64_t> resume, unused;
    pass(*node, n_agents, false, resume, unused, "message pass after restart",
         [&](uint64_t i, int) { return d.send_add(agent_name(i), 1, total0(i) + 3); });
    rep.latency_metrics("msg_resume_after_restart", summarize(resume));
  }
  wait_hibernated(*node, s, rep, "");
  // 6. HTTP.
  if (!opts.on("no-http")) run_http_phase(*node, s, 3, rep);

  rep.metric("fsyncs_total_last_node", node_metric(*node, "journal_batches_total"));
  node->stop();
  node.reset();
  rep.metric("data_dir_bytes", dir_bytes(s.cfg.data_dir));
  rep.note(
      "live = second query right after the resuming one; msg_* = {\"add\":1} until the "
      "agent's reply (acknowledged durable first: one group-committed fsync each)");
  rep.note(
      "resume_after_restart: new node and RocksDB (empty block cache) on the same dir; the "
      "OS page cache is not dropped");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
