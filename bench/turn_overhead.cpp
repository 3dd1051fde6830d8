// turn_overhead: Keel's own cost per durable step of the agent loop.
//
// An agent type built in code: three http tools served by an in-process
// runner that answers at once, and an in-process model provider ("instant")
// that, within each turn, asks for one tool call three times, then answers
// with text. Which reply to give is read off the request: the number of
// tool results after the last user message. So one turn is
//
//   message -> model -> (model_replied, guardrail_decided, effect_started,
//   effect_completed) x 3 -> model -> final answer
//
// and every step between two calls is one write set through the journal
// (the node's keel_journal_appends_total; with one agent each is its own
// fsync, keel_journal_batches_total). Neither the model nor the tools cost
// anything: what is measured is the runtime (decide, apply, encode, the
// journal write with fsync, actor and effect-pool hops).
//
// A turn's latency runs from just before node::send to the moment the
// turn's completion is visible to the sender, watched one of two ways
// (--completion):
//   reply: the send's `replied` callback, which an agent loop runs with the
//          turn's outcome once turn_completed is durable (what an HTTP
//          caller that waits for the answer hears);
//   get:   when the provider hands out a turn's final answer it starts a
//          chain of node::get calls for that agent, each issued from the
//          previous one's callback, until the view's "last.turn" shows the
//          turn (a get that reaches the agent while the final write is in
//          flight is answered once that write is durable): a poller's view.
// Per-step latency is the turn latency divided by the durable steps per turn.
//
// Phases, each on a fresh node with its own directory (so the node's
// latency summaries cover that phase only), sync on (a real fsync per
// journal batch):
//   1. seq: one agent, sequential: warm-up turns, then --turns measured
//      turns, all one conversation; percentiles of turn and step latency,
//      fsyncs per step and per turn, the journal's write time (the fsync)
//      and the step/fsync ratio;
//   2. seq_short: the same, with the turns split into conversations of
//      --short-turns turns (a fresh agent each, one after the other);
//   3. for each K in --levels: K agents in a closed loop (one turn in flight
//      per agent) for --duration-s; turns/s, steps/s, fsyncs per turn.
//
// The model request is rebuilt from the whole conversation for every model
// call (agent/loop.hpp), so in one long conversation the later turns cost
// more: the report gives the p50 of the first and the last tenth of each
// conversation's turns next to the overall figures, and seq_short shows
// the cost of a step while the conversation is short.

#include <sys/resource.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"

namespace keel::bench {

namespace {

constexpr int tool_calls_per_turn = 3;
constexpr const char* agent_type_name = "bench-turn";

std::string agent_name(const std::string& prefix, uint64_t i) {
  return numbered_name(prefix, i);
}

std::shared_ptr<const config::agent_spec> bench_spec() {
  auto s = std::make_shared<config::agent_spec>();
  s->name = agent_type_name;
  s->description = "turn_overhead: three instant tools, an instant model";
  s->instructions = "You are a benchmark agent. Call lookup_0, lookup_1, lookup_2, then answer.";
  s->model.provider = "instant";
  s->model.model = "instant";
  for (int k = 0; k < tool_calls_per_turn; ++k) {
    config::tool_spec t;
    t.name = "lookup_" + std::to_string(k);
    t.description = "Looks something up (answered in process).";
    t.kind = config::tool_kind::http;
    t.url = "http://127.0.0.1:1/unused";  // the in-process runner never calls it
    t.parameters = {
        {"type", "object"}, {"properties", {{"q", {{"type", "integer"}}}}}, {"required", {"q"}}};
    t.idempotent = true;
    s->tools.push_back(std::move(t));
  }
  // One argument rule, so the guardrail check evaluates a rule as a real
  // spec's would (it never matches).
  config::arg_rule r;
  r.name = "no-huge-q";
  r.tool = "*";
  r.pointer = "/q";
  r.above = 1e12;
  r.reason = "q is too large";
  s->guardrails.rules.push_back(std::move(r));
  s->max_steps_per_turn = 8;
  s->hash = "turn_overhead-v1";
  return s;
}

// One agent of a closed loop. Its fields are touched only by that agent's
// chain of callbacks (each runs after the previous one), then by the main
// thread once the chain has ended.
struct agent_slot {
  std::string name;
  uint64_t turn = 0;  // the turn in flight (1-based)
  int64_t sent_ns = 0;
  int64_t deadline_ns = 0;
  std::vector<int64_t> samples;  // turn latencies in the measured phase
};

class turn_loop;

// The model: three tool calls, then a final answer, decided from the
// request alone. Tells the loop when it hands out a final answer.
class instant_model final : public actors::model_provider {
 public:
  void attach(turn_loop* loop) { loop_.store(loop, std::memory_order_release); }

