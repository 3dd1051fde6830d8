// replay_speed: how fast an agent's ledger replays, events per second.
//
// Two ledgers are built on an in-process node, then replayed:
//
//   counter: a counter spawned, then {"add": 1} messages, one at a time
//     (message_received + state_changed each), topped up with a {"get":
//     true} (message_received alone) to exactly --events events;
//   loop: an agent loop (agent type declared in JSON, as a user writes it)
//     with the scripted model provider running a cycle script of three
//     replies per turn (two tool calls, then one, then the answer) and two
//     worker tools, whose tasks this bench polls and completes
//     (node::poll_task / complete_task) as an external worker would. One
//     tool's result holds ~1,200 characters of text unique to the call (a
//     string >= 1 KiB: stored as a blob). Turns run one after the other
//     until the ledger holds at least --events events (18 per turn).
//
// Each ledger is then replayed --reps times two ways, interleaved (one of
// each per rep, after a read of the whole ledger through node::ledger):
//
//   engine: agent::replay_strict on the events already in memory (that
//     read, converted): decide() for every recorded decision and a
//     field-by-field comparison with what was recorded;
//   node: node::replay, a strict replay end to end: the store read, blob
//     resolution, decoding, then the same engine.
//
// Every replay must come back identical, cover every event and make the
// same number of decisions; the engine's final state must show what the
// live agent shows (its view and last seq). Anything else ends the bench.
// With --cold-reps, the node is also restarted that many times and the
// first node::replay after each start is timed (RocksDB's block cache is
// empty; the OS page cache is not dropped).

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "actors/ledger_ops.hpp"
#include "agent/registry.hpp"
#include "agent/replay.hpp"
#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"
#include "config/agent_spec.hpp"

namespace keel::bench {

namespace {

constexpr const char* counter_name = "replay/counter";
constexpr const char* loop_name = "replay/desk";
constexpr const char* loop_type_name = "bench-desk";
constexpr const char* queue = "bench-desk";
constexpr const char* final_answer = "Order checked and refunded; the notes are attached.";
constexpr std::size_t notes_chars = 1200;

// One callback's result, waited for by spinning (yielding) on a flag.
template <class T>
class awaited {
 public:
  actors::callback<T> fn() {
    return [this](result<T> r) {
      value_.emplace(std::move(r));
      done_.store(true, std::memory_order_release);
    };
  }
  bool ready() const { return done_.load(std::memory_order_acquire); }
  result<T>& wait(const std::string& what) {
    spin_until(done_, what.c_str());
    return *value_;
  }

