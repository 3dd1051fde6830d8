// fork_cost: time and bytes to fork an agent at seq N of a long ledger.
//
// One counter on an in-process node. A fork must start where a step (one
// decision) ends; the counter's ledger is laid out so that every even seq
// is such a point: spawned (seq 1), a {"get": true} (message_received
// alone, seq 2), then {"add": 1} messages (message_received +
// state_changed each) until it holds the largest N. Then, --reps times for
// each N (rep by rep, N by N), a fork at N without an override, as POST
// /v1/agents/{name}/fork does it on one node:
//
//   source: ledger_ops::fork_source_of(parent, N, false): the directory entry,
//     the ledger read of seqs 1..N (blobs resolved), a strict replay of
//     them (the node's check that N ends a step) and each event turned
//     into an export line (JSON with its chain fields as hex);
//   import: ledger_ops::import(fork, {"events", "origin": "fork", "parent",
//     "at"}) until its view callback: the lines parsed, every record
//     encoded and hashed again (each hash must equal the exported one),
//     every event applied to rebuild the state, the fork's first own event
//     decided (fork_started, at N + 1), and one journal write of the copy
//     and that event under the fork's new agent id, made durable (fsync).
//
// Bytes: fork_source::bytes (the export lines), and the ledger records the
// fork copied into the store (keys + values of seqs 1..N under its agent
// id), against the parent's records for the same seqs. Every fork is checked: N
// events copied, its view (origin, parent, fork_seq, last_seq, total), its
// record at N carrying the parent's hash, and its chain intact (audit).
// The HTTP route also records "forked" on the parent (one signal) and
// serializes the lines once more for a fork placed on another node; neither
// is measured here.

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

#include "actors/ledger_ops.hpp"
#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"
#include "persistence/keys.hpp"