  actors::effect_outcome complete(const config::model_spec&, const json& request,
                                  const actors::model_call_context& ctx) override;

 private:
  std::atomic<turn_loop*> loop_{nullptr};
};

// The tools: answer at once with a small result.
class instant_tools final : public actors::tool_runner {
 public:
  actors::effect_outcome run(const config::tool_spec& tool, const json& arguments,
                             const actors::tool_call_context&) override {
    return actors::effect_outcome::success(
        {{"tool", tool.name}, {"q", arguments.value("q", 0)}, {"found", true}});
  }
};

class turn_loop {
 public:
  enum phase : int { warmup = 0, measure = 1, draining = 2 };
  enum class completion { reply, get };

  // `stop_after`: with a count, the loop ends on its own after that many
  // measured turns (single agent); 0: it runs until set_phase(draining).
  turn_loop(actors::node& n, std::vector<agent_slot>& slots, completion how, uint64_t stop_after,
            phase start_phase)
      : node_(n), slots_(slots), how_(how), stop_after_(stop_after), phase_(start_phase) {
    for (std::size_t i = 0; i < slots_.size(); ++i) index_.emplace(slots_[i].name, i);
  }

  void start() {
    in_flight_.store(static_cast<int64_t>(slots_.size()), std::memory_order_release);
    for (std::size_t i = 0; i < slots_.size(); ++i) send_next(i);
  }
  void set_phase(phase p) { phase_.store(p, std::memory_order_release); }
  // With a count, each agent ends on its own after that many warm-up turns.
  // Call before start().
  void set_warmup_turns(uint64_t n) { warmup_turns_ = n; }
  uint64_t measured() const { return measured_.load(std::memory_order_acquire); }
  bool idle() const { return in_flight_.load(std::memory_order_acquire) == 0; }
  // Waits until every agent's turn in flight has completed.
  void drain(std::chrono::milliseconds timeout) {
    set_phase(draining);
    wait_idle(timeout);
  }
  void wait_idle(std::chrono::milliseconds timeout) {
    bool ok = poll_until([&] { return idle() || failed(); }, timeout, std::chrono::milliseconds(1));
    check();
    if (!ok) die("the turn loop did not finish in time");
  }
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  void check() {
    if (!failed()) return;
    std::lock_guard lk(mu_);
    die(error_);
  }

  // From the model provider (an effect thread): the final answer of `agent`'s
  // turn is being handed out; in get mode, watch for the turn to show.
  void on_final_answer(const std::string& agent) {
    if (how_ != completion::get) return;
    auto it = index_.find(agent);
    if (it == index_.end()) return;  // an agent of another loop
    watch(it->second);
  }

 private:
  void fail(std::string why) {
    {
      std::lock_guard lk(mu_);
      if (error_.empty()) error_ = std::move(why);
    }
    failed_.store(true, std::memory_order_release);
  }

  void send_next(std::size_t i) {
    agent_slot& a = slots_[i];
    a.turn += 1;
    std::string text = "turn " + std::to_string(a.turn) + ": look up three things, then answer.";
    a.sent_ns = now_ns();
    a.deadline_ns = a.sent_ns + 60'000'000'000;
    node_.send(
        a.name, actors::inbound_message{{}, "bench", json(std::move(text))},
        [this, i](result<actors::send_ack> ack) {
          if (!ack) fail("send to " + slots_[i].name + ": " + ack.error().to_string());
        },
        [this, i](result<actors::agent_reply> r) {
          const int64_t t = now_ns();
          agent_slot& a = slots_[i];
          if (!r) return fail("send to " + a.name + ": " + r.error().to_string());
          if (!r->ok) return fail("send to " + a.name + " answered " + r->code + ": " + r->message);
          // The turn's outcome; in get mode the get chain has seen it first
          // (or will): only check it.
          if (r->body.value("turn", uint64_t{0}) != a.turn ||
              r->body.value("status", "") != "completed")
            return fail("send to " + a.name + " (turn " + std::to_string(a.turn) + ") answered " +
                        r->body.dump());
          if (how_ == completion::reply) turn_done(i, t);
        });
  }