 private:
  std::atomic<bool> done_{false};
  std::optional<result<T>> value_;
};

// --- the agent loop type: spec, script, worker ---------------------------------

json desk_script() {
  json lookup = {{"name", "lookup_order"}, {"arguments", {{"order", 7}}}};
  json notes = {{"name", "fetch_notes"}, {"arguments", {{"order", 7}}}};
  json refund_check = {{"name", "lookup_order"}, {"arguments", {{"order", 8}}}};
  return {
      {"description", "replay_speed: two tool calls, then one, then the answer"},
      {"replies", json::array({{{"content", nullptr}, {"tool_calls", json::array({lookup, notes})}},
                               {{"content", "The order is delivered; checking the related order."},
                                {"tool_calls", json::array({refund_check})}},
                               {{"content", final_answer}}})},
      {"cycle", true}};
}

json worker_tool(const std::string& name, const std::string& description) {
  return {{"name", name},
          {"description", description},
          {"parameters",
           {{"type", "object"},
            {"properties", {{"order", {{"type", "integer"}, {"minimum", 1}}}}},
            {"required", {"order"}},
            {"additionalProperties", false}}},
          {"kind", "worker"},
          {"queue", queue},
          {"idempotent", true}};
}

// Writes the script next to where the spec would live and parses the spec
// as keeld parses a file.
std::shared_ptr<const config::agent_spec> desk_spec(const std::string& dir) {
  const std::string script = dir + "/desk-script.json";
  std::ofstream(script) << desk_script().dump(2) << '\n';
  json j = {
      {"name", loop_type_name},
      {"description", "replay_speed: a desk agent with two worker tools"},
      {"instructions",
       "You are a benchmark desk agent. Look the order up, read its notes, check the "
       "related order, then answer."},
      {"model", {{"provider", "scripted"}, {"script", script}}},
      {"tools", json::array({worker_tool("lookup_order", "Looks an order up by number."),
                             worker_tool("fetch_notes", "Returns the notes kept on an order.")})},
      {"max_steps_per_turn", 8}};
  auto spec = config::parse_agent_spec(j, dir + "/bench-desk.json", dir);
  if (!spec) die("agent spec: " + spec.error().to_string());
  return *spec;
}

// What the worker answers: a small object for lookup_order; for fetch_notes
// text unique to the task, long enough to be stored as a blob.
json worker_result(const actors::task_view& t, uint64_t k) {
  const int64_t order = t.arguments.value("order", int64_t{0});
  if (t.tool == "lookup_order")
    return {{"order", order},
            {"customer", 1000 + k % 97},
            {"amount", 20 + k % 180},
            {"status", "delivered"}};
  std::string s = "Notes on order " + std::to_string(order) + ", task " + t.id + ":";
  for (uint64_t i = 0; s.size() < notes_chars; ++i)
    s += " entry " + std::to_string(k * 31 + i) + " customer called about the parcel;";
  s.resize(notes_chars);
  return {{"notes", std::move(s)}};
}

// Runs one turn: sends the user's message, then serves the worker queue
// until the turn's reply arrives.
void run_turn(actors::node& n, uint64_t turn, uint64_t& tasks) {
  awaited<actors::agent_reply> reply;
  n.send(
      loop_name,
      actors::inbound_message{"turn-" + std::to_string(turn), "user",
                              json("Please check order 7 (request " + std::to_string(turn) + ")")},
      [turn](result<actors::send_ack> a) {
        if (!a) die("turn " + std::to_string(turn) + ": send: " + a.error().to_string());
      },
      reply.fn());
  const int64_t deadline = now_ns() + 60'000'000'000;
  while (!reply.ready()) {
    if (auto t = n.poll_task(queue, "bench-worker")) {
      n.complete_task(t->id, "bench-worker", {true, worker_result(*t, tasks++), "", false},
                      [id = t->id](result<json> r) {
                        if (!r) die("complete_task " + id + ": " + r.error().to_string());
                      });
      continue;
    }
    if (now_ns() > deadline) die("turn " + std::to_string(turn) + " did not end within 60 s");
    sched_yield();
  }
  const auto& r = reply.wait("turn reply");
  if (!r) die("turn " + std::to_string(turn) + ": " + r.error().to_string());
  if (!r->ok || r->body.value("status", "") != "completed" ||
      r->body.value("answer", "") != final_answer)
    die("turn " + std::to_string(turn) + " answered " + r->body.dump() + " " + r->code + " " +
        r->message);
}

// --- building the ledgers -----------------------------------------------------

uint64_t ledger_end(actors::node& n, const char* name) {
  auto e = n.ledgers().ledger_end(name);
  if (!e) die(std::string("ledger_end ") + name + ": " + e.error().to_string());
  return *e;
}

void spawn(actors::node& n, const char* name, const char* type) {
  awaited<actors::agent_view> v;
  n.spawn(name, type, nullptr, v.fn());
  if (auto& r = v.wait("spawn"); !r)
    die(std::string("spawn ") + name + ": " + r.error().to_string());
}

// Exactly `events` events: spawned, two per add, and a get (one event) when
// `events` is even.
void build_counter(actors::node& n, uint64_t events) {
  spawn(n, counter_name, "counter");
  sync_driver d(n);
  int64_t total = 0;
  while (ledger_end(n, counter_name) + 2 <= events) d.send_add(counter_name, 1, ++total);
  if (ledger_end(n, counter_name) < events) {
    awaited<actors::agent_reply> reply;
    n.send(
        counter_name, actors::inbound_message{{}, "bench", json{{"get", true}}},
        [](result<actors::send_ack>) {}, reply.fn());
    if (auto& r = reply.wait("get"); !r || !r->ok) die("counter get failed");
  }
  if (ledger_end(n, counter_name) != events)
    die("the counter's ledger holds " + std::to_string(ledger_end(n, counter_name)) +
        " events, expected " + std::to_string(events));
}

// Turns until the ledger holds at least `events` events; returns the turns.
uint64_t build_loop(actors::node& n, uint64_t events, uint64_t& tasks) {
  spawn(n, loop_name, loop_type_name);
  uint64_t turns = 0;
  while (ledger_end(n, loop_name) < events) run_turn(n, ++turns, tasks);
  return turns;
}

// --- replaying ----------------------------------------------------------------

std::vector<agent::recorded_event> read_all(actors::node& n, const char* name, uint64_t count) {
  auto entries = n.ledger(name, 1, count);
  if (!entries) die(std::string("ledger ") + name + ": " + entries.error().to_string());
  if (entries->events.size() != count)
    die(std::string("ledger ") + name + " returned " + std::to_string(entries->events.size()) +
        " events, expected " + std::to_string(count));
  std::vector<agent::recorded_event> out;
  out.reserve(entries->events.size());
  for (auto& e : entries->events) {
    auto t = agent::event_type_from_name(e.type);
    if (!t) die("unknown event type " + e.type + " at seq " + std::to_string(e.seq));
    out.push_back({e.seq, {*t, e.time_ms, std::move(e.data)}});
  }
  return out;
}

actors::agent_view view_of(actors::node& n, const char* name) {
  awaited<actors::agent_view> v;
  n.get(name, v.fn());
  auto& r = v.wait("get");
  if (!r) die(std::string("get ") + name + ": " + r.error().to_string());
  return std::move(*r);
}

void check_strict(const agent::strict_result& r, uint64_t events, const std::string& what) {
  if (!r.identical || r.events != events || r.diverged)
    die(what + ": not identical (" + std::to_string(r.events) + " of " + std::to_string(events) +
        " events" +
        (r.diverged
             ? ", diverged at seq " + std::to_string(r.diverged->seq) + ": " + r.diverged->reason
             : std::string()) +
        ")");
}

void check_node_replay(const result<actors::replay_report>& r, uint64_t events, uint64_t decisions,
                       const std::string& what) {
  if (!r) die(what + ": " + r.error().to_string());
  if (!r->strict || !r->strict->identical || r->strict->events != events ||
      r->strict->decisions != decisions)
    die(what + " answered " +
        (r->strict ? "identical " + std::to_string(r->strict->identical) + ", " +
                         std::to_string(r->strict->events) + " events, " +
                         std::to_string(r->strict->decisions) + " decisions"
                   : std::string("a what-if")) +
        "; expected identical, " + std::to_string(events) + " events, " +
        std::to_string(decisions) + " decisions");
}

void per_event_metrics(report& rep, const std::string& p, const latency& l, uint64_t events) {
  const double ev = static_cast<double>(events);
  rep.metric(p + "_events_per_s_p50", round2(ev * 1e6 / l.p50_us));
  rep.metric(p + "_events_per_s_p99", round2(ev * 1e6 / l.p99_us));
  rep.metric(p + "_ns_per_event_p50", round2(l.p50_us * 1e3 / ev));
  rep.metric(p + "_ns_per_event_p99", round2(l.p99_us * 1e3 / ev));
}

struct replayed {
  uint64_t events = 0;
  uint64_t decisions = 0;
};

// Replays the ledger of `name` both ways, `reps` times each; adds figures
// named `p`_... to `rep`.
replayed measure(actors::node& n, const agent::agent_type& type, const char* name,
                 const std::string& p, uint64_t reps, report& rep) {
  const uint64_t events = ledger_end(n, name);
  rep.metric(p + "_events", events);

  // Each rep: the whole ledger read through node::ledger (the public read,
  // which also builds hex chain fields), the engine on those events, then
  // node::replay; interleaved so that a busy minute on this shared machine
  // weighs on all three alike.
  std::vector<int64_t> read_ns, engine_ns, node_ns, overhead_ns;
  std::vector<agent::recorded_event> recorded;
  uint64_t decisions = 0, data_bytes = 0;
  std::optional<agent::agent_state> final_state;
  uint64_t rss_in_memory = 0;
  for (uint64_t i = 0; i < reps; ++i) {
    int64_t t0 = now_ns();
    recorded = read_all(n, name, events);
    read_ns.push_back(now_ns() - t0);
    if (i == 0) rss_in_memory = rss_bytes();

    t0 = now_ns();
    agent::strict_result r = agent::replay_strict(type, agent::agent_state{}, recorded);
    engine_ns.push_back(now_ns() - t0);
    check_strict(r, events, p + " engine replay");
    if (final_state && !(r.state == *final_state))
      die(p + " engine replay: two replays of one ledger ended in different states");
    decisions = r.decisions;
    final_state = std::move(r.state);

    t0 = now_ns();
    auto answer = n.ledgers().replay(name, json::object());
    node_ns.push_back(now_ns() - t0);
    check_node_replay(answer, events, decisions, p + " node::replay");
    overhead_ns.push_back(std::max<int64_t>(0, node_ns.back() - engine_ns.back()));
  }
  const actors::agent_view live = view_of(n, name);
  if (live.last_seq != final_state->last_seq || live.state != type.view(*final_state))
    die(p + ": the replayed state is not the live agent's: replayed " +
        type.view(*final_state).dump().substr(0, 400) + " live " +
        live.state.dump().substr(0, 400));
  std::map<std::string, uint64_t> by_type;
  for (const auto& e : recorded) {
    data_bytes += e.ev.data.dump().size();
    ++by_type[std::string(agent::to_string(e.ev.type))];
  }
  rep.metric(p + "_event_data_bytes_mean", round2(static_cast<double>(data_bytes) / events));
  rep.metric(p + "_events_by_type", by_type);
  rep.metric(p + "_decisions", decisions);

  const latency read = summarize(read_ns);
  const latency engine = summarize(engine_ns);
  const latency whole = summarize(node_ns);
  rep.metric(p + "_read_ms_p50", round2(read.p50_us / 1e3));
  rep.latency_metrics(p + "_engine_run", engine, false);
  per_event_metrics(rep, p + "_engine", engine, events);
  rep.latency_metrics(p + "_node_replay_run", whole, false);
  rep.metric(p + "_node_replay_ms_p50", round2(whole.p50_us / 1e3));
  rep.metric(p + "_node_replay_ms_p99", round2(whole.p99_us / 1e3));
  per_event_metrics(rep, p + "_node_replay", whole, events);
  // Per rep, node::replay minus the engine: the store read, blob
  // resolution and decoding inside node::replay.
  const latency overhead = summarize(overhead_ns);
  rep.metric(p + "_node_replay_minus_engine_ms_p50", round2(overhead.p50_us / 1e3));
  rep.metric(p + "_rss_bytes_events_in_memory", rss_in_memory);
  rep.metric(p + "_rss_bytes_after", rss_bytes());
  std::printf(
      "%s: %llu events, %llu decisions; engine p50 %.2f ms (%.0f events/s, %.0f ns/event), "
      "node::replay p50 %.2f ms (%.0f events/s; %.2f ms more than the engine), node::ledger "
      "%.2f ms\n",
      p.c_str(), static_cast<unsigned long long>(events),
      static_cast<unsigned long long>(decisions), engine.p50_us / 1e3,
      static_cast<double>(events) * 1e6 / engine.p50_us, engine.p50_us * 1e3 / events,
      whole.p50_us / 1e3, static_cast<double>(events) * 1e6 / whole.p50_us, overhead.p50_us / 1e3,
      read.p50_us / 1e3);
  std::fflush(stdout);
  return {events, decisions};
}

// The first node::replay after each of `runs` restarts.
void measure_cold(std::unique_ptr<actors::node>& n, const std::function<actors::start_options()>& o,
                  const config::node_config& cfg, const char* name, const std::string& p,
                  const replayed& want, uint64_t runs, report& rep) {
  std::vector<int64_t> ns;
  for (uint64_t i = 0; i < runs; ++i) {
    n->stop();
    n.reset();
    auto started = actors::node::start(cfg, o());
    if (!started) die("node::start: " + started.error().to_string());
    n = std::move(*started);
    const int64_t t0 = now_ns();
    auto r = n->ledgers().replay(name, json::object());
    ns.push_back(now_ns() - t0);
    check_node_replay(r, want.events, want.decisions, p + " node::replay after a restart");
  }
  const latency l = summarize(ns);
  rep.metric(p + "_node_replay_after_restart_ms_p50", round2(l.p50_us / 1e3));
  rep.metric(p + "_node_replay_after_restart_ms_max", round2(l.max_us / 1e3));
  rep.metric(p + "_node_replay_after_restart_samples", l.count);
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("replay_speed",
               "Events replayed per second: a counter's and an agent loop's ledger of ~10,000 "
               "events, by the pure engine (agent::replay_strict) and end to end (node::replay).");
  opts.add("events", "10000", "events per ledger (the loop's: at least this many)");
  opts.add("reps", "30", "replays of each ledger, each way");
  opts.add("cold-reps", "3", "node restarts, each followed by one timed node::replay");
  opts.add("dir", "", "work directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the work directory");
  opts.parse(argc, argv);
  set_spin_mode(spin_mode::yield);

  const uint64_t events = opts.u64("events");
  const uint64_t reps = opts.u64("reps");
  if (events < 2) die("--events must be at least 2");
  if (reps == 0) die("--reps must be at least 1");

  temp_dir tmp("keel-bench-replay");
  if (opts.on("keep")) tmp.keep();
  const std::string work = opts.str("dir").empty() ? tmp.path() : opts.str("dir");
  std::filesystem::create_directories(work);

  report rep("replay_speed");
  rep.params() = opts.params();
  rep.params()["work_dir"] = work;

  const auto spec = desk_spec(work);
  agent::type_registry types;  // the same types the node runs, for the engine
  if (auto s = types.add(spec); !s) die("type registry: " + s.error().to_string());
  auto start_opts = [&spec] {
    actors::start_options o;
    o.agent_types.push_back(spec);
    return o;
  };
  config::node_config cfg;
  cfg.data_dir = work + "/node";
  cfg.idle_ms = 600'000;  // no hibernation (and no snapshot writes) while measuring
  auto started = actors::node::start(cfg, start_opts());
  if (!started) die("node::start: " + started.error().to_string());
  std::unique_ptr<actors::node> n = std::move(*started);
  rep.metric("rss_bytes_at_start", rss_bytes());

  int64_t t0 = now_ns();
  build_counter(*n, events);
  rep.metric("counter_build_s", round2(static_cast<double>(now_ns() - t0) / 1e9));
  t0 = now_ns();
  uint64_t tasks = 0;
  const uint64_t turns = build_loop(*n, events, tasks);
  rep.metric("loop_build_s", round2(static_cast<double>(now_ns() - t0) / 1e9));
  rep.metric("loop_turns", turns);
  rep.metric("loop_worker_tasks", tasks);
  rep.metric("rss_bytes_after_build", rss_bytes());

  const replayed c = measure(*n, *types.find("counter"), counter_name, "counter", reps, rep);
  const replayed l = measure(*n, *types.find(loop_type_name), loop_name, "loop", reps, rep);
  if (const uint64_t cold = opts.u64("cold-reps"); cold > 0) {
    measure_cold(n, start_opts, cfg, counter_name, "counter", c, cold, rep);
    measure_cold(n, start_opts, cfg, loop_name, "loop", l, cold, rep);
  }
  n->stop();
  n.reset();
  rep.metric("peak_rss_bytes", peak_rss_bytes());
  rep.note(
      "engine = agent::replay_strict on events already in memory; node_replay = node::replay "
      "(store read, blob resolution, decoding, then the same engine); *_run_* are whole-ledger "
      "times in microseconds, events_per_s and ns_per_event are derived from them");
  rep.note(
      "read_ms = node::ledger of the whole ledger (the read before the engine, via the public "
      "API); every replay was checked identical, covering every event, with the live agent's "
      "state");
  rep.note(
      "loop: scripted model (cycle of 3 replies per turn), 2 worker tools served by the bench; "
      "one tool result per turn holds 1,200 characters (a blob)");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