namespace keel::bench {

namespace {

constexpr const char* parent = "fork/parent";

// Bytes (keys + values) and count of an agent's ledger records.
struct stored {
  uint64_t bytes = 0;
  uint64_t records = 0;
};

stored ledger_records(actors::node& n, const std::string& name, uint64_t limit) {
  auto& db = n.storage();
  auto meta = db.get_agent(name);
  if (!meta || !*meta) die("no directory entry for " + name);
  const std::string prefix = persistence::agent_prefix((*meta)->id);
  std::string from = prefix;
  stored s;
  while (s.records < limit) {
    const std::size_t page = static_cast<std::size_t>(std::min<uint64_t>(limit - s.records, 1024));
    auto kvs = db.scan(persistence::family::ledger, prefix, from, page);
    if (!kvs) die("scan of " + name + "'s ledger: " + kvs.error().to_string());
    for (const auto& [k, v] : *kvs) s.bytes += k.size() + v.size();
    s.records += kvs->size();
    if (kvs->size() < page) break;
    from = kvs->back().first + '\0';
  }
  return s;
}

std::string hash_at(actors::node& n, const std::string& name, uint64_t seq) {
  auto e = n.ledger(name, seq, 1);
  if (!e || e->events.size() != 1) die("cannot read seq " + std::to_string(seq) + " of " + name);
  return e->events.front().hash;
}

struct fork_sample {
  int64_t source_ns = 0;
  int64_t import_ns = 0;
  uint64_t export_bytes = 0;
  stored copy;
};

// Forks `parent` at `at` as `name` and checks the result.
fork_sample fork_once(actors::node& n, const std::string& name, uint64_t at) {
  fork_sample s;
  int64_t t0 = now_ns();
  auto src = n.ledgers().fork_source_of(parent, at, false);
  s.source_ns = now_ns() - t0;
  if (!src) die("fork_source_of " + std::to_string(at) + ": " + src.error().to_string());
  if (src->events.size() != at || !src->replaced.is_null())
    die("fork_source_of " + std::to_string(at) + " copied " + std::to_string(src->events.size()) +
        " events");
  s.export_bytes = src->bytes;
  json body = {{"events", std::move(src->events)},
               {"origin", "fork"},
               {"parent", parent},
               {"at", at},
               {"by", "bench"}};

  std::atomic<bool> done{false};
  std::optional<result<actors::agent_view>> view;
  t0 = now_ns();
  n.ledgers().import(name, body, [&](result<actors::agent_view> v) {
    view.emplace(std::move(v));
    done.store(true, std::memory_order_release);
  });
  spin_until(done, "import");
  s.import_ns = now_ns() - t0;
  const auto& v = *view;
  if (!v) die("import of " + name + ": " + v.error().to_string());
  // A counter's total after seq `at`: one per add, two events each after
  // the spawn and the get.
  const int64_t total = static_cast<int64_t>((at - 2) / 2);
  if (v->origin != persistence::agent_origin::forked || v->parent != parent || v->fork_seq != at ||
      v->last_seq != at + 1 || v->state.value("total", int64_t{-1}) != total)
    die("the fork " + name + " at " + std::to_string(at) + " shows origin '" +
        std::string(to_string(v->origin)) + "'" + ", parent " + v->parent + ", fork_seq " +
        std::to_string(v->fork_seq) + ", last_seq " + std::to_string(v->last_seq) + ", state " +
        v->state.dump());
  // The copy is seqs 1..at; fork_started follows it.
  s.copy = ledger_records(n, name, at);
  const stored all = ledger_records(n, name, UINT64_MAX);
  if (s.copy.records != at || all.records != at + 1)
    die("the fork " + name + " holds " + std::to_string(all.records) + " records, expected " +
        std::to_string(at) + " copied and its fork_started");
  return s;
}

void check_chain(actors::node& n, const std::string& name, uint64_t at) {
  if (hash_at(n, name, at) != hash_at(n, parent, at))
    die("the fork " + name + " does not carry the parent's hash at seq " + std::to_string(at));
  auto a = n.ledgers().audit(name);
  if (!a || !a->intact() || a->chain.events != at + 1)
    die("audit of " + name + ": " +
        (a ? "intact " + std::to_string(a->intact()) + ", " + std::to_string(a->chain.events) +
                 " events"
           : a.error().to_string()));
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("fork_cost",
               "Time and bytes to fork a counter at seq N of a long ledger: fork_source_of "
               "(read, step check, export) and import (until the fork's view callback).");
  opts.add("at", "100,1000,5000,10000",
           "the seqs N to fork at (even: where the counter's steps end)");
  opts.add("reps", "7", "forks at each N");
  opts.add("fsync-samples", "200", "fsync'd 200 B writes on a store of their own, for scale");
  opts.add("dir", "", "work directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the work directory");
  opts.parse(argc, argv);
  set_spin_mode(spin_mode::yield);

  const std::vector<uint64_t> ats = opts.u64_list("at");
  const uint64_t reps = opts.u64("reps");
  if (ats.empty() || reps == 0) die("--at and --reps need at least one value");
  const uint64_t max_at = *std::max_element(ats.begin(), ats.end());
  for (uint64_t at : ats)
    if (at < 2 || at % 2 != 0) die("--at values must be even (where the counter's steps end)");

  temp_dir tmp("keel-bench-fork");
  if (opts.on("keep")) tmp.keep();
  const std::string work = opts.str("dir").empty() ? tmp.path() : opts.str("dir");
  config::node_config cfg;
  cfg.data_dir = work + "/node";
  cfg.idle_ms = 600'000;  // forks stay live: no snapshot writes while measuring

  report rep("fork_cost");
  rep.params() = opts.params();
  rep.params()["data_dir"] = cfg.data_dir;

  auto n = start_node(cfg);
  int64_t t0 = now_ns();
  spawn_all(
      *n, 1, [](uint64_t) { return std::string(parent); }, [](uint64_t) { return json(); });
  {
    std::atomic<bool> got{false};
    n->send(
        parent, actors::inbound_message{{}, "bench", json{{"get", true}}},
        [](result<actors::send_ack> a) {
          if (!a) die("get: " + a.error().to_string());
        },
        [&got](result<actors::agent_reply> r) {
          if (!r || !r->ok) die("the parent's get failed");
          got.store(true, std::memory_order_release);
        });
    spin_until(got, "get");
  }
  sync_driver d(*n);
  for (int64_t total = 1; static_cast<uint64_t>(2 * total + 2) <= max_at; ++total)
    d.send_add(parent, 1, total);
  auto end = n->ledgers().ledger_end(parent);
  if (!end || *end != max_at) die("the parent's ledger does not end at the largest N");
  rep.metric("parent_events", *end);
  rep.metric("parent_build_s", round2(static_cast<double>(now_ns() - t0) / 1e9));
  rep.metric("rss_bytes_after_build", rss_bytes());

  std::map<uint64_t, std::vector<fork_sample>> samples;
  for (uint64_t r = 0; r < reps; ++r)
    for (uint64_t at : ats) {
      const std::string name = "fork/at-" + std::to_string(at) + "-" + std::to_string(r);
      samples[at].push_back(fork_once(*n, name, at));
      if (r == 0) check_chain(*n, name, at);
    }

  for (uint64_t at : ats) {
    auto& ss = samples[at];
    std::vector<int64_t> source, import, whole;
    for (const auto& s : ss) {
      source.push_back(s.source_ns);
      import.push_back(s.import_ns);
      whole.push_back(s.source_ns + s.import_ns);
    }
    const latency ls = summarize(source), li = summarize(import), lw = summarize(whole);
    const stored parent_prefix = ledger_records(*n, parent, at);
    const double ev = static_cast<double>(at);
    const std::string p = "at" + std::to_string(at) + "_";
    rep.metric(p + "source_ms_p50", round2(ls.p50_us / 1e3));
    rep.metric(p + "source_ms_max", round2(ls.max_us / 1e3));
    rep.metric(p + "import_ms_p50", round2(li.p50_us / 1e3));
    rep.metric(p + "import_ms_max", round2(li.max_us / 1e3));
    rep.metric(p + "fork_ms_p50", round2(lw.p50_us / 1e3));
    rep.metric(p + "source_ns_per_event_p50", round2(ls.p50_us * 1e3 / ev));
    rep.metric(p + "import_ns_per_event_p50", round2(li.p50_us * 1e3 / ev));
    rep.metric(p + "export_bytes", ss.front().export_bytes);
    rep.metric(p + "stored_bytes", ss.front().copy.bytes);
    rep.metric(p + "parent_prefix_stored_bytes", parent_prefix.bytes);
    rep.metric(p + "stored_bytes_per_event",
               round2(static_cast<double>(ss.front().copy.bytes) / ev));
    rep.metric(p + "samples", ss.size());
    std::printf(
        "at %llu: source p50 %.2f ms, import p50 %.2f ms (%.0f + %.0f ns/event); export %llu B, "
        "stored %llu B (parent's prefix %llu B)\n",
        static_cast<unsigned long long>(at), ls.p50_us / 1e3, li.p50_us / 1e3, ls.p50_us * 1e3 / ev,
        li.p50_us * 1e3 / ev, static_cast<unsigned long long>(ss.front().export_bytes),
        static_cast<unsigned long long>(ss.front().copy.bytes),
        static_cast<unsigned long long>(parent_prefix.bytes));
  }
  rep.metric("rss_bytes_end", rss_bytes());
  {
    // What the one fsync of each import costs on this disk now.
    raw_fsync f(work + "/fsync");
    std::vector<int64_t> ns;
    f.measure(opts.u64("fsync-samples"), ns);
    rep.latency_metrics("raw_fsync", summarize(ns), false);
  }
  rep.metric("peak_rss_bytes", peak_rss_bytes());
  n->stop();
  rep.note(
      "source = node::fork_source_of (read seqs 1..N, export lines); import = node::import "
      "until the fork's view callback (parse, re-encode and re-hash, apply, one fsync'd "
      "write); fork = source + import");
  rep.note(
      "stored_bytes = keys + values of the ledger records the fork copied (seqs 1..N; its "
      "own fork_started after them is not counted); "
      "export_bytes = fork_source::bytes (the lines as JSON)");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