  // One get; its callback either sees the turn completed or asks again.
  void watch(std::size_t i) {
    node_.get(slots_[i].name, [this, i](result<actors::agent_view> v) {
      const int64_t t = now_ns();
      agent_slot& a = slots_[i];
      if (!v) return fail("get " + a.name + ": " + v.error().to_string());
      const json last = v->state.contains("last") ? v->state["last"] : json();
      if (!last.is_object() || last.value("turn", uint64_t{0}) != a.turn) {
        if (t > a.deadline_ns)
          return fail(a.name + ": turn " + std::to_string(a.turn) + " not completed within 60 s");
        return watch(i);
      }
      if (last.value("status", "") != "completed")
        return fail(a.name + ": turn " + std::to_string(a.turn) + " ended " + last.dump());
      turn_done(i, t);
    });
  }

  // Agent i's turn became visible at `t`: record it, start the next one.
  void turn_done(std::size_t i, int64_t t) {
    agent_slot& a = slots_[i];
    const int p = phase_.load(std::memory_order_acquire);
    if (p == measure) {
      a.samples.push_back(t - a.sent_ns);
      uint64_t m = measured_.fetch_add(1, std::memory_order_acq_rel) + 1;
      if (stop_after_ != 0 && m >= stop_after_) {
        in_flight_.fetch_sub(1, std::memory_order_acq_rel);
        return;
      }
    }
    if (p == draining || (p == warmup && warmup_turns_ != 0 && a.turn >= warmup_turns_)) {
      in_flight_.fetch_sub(1, std::memory_order_acq_rel);
      return;
    }
    send_next(i);
  }

  actors::node& node_;
  std::vector<agent_slot>& slots_;
  std::unordered_map<std::string, std::size_t> index_;  // read-only once built
  const completion how_;
  const uint64_t stop_after_;
  uint64_t warmup_turns_ = 0;
  std::atomic<int> phase_;
  std::atomic<uint64_t> measured_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::string error_;
};

actors::effect_outcome instant_model::complete(const config::model_spec&, const json& request,
                                               const actors::model_call_context& ctx) {
  // Tool results after the last user message: how far this turn has got.
  const json& messages = request.at("messages");
  int results = 0;
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    const std::string role = it->value("role", "");
    if (role == "user") break;
    if (role == "tool") ++results;
  }
  const json usage = {{"prompt_tokens", 40}, {"completion_tokens", 8}};
  if (results > tool_calls_per_turn)
    return actors::effect_outcome::failure(
        "instant model: " + std::to_string(results) + " tool results in one turn", false);
  if (results < tool_calls_per_turn) {
    json call = {{"id", "call_" + std::to_string(ctx.call_index)},
                 {"name", "lookup_" + std::to_string(results)},
                 {"arguments", {{"q", results + 1}}}};
    return actors::effect_outcome::success({{"content", nullptr},
                                            {"tool_calls", json::array({std::move(call)})},
                                            {"usage", usage},
                                            {"finish_reason", "tool_calls"}});
  }
  if (turn_loop* loop = loop_.load(std::memory_order_acquire)) loop->on_final_answer(ctx.agent);
  return actors::effect_outcome::success({{"content", "All three looked up; here is the answer."},
                                          {"tool_calls", json::array()},
                                          {"usage", usage},
                                          {"finish_reason", "stop"}});
}

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
  journal_counters operator-(const journal_counters& o) const {
    return {batches - o.batches, appends - o.appends, events - o.events,
            write_seconds - o.write_seconds};
  }
};

// A node with the bench's agent type and the instant model and tools.
struct bench_node {
  std::shared_ptr<instant_model> model = std::make_shared<instant_model>();
  std::unique_ptr<actors::node> node;

  bench_node(const config::node_config& cfg, uint32_t effect_threads) {
    actors::start_options o;
    o.agent_types.push_back(bench_spec());
    o.plugins.providers["instant"] = model;
    o.plugins.runners[config::tool_kind::http] = std::make_shared<instant_tools>();
    o.effect_threads = effect_threads;
    auto n = actors::node::start(cfg, std::move(o));
    if (!n) die("node::start: " + n.error().to_string());
    node = std::move(*n);
  }
  void stop() {
    node->stop();
    node.reset();
  }
};

// node_driver's spawn_all() spawns counters; these agents have the bench's type.
void spawn_loop_agents(actors::node& n, std::vector<agent_slot>& slots) {
  std::atomic<int64_t> pending{static_cast<int64_t>(slots.size())};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string error;
  for (auto& a : slots) {
    n.spawn(a.name, agent_type_name, nullptr, [&, name = a.name](result<actors::agent_view> v) {
      if (!v) {
        std::lock_guard lk(mu);
        error = "spawn " + name + ": " + v.error().to_string();
        failed.store(true, std::memory_order_release);
      }
      pending.fetch_sub(1, std::memory_order_acq_rel);
    });
  }
  if (!poll_until([&] { return pending.load(std::memory_order_acquire) == 0; },
                  std::chrono::seconds(120), std::chrono::milliseconds(1)))
    die("spawning the loop agents took over 120 s");
  if (failed.load(std::memory_order_acquire)) die(error);
}

// CPU time (user + system) of the whole process so far, in seconds: the
// node's threads, RocksDB's, and the bench's own (a sleeping driver, an
// instant model and tools).
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

double quantile_us(actors::node& n, const char* summary, const char* q) {
  return round2(node_metric(n, std::string(summary) + "{quantile=\"" + q + "\"}") * 1e6);
}

// One agent at a time runs its turns back to back on a fresh node:
// `conversations` agents of `per_conversation` measured turns each, after
// `warmup` unmeasured turns (on the first agent when there is one
// conversation, else on an agent of their own). Adds the figures under
// `prefix`_.
void sequential_phase(const config::node_config& cfg, uint32_t effect_threads,
                      turn_loop::completion how, const std::string& prefix, uint64_t conversations,
                      uint64_t per_conversation, uint64_t warmup, bool print_metrics, report& rep) {
  bench_node bn(cfg, effect_threads);
  actors::node& n = *bn.node;
  auto run_turns = [&](agent_slot& a, uint64_t count, bool measured) {
    std::vector<agent_slot> one(1);
    std::swap(one[0], a);
    turn_loop loop(n, one, how, measured ? count : 0,
                   measured ? turn_loop::measure : turn_loop::warmup);
    if (!measured) loop.set_warmup_turns(one[0].turn + count);
    bn.model->attach(&loop);
    loop.start();
    loop.wait_idle(std::chrono::seconds(7200));
    bn.model->attach(nullptr);
    std::swap(one[0], a);
  };

  std::vector<agent_slot> slots(conversations);
  for (uint64_t c = 0; c < conversations; ++c)
    slots[c].name = agent_name("turn/" + prefix + "-", c);
  spawn_loop_agents(n, slots);
  if (warmup > 0) {
    if (conversations == 1) {
      run_turns(slots[0], warmup, false);
    } else {
      std::vector<agent_slot> w(1);
      w[0].name = agent_name("turn/" + prefix + "-warmup-", 0);
      spawn_loop_agents(n, w);
      run_turns(w[0], warmup, false);
    }
  }
  // The agents are idle between the loops: the counter deltas are exact.
  journal_counters d{0, 0, 0, 0};
  const int64_t t0 = now_ns();
  const double cpu0 = cpu_seconds();
  for (auto& a : slots) {
    const auto c0 = journal_counters::read(n);
    run_turns(a, per_conversation, true);
    const auto c1 = journal_counters::read(n) - c0;
    d.batches += c1.batches;
    d.appends += c1.appends;
    d.events += c1.events;
    d.write_seconds += c1.write_seconds;
  }
  const int64_t t1 = now_ns();
  const double cpu = cpu_seconds() - cpu0;

  // All samples in order; the first and the last tenth of each conversation.
  std::vector<int64_t> all, first, last;
  for (auto& a : slots) {
    const auto& s = a.samples;
    if (s.size() != per_conversation)
      die(prefix + ": measured " + std::to_string(s.size()) + " turns, not " +
          std::to_string(per_conversation));
    const auto tenth = static_cast<std::ptrdiff_t>(std::max<std::size_t>(1, s.size() / 10));
    all.insert(all.end(), s.begin(), s.end());
    first.insert(first.end(), s.begin(), s.begin() + tenth);
    last.insert(last.end(), s.end() - tenth, s.end());
  }
  const uint64_t turns = all.size();
  const latency turn_l = summarize(all);
  const latency first_l = summarize(first);
  const latency last_l = summarize(last);

  const double nt = static_cast<double>(turns);
  const double steps_per_turn = d.appends / nt;
  const double fsyncs_per_turn = d.batches / nt;
  latency step_l = turn_l;
  for (double* v :
       {&step_l.p50_us, &step_l.p99_us, &step_l.p999_us, &step_l.mean_us, &step_l.max_us})
    *v /= steps_per_turn;
  const double fsync_p50 = quantile_us(n, "journal_write_seconds", "0.5");
  const double fsync_mean = d.batches > 0 ? d.write_seconds / d.batches * 1e6 : 0;

  const std::string p = prefix + "_";
  rep.metric(p + "conversations", conversations);
  rep.metric(p + "turns", turns);
  rep.metric(p + "turns_per_s", round2(nt / (static_cast<double>(t1 - t0) / 1e9)));
  rep.latency_metrics(p + "turn", turn_l);
  rep.metric(p + "turn_mean_us", round2(turn_l.mean_us));
  rep.metric(p + "turn_first_tenth_p50_us", round2(first_l.p50_us));
  rep.metric(p + "turn_last_tenth_p50_us", round2(last_l.p50_us));
  rep.metric(p + "steps_per_turn", round2(steps_per_turn));
  rep.metric(p + "events_per_turn", round2(d.events / nt));
  rep.metric(p + "fsyncs_per_turn", round2(fsyncs_per_turn));
  rep.metric(p + "fsyncs_per_step", d.appends > 0 ? round2(d.batches / d.appends) : 0.0);
  rep.metric(p + "step_p50_us", round2(step_l.p50_us));
  rep.metric(p + "step_p99_us", round2(step_l.p99_us));
  rep.metric(p + "step_p999_us", round2(step_l.p999_us));
  rep.metric(p + "step_mean_us", round2(step_l.mean_us));
  rep.metric(p + "journal_write_p50_us", fsync_p50);
  rep.metric(p + "journal_write_p99_us", quantile_us(n, "journal_write_seconds", "0.99"));
  rep.metric(p + "journal_write_p999_us", quantile_us(n, "journal_write_seconds", "0.999"));
  rep.metric(p + "journal_write_mean_us", round2(fsync_mean));
  rep.metric(p + "journal_commit_p50_us", quantile_us(n, "journal_commit_seconds", "0.5"));
  // The fsync's share of a step, and what Keel adds on top of it.
  rep.metric(p + "step_p50_over_journal_write_p50",
             fsync_p50 > 0 ? round2(step_l.p50_us / fsync_p50) : 0.0);
  rep.metric(p + "step_p50_minus_journal_write_p50_us", round2(step_l.p50_us - fsync_p50));
  rep.metric(p + "step_mean_minus_journal_write_mean_us", round2(step_l.mean_us - fsync_mean));
  // CPU the process burnt per turn and per step (all threads): the runtime's
  // work apart from waiting for the disk or for a core.
  rep.metric(p + "cpu_us_per_turn", round2(cpu / nt * 1e6));
  rep.metric(p + "cpu_us_per_step", round2(cpu / d.appends * 1e6));
  rep.metric(p + "target_step_p50_le_1ms", step_l.p50_us <= 1000.0 ? "met" : "missed");
  rep.metric(p + "rss_bytes", rss_bytes());
  if (print_metrics)
    std::fprintf(stderr, "--- node metrics after %s\n%s", prefix.c_str(), n.metrics_text().c_str());
  std::printf(
      "%s: %llu conversation(s) x %llu turns: turn p50 %.1f us (first tenth %.1f, last tenth "
      "%.1f); %.1f steps/turn, %.2f fsyncs/turn -> step p50 %.1f us; journal write (fsync) p50 "
      "%.1f us; ratio %.2f; CPU %.1f us/step; target step p50 <= 1 ms: %s\n",
      prefix.c_str(), static_cast<unsigned long long>(conversations),
      static_cast<unsigned long long>(per_conversation), turn_l.p50_us, first_l.p50_us,
      last_l.p50_us, steps_per_turn, fsyncs_per_turn, step_l.p50_us, fsync_p50,
      fsync_p50 > 0 ? step_l.p50_us / fsync_p50 : 0.0, cpu / d.appends * 1e6,
      step_l.p50_us <= 1000.0 ? "met" : "missed");
  std::fflush(stdout);
  bn.node->stop();
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("turn_overhead",
               "Keel's overhead per durable step of the agent loop: one turn = message, model, "
               "3 x (tool call), final answer, with an in-process model and tools that answer "
               "at once; fsync on.");
  opts.add("turns", "2000", "measured turns of the single sequential agent");
  opts.add("warmup-turns", "50", "unmeasured turns before them (same conversation)");
  opts.add("short-turns", "10",
           "then the same number of turns as conversations of this many turns (0 skips)");
  opts.add("levels", "1,10,100", "numbers of agents running turns concurrently");
  opts.add("duration-s", "3", "measured time per level, seconds");
  opts.add("warmup-s", "0.5", "unmeasured time before each level's window, seconds");
  opts.add("completion", "reply",
           "how a turn's end is seen: reply (the send's replied callback with the turn's "
           "outcome) or get (a chain of node::get until last.turn shows it)");
  opts.add("threads", "0", "CAF scheduler threads (0 = one per core)");
  opts.add("effect-threads", "16", "threads for model and tool calls");
  opts.add("dir", "", "work directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the work directory");
  opts.add_switch("node-metrics", "print each phase's node metrics_text() to stderr");
  opts.parse(argc, argv);

  const uint64_t turns = opts.u64("turns");
  const uint64_t warmup_turns = opts.u64("warmup-turns");
  const uint64_t short_turns = opts.u64("short-turns");
  auto levels = opts.u64_list("levels");
  if (turns == 0) die("--turns must be positive");
  if (std::count(levels.begin(), levels.end(), 0)) die("--levels needs positive numbers");
  turn_loop::completion how = turn_loop::completion::reply;
  if (opts.str("completion") == "get")
    how = turn_loop::completion::get;
  else if (opts.str("completion") != "reply")
    die("--completion must be reply or get");
  const double duration_s = opts.f64("duration-s");
  const double warmup_s = opts.f64("warmup-s");
  const uint32_t effect_threads =
      static_cast<uint32_t>(std::max<uint64_t>(1, opts.u64("effect-threads")));

  temp_dir tmp("keel-bench-turn");
  if (opts.on("keep")) tmp.keep();
  std::string work = opts.str("dir").empty() ? tmp.path() : opts.str("dir");

  report rep("turn_overhead");
  rep.params() = opts.params();
  rep.params()["work_dir"] = work;

  config::node_config cfg;
  cfg.idle_ms = 3'600'000;  // nothing hibernates during a phase
  cfg.scheduler_threads = static_cast<uint32_t>(opts.u64("threads"));
  cfg.sync = true;
  const uint64_t rss0 = rss_bytes();

  // --- phase 1: one agent at a time, sequential ----------------------------
  // One conversation of `turns` turns, as the issue asks, then the same
  // number of turns as conversations of --short-turns each.
  cfg.data_dir = work + "/sequential";
  sequential_phase(cfg, effect_threads, how, "seq", 1, turns, warmup_turns, opts.on("node-metrics"),
                   rep);
  if (short_turns > 0) {
    cfg.data_dir = work + "/sequential-short";
    sequential_phase(cfg, effect_threads, how, "seq_short",
                     std::max<uint64_t>(1, turns / short_turns), short_turns, short_turns,
                     opts.on("node-metrics"), rep);
  }

  // --- phase 2: K agents concurrently -------------------------------------
  for (uint64_t k : levels) {
    cfg.data_dir = work + "/level-" + std::to_string(k);
    bench_node bn(cfg, effect_threads);
    actors::node& n = *bn.node;
    std::vector<agent_slot> slots(k);
    for (uint64_t i = 0; i < k; ++i)
      slots[i].name = agent_name("turn/k" + std::to_string(k) + "-", i);
    spawn_loop_agents(n, slots);

    turn_loop loop(n, slots, how, 0, turn_loop::warmup);
    bn.model->attach(&loop);
    loop.start();
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
    loop.check();
    const auto c0 = journal_counters::read(n);
    const int64_t t0 = now_ns();
    const double cpu0 = cpu_seconds();
    loop.set_phase(turn_loop::measure);
    std::this_thread::sleep_for(std::chrono::duration<double>(duration_s));
    loop.set_phase(turn_loop::draining);
    const int64_t t1 = now_ns();
    const double cpu = cpu_seconds() - cpu0;
    const auto d = journal_counters::read(n) - c0;
    const uint64_t done = loop.measured();
    loop.drain(std::chrono::seconds(120));
    bn.model->attach(nullptr);

    const double secs = static_cast<double>(t1 - t0) / 1e9;
    std::vector<int64_t> all;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (auto& a : slots) {
      all.insert(all.end(), a.samples.begin(), a.samples.end());
      lo = std::min<uint64_t>(lo, a.samples.size());
      hi = std::max<uint64_t>(hi, a.samples.size());
    }
    const latency l = summarize(all);
    const double nd = static_cast<double>(done);
    std::string p = "agents" + std::to_string(k) + "_";
    rep.metric(p + "turns_per_s", round2(nd / secs));
    // Counter deltas over the window (turns in flight at its edges make
    // these per-turn ratios approximate at high K).
    rep.metric(p + "steps_per_s", round2(d.appends / secs));
    rep.metric(p + "events_per_s", round2(d.events / secs));
    rep.metric(p + "fsyncs_per_s", round2(d.batches / secs));
    rep.metric(p + "fsyncs_per_turn", done ? round2(d.batches / nd) : 0.0);
    rep.metric(p + "steps_per_fsync", d.batches > 0 ? round2(d.appends / d.batches) : 0.0);
    rep.latency_metrics(p + "turn", l, false);
    rep.metric(p + "turns_per_agent_min", lo);
    rep.metric(p + "turns_per_agent_max", hi);
    rep.metric(p + "journal_busy_fraction", round2(d.write_seconds / secs));
    rep.metric(p + "cpu_us_per_step", d.appends > 0 ? round2(cpu / d.appends * 1e6) : 0.0);
    rep.metric(p + "cpu_cores_busy", round2(cpu / secs));
    rep.metric(p + "journal_write_p50_us", quantile_us(n, "journal_write_seconds", "0.5"));
    rep.metric(p + "rss_bytes", rss_bytes());
    if (opts.on("node-metrics"))
      std::fprintf(stderr, "--- node metrics after level %llu\n%s",
                   static_cast<unsigned long long>(k), n.metrics_text().c_str());
    std::printf(
        "level %llu: %.0f turns/s (%.0f steps/s), turn p50 %.1f us p99 %.1f us, %.2f "
        "fsyncs/turn\n",
        static_cast<unsigned long long>(k), nd / secs, d.appends / secs, l.p50_us, l.p99_us,
        done ? d.batches / nd : 0.0);
    std::fflush(stdout);
    bn.stop();
  }

  rep.metric("rss_at_start_bytes", rss0);
  rep.metric("peak_rss_bytes", peak_rss_bytes());
  rep.note(
      "turn = send -> its completion is seen (--completion: reply = the send's replied "
      "callback with the turn's outcome; get = a node::get chain sees last.turn); one turn = 4 "
      "model calls + 3 tool "
      "calls (instant, in process); step = one write set through the journal "
      "(keel_journal_appends_total), fsync = one journal batch (keel_journal_batches_total)");
  rep.note(
      "step latency = turn latency / steps per turn (seq_steps_per_turn, measured); "
      "journal_write = one journal RocksDB write incl. fsync (node summary, ~9% quantile "
      "resolution, sequential phase incl. its warm-up turns)");
  rep.note(
      "messages carry no client id (no dedupe entry); every phase runs on a fresh node and "
      "directory; seq = one growing conversation (the model request is rebuilt from all of it "
      "for every call); seq_short = conversations of short-turns turns");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
