// Replay: ledgers are recorded by driving decide_guarded() and apply() by
// hand exactly as the node does (every input of the node, the events kept
// with consecutive seqs), then replayed strictly, tampered with, and
// replayed with overrides (what-if).

#include "agent/replay.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/core.hpp"
#include "agent/counter.hpp"
#include "agent/loop.hpp"
#include "unit/agent/refund_desk.hpp"

namespace a = keel::agent;
namespace c = keel::config;
using json = nlohmann::json;

namespace {

using keel::test::pure_loop::refund_desk;
using keel::test::pure_loop::t0;

// Replies of a model that says why it stopped: model_replied keeps
// finish_reason, so a replay must bring it back.
json reply(std::string content) {
  json r = keel::test::pure_loop::reply(std::move(content));
  r["finish_reason"] = "stop";
  return r;
}
json calls(std::vector<std::pair<std::string, json>> cs) {
  json r = keel::test::pure_loop::calls(std::move(cs));
  r["finish_reason"] = "tool_calls";
  return r;
}

// Records an agent as the node does: every input through decide_guarded()
// at the node's clock, every event applied and kept under the next seq.
struct recorder {
  const a::agent_type& type;
  a::agent_state s;
  std::vector<a::recorded_event> ledger;
  int64_t now = t0;
  uint64_t arrival = 0;

  explicit recorder(const a::agent_type& t) : type(t) {}

  a::decision step(const a::input& in, int64_t elapsed_ms = 10) {
    now += elapsed_ms;
    auto d = a::decide_guarded(type, s, in, now);
    for (auto& e : d.events) {
      a::apply(type, s, e);
      ledger.push_back({s.last_seq, e});
    }
    return d;
  }
  a::decision message(json body) {
    ++arrival;
    return step(a::message_input{arrival, "m" + std::to_string(arrival), "client", body});
  }
  a::decision signal(std::string name, json payload = nullptr) {
    ++arrival;
    return step(a::signal_input{arrival, std::move(name), std::move(payload)});
  }
  a::decision result(uint64_t effect, uint32_t attempt, json r) {
    return step(a::effect_result_input{effect, attempt, true, std::move(r), {}, false});
  }
  a::decision failure(uint64_t effect, uint32_t attempt, bool retryable,
                      std::string error = "boom") {
    return step(a::effect_result_input{effect, attempt, false, nullptr, error, retryable});
  }
  // The node fires a timer a little after it is due.
  a::decision fire(const a::set_timer_effect& t) {
    now = std::max(now + 10, t.due_ms + 3);
    return step(a::timer_input{t.timer_id}, 0);
  }
  // What a restarted node feeds first.
  a::decision crash_and_recover() {
    REQUIRE(type.needs_recovery(s));
    return step(a::recover_input{}, 5000);
  }
};

// A refund desk being recorded.
struct desk {
  std::shared_ptr<c::agent_spec> spec = refund_desk();
  a::loop_type type{spec};
  recorder rec{type};

  desk() { rec.step(a::spawn_input{spec->name, nullptr}); }
};

template <class T>
T only(const a::decision& d) {
  std::vector<T> out;
  for (const auto& fx : d.effects)
    if (auto* x = std::get_if<T>(&fx)) out.push_back(*x);
  REQUIRE(out.size() == 1);
  return out[0];
}
uint64_t model_of(const a::decision& d) {
  return only<a::model_call_effect>(d).effect;
}
uint64_t tool_of(const a::decision& d) {
  return only<a::tool_call_effect>(d).effect;
}

// The seq of the nth (0-based) event of type `t`.
uint64_t seq_of(const std::vector<a::recorded_event>& ledger, a::event_type t, int nth = 0) {
  for (const auto& e : ledger)
    if (e.ev.type == t && nth-- == 0) return e.seq;
  FAIL("no such event");
  return 0;
}
a::event& at(std::vector<a::recorded_event>& ledger, uint64_t seq) {
  return ledger.at(seq - ledger.front().seq).ev;
}

void check_identical(const a::agent_type& t, const recorder& rec) {
  auto r = a::replay_strict(t, {}, rec.ledger);
  if (r.diverged) MESSAGE("diverged at seq ", r.diverged->seq, ": ", r.diverged->reason);
  CHECK(r.identical);
  CHECK(r.events == rec.ledger.size());
  CHECK(r.state == rec.s);
}

std::vector<std::string> kinds(const std::vector<a::trace_step>& trace) {
  std::vector<std::string> out;
  for (const auto& s : trace) out.push_back(s.kind);
  return out;
}
const a::trace_step* step_of(const std::vector<a::trace_step>& trace, const std::string& kind) {
  for (const auto& s : trace)
    if (s.kind == kind) return &s;
  return nullptr;
}
bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}
const a::event* find_event(const std::vector<a::recorded_event>& es, a::event_type t,
                           uint64_t from_seq = 0) {
  for (const auto& e : es)
    if (e.ev.type == t && e.seq >= from_seq) return &e.ev;
  return nullptr;
}

// An agent type with a bug: it throws on the message "boom".
class fragile_type final : public a::agent_type {
 public:
  std::string_view name() const override { return "fragile"; }
  keel::result<json> initial_data(const json&) const override { return json::object(); }
  void on_message(const a::agent_state&, const a::message_input& m, int64_t now,
                  a::decision& out) const override {
    if (m.body == "boom") throw std::runtime_error("cannot digest boom");
    out.events.push_back({a::event_type::state_changed, now, {{"seen", m.body}}});
  }
  void on_signal(const a::agent_state&, const a::signal_input&, int64_t,
                 a::decision&) const override {}
  void on_timer(const a::agent_state&, const a::pending_timer&, int64_t,
                a::decision&) const override {}
  void apply(a::agent_state& s, const a::event& e) const override {
    if (e.type == a::event_type::state_changed) s.data["seen"] = e.data["seen"];
  }
  keel::result<json> query(const a::agent_state& s, const json&) const override { return s.data; }
};

// --- ledgers the cases start from -----------------------------------------------

// One turn: looks order 9 up and answers "It shipped.".
struct shipped_lookup : desk {
  shipped_lookup() {
    auto m = model_of(rec.message("order 9?"));
    auto l = tool_of(rec.result(m, 1, calls({{"lookup", {{"order", 9}}}})));
    m = model_of(rec.result(l, 1, {{"status", "shipped"}}));
    rec.result(m, 1, reply("It shipped."));
  }
};

// Turn 1 refunds 20 on order 9.
struct refunded_20 : desk {
  refunded_20() {
    auto m = model_of(rec.message("refund order 9, 20 euros"));
    auto r = tool_of(rec.result(m, 1, calls({{"refund", {{"order", 9}, {"amount", 20}}}})));
    m = model_of(rec.result(r, 1, {{"refunded", 20}}));
    rec.result(m, 1, reply("Refunded 20."));
  }
};

// After turn 1, turn 2 is small talk.
struct small_refund : refunded_20 {
  small_refund() {
    auto m = model_of(rec.message("thanks"));
    rec.result(m, 1, reply("You're welcome."));
  }
};

// After turn 1, turn 2 refunds 150 on order 7 once a human approves it.
struct approved_refund : refunded_20 {
  approved_refund() {
    auto m = model_of(rec.message("refund order 7, 150 euros"));
    rec.result(m, 1, calls({{"refund", {{"order", 7}, {"amount", 150}}}}));
    auto r = tool_of(rec.signal("approve", {{"by", "maria"}}));
    m = model_of(rec.result(r, 1, {{"refunded", 150}}));
    rec.result(m, 1, reply("Refunded 150."));
  }
};

// A lookup that fails once and is retried on a durable timer, then a
// refund over the threshold that a human approves.
struct eventful : desk {
  eventful() {
    auto m = model_of(rec.message("refund order 9, 150 euros"));
    auto dec = rec.result(m, 1, calls({{"lookup", {{"order", 9}}}}));
    auto l = tool_of(dec);
    auto retry = only<a::set_timer_effect>(rec.failure(l, 1, true, "timeout"));
    REQUIRE(tool_of(rec.fire(retry)) == l);
    m = model_of(rec.result(l, 2, {{"paid", 150}}));
    rec.result(m, 1, calls({{"refund", {{"order", 9}, {"amount", 150}}}}));
    auto r = tool_of(rec.signal("approve", {{"by", "maria"}}));
    m = model_of(rec.result(r, 1, {{"refunded", 150}}));
    rec.result(m, 1, reply("Refunded 150 on order 9."));
    rec.signal("pause", {{"by", "ops"}});
    rec.signal("resume", {{"by", "ops"}});
    m = model_of(rec.message("and order 10?"));
    rec.result(m, 1, reply("Order 10 was never paid."));
  }
};

}  // namespace

// --- strict replay ----------------------------------------------------------------

TEST_CASE("replay of a counter's ledger decides exactly what was recorded") {
  a::counter_type counter;
  recorder rec{counter};
  rec.step(a::spawn_input{"counter", {{"total", 1}}});
  rec.message({{"add", 2}});
  auto timer = only<a::set_timer_effect>(rec.message({{"add", 3}, {"delay_ms", 500}}));
  rec.message({{"get", true}});
  rec.message({{"nope", 1}});
  rec.signal("reset");
  rec.fire(timer);
  rec.signal("wave");
  rec.step(a::terminate_input{"ops"});
  rec.message({{"add", 1}});  // refused: the agent is terminated
  REQUIRE(rec.ledger.size() == 16);

  auto r = a::replay_strict(counter, {}, rec.ledger);
  CHECK(r.identical);
  CHECK_FALSE(r.diverged);
  CHECK(r.events == 16);
  CHECK(r.decisions == 10);
  CHECK(r.state == rec.s);
  CHECK(r.state.data["total"] == 3);
}

TEST_CASE("an empty ledger replays as identical to its base") {
  a::counter_type counter;
  a::agent_state base;
  base.type = "counter";
  base.last_seq = 40;
  auto r = a::replay_strict(counter, base, {});
  CHECK(r.identical);
  CHECK(r.events == 0);
  CHECK(r.decisions == 0);
  CHECK(r.state == base);
}

TEST_CASE("replay of an agent loop turn with a tool call and an answer is identical") {
  shipped_lookup d;
  REQUIRE(d.rec.s.loop->last->answer.value() == "It shipped.");
  check_identical(d.type, d.rec);

  SUBCASE("also from a snapshot taken between two decisions") {
    const std::size_t k = seq_of(d.rec.ledger, a::event_type::effect_completed) - 1;
    a::agent_state snap;
    for (std::size_t i = 0; i < k; ++i) a::apply(d.type, snap, d.rec.ledger[i].ev);
    std::vector<a::recorded_event> rest(d.rec.ledger.begin() + static_cast<std::ptrdiff_t>(k),
                                        d.rec.ledger.end());
    auto r = a::replay_strict(d.type, snap, rest);
    CHECK(r.identical);
    CHECK(r.events == rest.size());
    CHECK(r.state == d.rec.s);
  }
}

TEST_CASE("replay of an approval flow is identical whether the human approves or rejects") {
  desk d;
  auto m = model_of(d.rec.message("refund order 9"));
  d.rec.result(m, 1, calls({{"refund", {{"order", 9}, {"amount", 120}}}}));
  REQUIRE(d.type.phase(d.rec.s) == "waiting_approval");
  SUBCASE("approve") {
    auto r = tool_of(d.rec.signal("approve", {{"by", "maria"}}));
    m = model_of(d.rec.result(r, 1, {{"refunded", 120}}));
    d.rec.result(m, 1, reply("Done."));
  }
  SUBCASE("reject") {
    m = model_of(d.rec.signal("reject", {{"by", "maria"}, {"reason", "not eligible"}}));
    d.rec.signal("approve");  // nothing awaits approval: recorded, refused
    d.rec.result(m, 1, reply("Sorry, no refund."));
  }
  check_identical(d.type, d.rec);
}

TEST_CASE("replay of retries on durable timers is identical, for tools and for the model") {
  desk d;
  auto m = model_of(d.rec.message("order 1?"));
  auto retry = only<a::set_timer_effect>(d.rec.failure(m, 1, true, "503"));
  REQUIRE(model_of(d.rec.fire(retry)) == m);
  auto l = tool_of(d.rec.result(m, 2, calls({{"lookup", {{"order", 1}}}})));
  retry = only<a::set_timer_effect>(d.rec.failure(l, 1, true, "timeout"));
  d.rec.result(l, 1, {{"late", true}});  // stale: decides nothing, leaves no trace
  REQUIRE(tool_of(d.rec.fire(retry)) == l);
  m = model_of(d.rec.result(l, 2, {{"ok", true}}));
  d.rec.result(m, 1, reply("Found it."));
  REQUIRE(find_event(d.rec.ledger, a::event_type::timer_fired));
  check_identical(d.type, d.rec);
}

TEST_CASE("replay of compensations after a cancel and after a failure is identical") {
  desk d;
  auto m = model_of(d.rec.message("book seat 7"));
  auto res = tool_of(
      d.rec.result(m, 1, calls({{"reserve", {{"seat", 7}}}, {"refund", {{"amount", 500}}}})));
  d.rec.result(res, 1, {{"held", 7}});
  REQUIRE(d.type.phase(d.rec.s) == "waiting_approval");
  auto rel = tool_of(d.rec.signal("cancel", {{"by", "ops"}}));
  // Not retried: a turn being cancelled starts nothing new.
  d.rec.failure(rel, 1, true, "busy");
  REQUIRE(d.rec.s.loop->last->status == "cancelled");

  // A second turn fails for good and undoes its reservation.
  m = model_of(d.rec.message("book seat 8"));
  res =
      tool_of(d.rec.result(m, 1, calls({{"reserve", {{"seat", 8}}}, {"refund", {{"amount", 5}}}})));
  auto rf = tool_of(d.rec.result(res, 1, {{"held", 8}}));
  rel = tool_of(d.rec.failure(rf, 1, false, "card declined"));
  d.rec.result(rel, 1, {{"released", 8}});
  REQUIRE(d.rec.s.loop->last->status == "failed");
  check_identical(d.type, d.rec);
}

TEST_CASE("replay of a crash recovery is identical") {
  desk d;
  auto m = model_of(d.rec.message("x"));
  SUBCASE("a model call is asked again") {
    REQUIRE(model_of(d.rec.crash_and_recover()) == m);
    d.rec.result(m, 2, reply("ok"));
  }
  SUBCASE("an idempotent tool runs again") {
    auto l = tool_of(d.rec.result(m, 1, calls({{"lookup", {{"order", 1}}}})));
    REQUIRE(tool_of(d.rec.crash_and_recover()) == l);
    m = model_of(d.rec.result(l, 2, {{"ok", 1}}));
    d.rec.result(m, 1, reply("ok"));
  }
  SUBCASE("a refund is in doubt until a human resolves it") {
    auto r = tool_of(d.rec.result(m, 1, calls({{"refund", {{"amount", 5}}}})));
    d.rec.crash_and_recover();
    REQUIRE(d.type.phase(d.rec.s) == "in_doubt");
    SUBCASE("as succeeded") {
      m = model_of(d.rec.signal(
          "resolve", {{"outcome", "succeeded"}, {"result", {{"refunded", 5}}}, {"by", "ops"}}));
      d.rec.result(m, 1, reply("ok"));
    }
    SUBCASE("as retry, and the retry crashes too") {
      REQUIRE(tool_of(d.rec.signal("resolve", {{"outcome", "retry"}})) == r);
      d.rec.crash_and_recover();
      d.rec.signal("resolve", {{"outcome", "failed"}, {"by", "ops"}});
      REQUIRE(d.rec.s.loop->last->status == "failed");
    }
  }
  check_identical(d.type, d.rec);
}

TEST_CASE("replay of a call put in doubt by a failure that may have applied it is identical") {
  desk d;
  auto m = model_of(d.rec.message("x"));
  auto r = tool_of(d.rec.result(m, 1, calls({{"refund", {{"amount", 5}}}})));
  d.rec.step(a::effect_result_input{r, 1, false, nullptr, "reset after sending", true, true});
  REQUIRE(d.type.phase(d.rec.s) == "in_doubt");
  SUBCASE("then crash: still in doubt, nothing to recover") {
    CHECK_FALSE(d.type.needs_recovery(d.rec.s));
  }
  m = model_of(d.rec.signal(
      "resolve", {{"outcome", "succeeded"}, {"result", {{"refunded", 5}}}, {"by", "ops"}}));
  d.rec.result(m, 1, reply("ok"));
  check_identical(d.type, d.rec);
}

TEST_CASE("replay of operator signals (pause, resume, forked) is identical") {
  desk d;
  auto m = model_of(d.rec.message("x"));
  d.rec.signal("pause", {{"by", "ops"}});
  d.rec.signal("pause", {{"by", "ops"}});  // already paused: only the signal is recorded
  d.rec.signal("resume", {{"by", "ops"}});
  d.rec.signal("forked", {{"as", "x-fork"}, {"at", 3}, {"by", "ops"}});
  d.rec.result(m, 1, reply("ok"));
  REQUIRE(find_event(d.rec.ledger, a::event_type::paused));
  REQUIRE(d.rec.s.forks.size() == 1);
  check_identical(d.type, d.rec);
}

TEST_CASE("replay of a malformed model reply is identical") {
  desk d;
  auto m = model_of(d.rec.message("x"));
  d.rec.result(m, 1, json("not an object"));
  REQUIRE(d.rec.s.loop->last->status == "failed");
  m = model_of(d.rec.message("y"));
  d.rec.result(m, 1, {{"content", "hm"}, {"tool_calls", "not a list"}});
  check_identical(d.type, d.rec);
}

TEST_CASE("replay takes a recorded failure of a type as it was recorded") {
  fragile_type fragile;
  recorder rec{fragile};
  rec.step(a::spawn_input{"fragile", nullptr});
  rec.message("hi");
  rec.message("boom");
  REQUIRE(rec.s.status == keel::agent_status::failed);
  rec.message("after");  // refused: the agent failed
  auto r = a::replay_strict(fragile, {}, rec.ledger);
  CHECK(r.identical);
  CHECK(r.decisions == 4);
  CHECK(r.state == rec.s);
}

TEST_CASE("a tampered ledger diverges at the first event replay cannot reproduce") {
  desk d;
  auto m = model_of(d.rec.message("book seat 7"));
  auto res = tool_of(
      d.rec.result(m, 1, calls({{"reserve", {{"seat", 7}}}, {"refund", {{"amount", 500}}}})));
  d.rec.result(res, 1, {{"held", 7}});
  auto rel = tool_of(d.rec.signal("cancel", {{"by", "ops"}}));
  d.rec.result(rel, 1, {{"released", 7}});
  REQUIRE(a::replay_strict(d.type, {}, d.rec.ledger).identical);
  auto ledger = d.rec.ledger;
  const uint64_t started = seq_of(ledger, a::event_type::effect_started);

  SUBCASE("a tool argument changed where the tool started") {
    at(ledger, started).data["arguments"]["seat"] = 8;
    auto r = a::replay_strict(d.type, {}, ledger);
    CHECK_FALSE(r.identical);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == started);
    CHECK(r.diverged->reason ==
          "effect_started differs in \"arguments\": the ledger has "
          "{\"seat\":8}, replay decided {\"seat\":7}");
    CHECK(r.diverged->recorded["seq"] == started);
    CHECK(r.diverged->recorded["type"] == "effect_started");
    CHECK(r.diverged->recorded["data"]["arguments"]["seat"] == 8);
    CHECK(r.diverged->replayed["data"]["arguments"]["seat"] == 7);
    CHECK(r.events == started - 1);
    CHECK(r.state.last_seq == started - 1);
  }
  SUBCASE("a tool argument changed in the model's proposal") {
    const uint64_t replied = seq_of(ledger, a::event_type::model_replied);
    at(ledger, replied).data["tool_calls"][0]["arguments"]["seat"] = 9;
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    // The proposal is the input; what it led to no longer matches.
    CHECK(r.diverged->seq == started);
    CHECK(has(r.diverged->reason, "\"arguments\""));
  }
  SUBCASE("a tool result changed that a compensation later reads") {
    const uint64_t done = seq_of(ledger, a::event_type::effect_completed);
    at(ledger, done).data["result"] = {{"held", 70}};
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == seq_of(ledger, a::event_type::compensation_started));
    CHECK(has(r.diverged->reason, "compensation_started differs in \"arguments\""));
  }
  SUBCASE("an event's time") {
    at(ledger, started).time_ms += 1;
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == started);
    CHECK(has(r.diverged->reason, "effect_started differs in its time"));
  }
  SUBCASE("an event's type") {
    at(ledger, started).type = a::event_type::effect_in_doubt;
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == started);
    CHECK(r.diverged->reason == "decided effect_started where the ledger has effect_in_doubt");
    CHECK(r.diverged->replayed["type"] == "effect_started");
  }
  SUBCASE("a missing event") {
    ledger.erase(ledger.begin() + static_cast<std::ptrdiff_t>(started - 1));
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == started);
    CHECK(r.diverged->reason == "seq " + std::to_string(started) +
                                    " is missing: the ledger goes on at seq " +
                                    std::to_string(started + 1));
    CHECK(r.diverged->replayed.is_null());
  }
  SUBCASE("a ledger cut in the middle of a decision") {
    ledger.pop_back();
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == ledger.back().seq + 1);
    CHECK(r.diverged->recorded.is_null());
    CHECK(r.diverged->replayed["type"] == "turn_completed");
    CHECK(has(r.diverged->reason, "past the end of the ledger"));
  }
  SUBCASE("an event no input explains") {
    ledger.push_back({ledger.back().seq + 1, at(ledger, started)});
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(r.diverged->seq == ledger.back().seq);
    CHECK(has(r.diverged->reason, "effect_started, which cannot begin a decision"));
    CHECK(r.events == ledger.size() - 1);
  }
  SUBCASE("a timer that was never set") {
    ledger.push_back(
        {ledger.back().seq + 1, {a::event_type::timer_fired, d.rec.now, {{"timer", 99}}}});
    auto r = a::replay_strict(d.type, {}, ledger);
    REQUIRE(r.diverged);
    CHECK(has(r.diverged->reason, "timer_fired decided no event"));
  }
}

TEST_CASE("an outcome that begins a decision is the input itself, so strict replay trusts it") {
  // Nothing later repeats a lookup's result, so a changed one replays: a
  // limit of replay, which re-runs the decisions and not the tools.
  shipped_lookup d;
  auto ledger = d.rec.ledger;
  at(ledger, seq_of(ledger, a::event_type::effect_completed)).data["result"] = "lost";
  CHECK(a::replay_strict(d.type, {}, ledger).identical);
}

// --- what-if ------------------------------------------------------------------------

TEST_CASE("what-if: a model that proposes destructive SQL is denied by the guardrail") {
  small_refund d;
  const uint64_t replied = seq_of(d.rec.ledger, a::event_type::model_replied);
  a::what_if_options o;
  o.overrides[replied] = {
      {"tool_calls", {{{"name", "sql"}, {"arguments", {{"query", "DROP TABLE orders"}}}}}}};
  auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
  REQUIRE(r);
  CHECK(r->prefix.identical);
  CHECK(r->prefix.events == replied - 1);
  // The prefix is the original; the rest continues its seqs.
  for (std::size_t i = 0; i < r->events.size(); ++i) CHECK(r->events[i].seq == i + 1);
  for (uint64_t s = 1; s < replied; ++s) CHECK(r->events[s - 1].ev == d.rec.ledger[s - 1].ev);
  const auto* g = step_of(r->replayed, "guardrail");
  REQUIRE(g);
  CHECK(g->text == "deny sql: destructive SQL is not allowed (rule no-drop)");
  CHECK(g->detail["verdict"] == "deny");
  CHECK(step_of(r->original, "guardrail") == nullptr);  // allowed calls are not shown
  // The model is asked again with the refusal in its conversation: a
  // request the original never made.
  CHECK(r->stopped == "model call 2 at seq " + std::to_string(replied + 2) +
                          " has no answer: no recorded call made this request (policy recorded)");
  CHECK(r->replayed.back().kind == "stopped");
  CHECK(r->answered_recorded == 0);
}

TEST_CASE("what-if: a refund over the limit waits for approval and gets the recorded one") {
  approved_refund d;
  const uint64_t replied = seq_of(d.rec.ledger, a::event_type::model_replied);
  a::what_if_options o;
  o.overrides[replied] = {
      {"tool_calls", {{{"name", "refund"}, {"arguments", {{"order", 7}, {"amount", 150}}}}}}};
  auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
  REQUIRE(r);
  const auto* approval = step_of(r->replayed, "approval");
  REQUIRE(approval);
  CHECK(has(approval->text, "refund({\"amount\":150,\"order\":7}) needs approval"));
  CHECK(has(approval->text, "(rule big-refund)"));
  // Nothing runs while it waits: the recorded message and the approval
  // are fed in their order, and the refund's recorded result answers it.
  const auto* approved = find_event(r->events, a::event_type::guardrail_decided, replied + 2);
  REQUIRE(approved);
  CHECK(approved->data["verdict"] == "approved");
  CHECK(approved->data["by"] == "maria");
  const auto* done = find_event(r->events, a::event_type::effect_completed, replied);
  REQUIRE(done);
  CHECK(done->data["result"] == json{{"refunded", 150}});
  CHECK(r->answered_recorded == 1);
  CHECK(has(r->stopped, "model call 2"));
  CHECK(kinds(r->replayed) == std::vector<std::string>{"message", "model", "approval", "message",
                                                       "signal", "guardrail", "tool", "stopped"});
}

TEST_CASE("what-if: a tool that fails instead fails the turn and compensates") {
  desk d;
  auto m = model_of(d.rec.message("book seat 1, refund 5"));
  auto res =
      tool_of(d.rec.result(m, 1, calls({{"reserve", {{"seat", 1}}}, {"refund", {{"amount", 5}}}})));
  auto rf = tool_of(d.rec.result(res, 1, {{"held", 1}}));
  m = model_of(d.rec.result(rf, 1, {{"refunded", 5}}));
  d.rec.result(m, 1, reply("Booked and refunded."));
  const uint64_t refunded = seq_of(d.rec.ledger, a::event_type::effect_completed, 1);

  a::what_if_options o;
  o.overrides[refunded] = {{"error", "card declined"}};
  SUBCASE("a scripted compensation lets the turn end") {
    o.policy = a::mock_policy::scripted;
    o.script = {{"tools", {{"release", {{{"result", {{"released", 1}}}}}}}}};
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE(r);
    CHECK(r->stopped == "");
    CHECK(r->answered_scripted == 1);
    CHECK(r->answered_recorded == 0);
    const auto* failed = step_of(r->replayed, "tool_failed");
    REQUIRE(failed);
    CHECK(failed->text == "refund({\"amount\":5}) failed: card declined");
    const auto* comp = step_of(r->replayed, "compensation");
    REQUIRE(comp);
    CHECK(has(comp->text, "release("));
    CHECK(has(comp->text, "-> {\"released\":1}"));
    const auto* end = step_of(r->replayed, "turn_failed");
    REQUIRE(end);
    CHECK(end->text == "failed: tool refund failed: card declined");
    CHECK(step_of(r->replayed, "answer") == nullptr);
    CHECK(step_of(r->original, "answer")->text == "Booked and refunded.");
  }
  SUBCASE("without a script the compensation has no answer") {
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE(r);
    CHECK(has(r->stopped, "tool call release({"));
    CHECK(has(r->stopped, "no recorded call had these arguments (policy recorded)"));
  }
}

TEST_CASE("what-if: policy stop ends at the first call no override answers") {
  small_refund d;
  const uint64_t done = seq_of(d.rec.ledger, a::event_type::effect_completed);
  a::what_if_options o;
  o.policy = a::mock_policy::stop;
  o.overrides[done] = {{"result", {{"refunded", 0}}}};
  auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
  REQUIRE(r);
  const uint64_t asked = seq_of(r->events, a::event_type::model_requested, 1);
  CHECK(r->stopped ==
        "model call 2 at seq " + std::to_string(asked) + " has no answer (policy stop)");
  CHECK(r->events.back().seq == asked);
  CHECK(r->answered_recorded == 0);
  CHECK(find_event(r->events, a::event_type::effect_completed)->data["result"]["refunded"] == 0);

  SUBCASE("a later override answers a call the run makes again") {
    // The same reply as recorded at seq `done`: the model is asked the
    // same, and the override of its answer is taken.
    a::what_if_options same;
    same.policy = a::mock_policy::stop;
    same.overrides[done] = {{"result", {{"refunded", 20}}}};
    same.overrides[seq_of(d.rec.ledger, a::event_type::model_replied, 1)] = {
        {"content", "Refunded, as asked."}};
    auto r2 = a::replay_what_if(d.type, {}, d.rec.ledger, same);
    REQUIRE(r2);
    CHECK(step_of(r2->replayed, "answer")->text == "Refunded, as asked.");
    CHECK(has(r2->stopped, "model call 3"));
    CHECK(r2->answered_recorded == 0);
  }
}

TEST_CASE("what-if: a script answers what the record cannot") {
  small_refund d;
  const uint64_t replied = seq_of(d.rec.ledger, a::event_type::model_replied);
  a::what_if_options o;
  o.policy = a::mock_policy::scripted;
  o.overrides[replied] = {
      {"tool_calls", {{{"name", "sql"}, {"arguments", {{"query", "DROP TABLE orders"}}}}}}};
  o.script = {{"model", {{{"content", "I cannot do that."}}}}};
  SUBCASE("until it runs out") {
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE(r);
    CHECK(r->answered_scripted == 1);
    CHECK(step_of(r->replayed, "answer")->text == "I cannot do that.");
    // The recorded "thanks" is fed once the turn is over; its model call
    // finds no more script.
    CHECK(has(r->stopped, "model call 3"));
    CHECK(has(r->stopped, "the script has no more model replies (policy scripted)"));
  }
  SUBCASE("to the end") {
    o.script["model"].push_back({{"content", "Bye."}});
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE(r);
    CHECK(r->stopped == "");
    CHECK(r->answered_scripted == 2);
    CHECK(kinds(r->replayed) == std::vector<std::string>{"message", "model", "guardrail", "model",
                                                         "answer", "message", "model", "answer"});
    const auto* tc = find_event(r->events, a::event_type::model_replied);
    CHECK(tc->data["tool_calls"][0]["id"] == "call_" + std::to_string(replied - 1) + "_0");
  }
}

TEST_CASE("what-if: overrides that answer no effect are refused") {
  small_refund d;
  auto run = [&](uint64_t seq, json rep, json script = json::object()) {
    a::what_if_options o;
    o.overrides[seq] = std::move(rep);
    o.script = std::move(script);
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == keel::code::invalid_argument);
    return r.error().message();
  };
  const uint64_t replied = seq_of(d.rec.ledger, a::event_type::model_replied);
  const uint64_t done = seq_of(d.rec.ledger, a::event_type::effect_completed);
  CHECK(has(run(0, reply("x")), "the ledger has no such seq (it holds seqs 1 to "));
  CHECK(has(run(d.rec.ledger.size() + 1, reply("x")), "no such seq"));
  CHECK(has(run(seq_of(d.rec.ledger, a::event_type::turn_started), reply("x")),
            "holds turn_started, not the outcome of a model or tool call"));
  CHECK(has(run(replied, {{"tool_calls", "refund"}}), "\"tool_calls\" must be an array"));
  CHECK(has(run(replied, {{"contents", "typo"}}), "unknown field \"contents\""));
  CHECK(has(run(replied, {{"tool_calls", {{{"arguments", {}}}}}}), "needs a \"name\""));
  CHECK(has(run(done, {{"value", 1}}), "a tool's answer is {\"result\": ...}"));
  CHECK(has(run(done, {{"error", 5}}), "\"error\" must be a string"));
  CHECK(has(run(replied, reply("x"), {{"model", "x"}}), "script: \"model\" must be an array"));
  CHECK(has(run(replied, reply("x"), {{"tools", {{"release", {{{"nope", 1}}}}}}}),
            "script: release answer 0"));
  CHECK(has(run(replied, reply("x"), {{"modle", json::array()}}), "unknown field \"modle\""));

  a::what_if_options none;
  auto r = a::replay_what_if(d.type, {}, d.rec.ledger, none);
  REQUIRE_FALSE(r);
  CHECK(has(r.error().message(), "at least one override"));

  SUBCASE("an outcome in the middle of a decision") {
    desk s;
    auto m = model_of(s.rec.message("wait a bit"));
    auto timer = only<a::set_timer_effect>(s.rec.result(m, 1, calls({{"nap", {{"ms", 1000}}}})));
    s.rec.fire(timer);  // timer_fired, then the nap's effect_completed
    a::what_if_options o;
    o.overrides[seq_of(s.rec.ledger, a::event_type::effect_completed)] = {{"result", 1}};
    auto bad = a::replay_what_if(s.type, {}, s.rec.ledger, o);
    REQUIRE_FALSE(bad);
    CHECK(has(bad.error().message(), "does not begin a decision"));
  }
  SUBCASE("a type without effects has no outcome to replace") {
    a::counter_type counter;
    recorder rec{counter};
    rec.step(a::spawn_input{"counter", nullptr});
    rec.message({{"add", 1}});
    a::what_if_options o;
    o.overrides[2] = {{"result", 1}};
    auto bad = a::replay_what_if(counter, {}, rec.ledger, o);
    REQUIRE_FALSE(bad);
    CHECK(has(bad.error().message(), "holds message_received"));
  }
}

TEST_CASE("what-if: overriding an answer with the one recorded reproduces the ledger") {
  SUBCASE("a refund and small talk") {
    small_refund d;
    const uint64_t replied = seq_of(d.rec.ledger, a::event_type::model_replied);
    a::what_if_options o;
    o.overrides[replied] = d.rec.ledger[replied - 1].ev.data;
    o.overrides[replied].erase("effect");
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE(r);
    CHECK(r->stopped == "");
    CHECK(r->events.size() == d.rec.ledger.size());
    for (std::size_t i = 0; i < std::min(r->events.size(), d.rec.ledger.size()); ++i) {
      CHECK(r->events[i].seq == d.rec.ledger[i].seq);
      CHECK(r->events[i].ev == d.rec.ledger[i].ev);
    }
    CHECK(r->answered_recorded == 3);  // the refund and two model calls
    CHECK(kinds(r->replayed) == kinds(r->original));
  }
  SUBCASE("retries, an approval and a pause, overriding a failed attempt") {
    eventful d;
    const uint64_t failed = seq_of(d.rec.ledger, a::event_type::effect_failed);
    a::what_if_options o;
    o.overrides[failed] = {{"error", "timeout"}, {"retryable", true}};
    auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
    REQUIRE(r);
    CHECK(r->stopped == "");
    REQUIRE(r->events.size() == d.rec.ledger.size());
    for (std::size_t i = 0; i < r->events.size(); ++i) {
      CHECK(r->events[i].seq == d.rec.ledger[i].seq);
      CHECK(r->events[i].ev == d.rec.ledger[i].ev);
    }
    CHECK(r->answered_recorded == 5);  // lookup (2nd attempt), refund, three model calls
  }
}

TEST_CASE("what-if: a run from a snapshot continues the snapshot's seqs") {
  small_refund d;
  const std::size_t k = seq_of(d.rec.ledger, a::event_type::effect_completed) - 1;
  a::agent_state snap;
  for (std::size_t i = 0; i < k; ++i) a::apply(d.type, snap, d.rec.ledger[i].ev);
  std::vector<a::recorded_event> rest(d.rec.ledger.begin() + static_cast<std::ptrdiff_t>(k),
                                      d.rec.ledger.end());
  const uint64_t replied = seq_of(rest, a::event_type::model_replied);
  a::what_if_options o;
  o.overrides[replied] = reply("Refunded 20.");
  auto r = a::replay_what_if(d.type, snap, rest, o);
  REQUIRE(r);
  CHECK(r->stopped == "");
  REQUIRE(r->events.size() == rest.size());
  CHECK(r->events.front().seq == k + 1);
  for (std::size_t i = 0; i < rest.size(); ++i) CHECK(r->events[i].ev == rest[i].ev);
  CHECK(r->answered_recorded == 1);
}

TEST_CASE("what-if: a ledger that does not replay stops before the override") {
  small_refund d;
  auto ledger = d.rec.ledger;
  const uint64_t started = seq_of(ledger, a::event_type::effect_started);
  at(ledger, started).data["arguments"]["amount"] = 2000;
  a::what_if_options o;
  o.overrides[seq_of(ledger, a::event_type::model_replied, 1)] = reply("nothing");
  auto r = a::replay_what_if(d.type, {}, ledger, o);
  REQUIRE(r);
  REQUIRE(r->prefix.diverged);
  CHECK(r->prefix.diverged->seq == started);
  CHECK(has(r->stopped, "diverges at seq " + std::to_string(started)));
  CHECK(r->events.size() == started - 1);
}

TEST_CASE("what-if: a run that never settles is bounded by max_decisions") {
  small_refund d;
  a::what_if_options o;
  o.overrides[seq_of(d.rec.ledger, a::event_type::model_replied)] = {
      {"tool_calls", {{{"name", "sql"}, {"arguments", {{"query", "drop it"}}}}}}};
  o.policy = a::mock_policy::scripted;
  // A model that keeps proposing the denied call until max_steps_per_turn.
  o.script = {{"model", json::array()}};
  for (int i = 0; i < 20; ++i) o.script["model"].push_back(o.overrides.begin()->second);
  o.max_decisions = 3;
  auto r = a::replay_what_if(d.type, {}, d.rec.ledger, o);
  REQUIRE(r);
  CHECK(r->stopped == "the run did not settle within 3 decisions (max_decisions)");
  CHECK(r->answered_scripted == 2);
}

TEST_CASE("override_input answers the effect the state waits for") {
  desk d;
  auto m = model_of(d.rec.message("x"));
  const a::event replied{a::event_type::model_replied, d.rec.now, {{"effect", m}}};
  auto in =
      a::override_input(d.type, d.rec.s, replied,
                        {{"tool_calls", {{{"name", "lookup"}, {"arguments", {{"order", 1}}}}}}});
  REQUIRE(in);
  CHECK(in->effect == m);
  CHECK(in->attempt == 1);
  CHECK(in->ok);
  CHECK(in->result == json{{"content", nullptr},
                           {"tool_calls",
                            {{{"id", "call_" + std::to_string(m) + "_0"},
                              {"name", "lookup"},
                              {"arguments", {{"order", 1}}}}}},
                           {"usage", json::object()},
                           {"finish_reason", ""}});
  auto failed =
      a::override_input(d.type, d.rec.s, replied, {{"error", "down"}, {"retryable", true}});
  REQUIRE(failed);
  CHECK_FALSE(failed->ok);
  CHECK(failed->error == "down");
  CHECK(failed->retryable);
  // Fed to the agent it decides like a provider's reply.
  auto dec = a::decide_guarded(d.type, d.rec.s, *in, d.rec.now);
  CHECK(dec.events.front().type == a::event_type::model_replied);

  const a::event wrong{a::event_type::model_replied, d.rec.now, {{"effect", m + 1}}};
  CHECK_FALSE(a::override_input(d.type, d.rec.s, wrong, reply("x")));
  const a::event no_outcome{a::event_type::turn_started, d.rec.now, json::object()};
  CHECK_FALSE(a::override_input(d.type, d.rec.s, no_outcome, reply("x")));
  const a::event tool_done{a::event_type::effect_completed, d.rec.now, {{"effect", m}}};
  CHECK(has(a::override_input(d.type, d.rec.s, tool_done, {{"result", 1}}).error().message(),
            "cannot answer the agent's wait for model"));
  d.rec.result(m, 1, reply("done"));  // idle now
  auto idle = a::override_input(d.type, d.rec.s, replied, reply("x"));
  REQUIRE_FALSE(idle);
  CHECK(idle.error().error_code() == keel::code::invalid_argument);
  CHECK(has(idle.error().message(), "waits for no model or tool call"));
}

TEST_CASE("a trace tells the tool-call chain in short lines") {
  eventful d;
  auto trace = a::trace_of(d.rec.ledger);
  CHECK(kinds(trace) == std::vector<std::string>{"message", "model", "tool", "model", "approval",
                                                 "signal", "guardrail", "tool", "model", "answer",
                                                 "signal", "paused", "signal", "resumed", "message",
                                                 "model", "answer"});
  CHECK(trace[0].text == "refund order 9, 150 euros");
  CHECK(trace[1].text == "proposes lookup({\"order\":9})");
  CHECK(trace[2].text == "lookup({\"order\":9}) -> {\"paid\":150}");
  CHECK(trace[5].text == "approve {\"by\":\"maria\"}");
  CHECK(trace[6].text == "approved refund by maria");
  CHECK(trace[8].text == "says \"Refunded 150 on order 9.\"");
  CHECK(trace[9].text == "Refunded 150 on order 9.");
  CHECK(trace[11].text == "paused by ops");
  CHECK(trace[9].detail["status"] == "completed");

  SUBCASE("long texts are cut on a character boundary") {
    std::string big = "a";  // the cut falls inside a two-byte character
    for (int i = 0; i < 300; ++i) big += "é";
    std::vector<a::recorded_event> one = {
        {1, {a::event_type::message_received, t0, {{"arrival", 1}, {"body", big}}}}};
    auto t = a::trace_of(one);
    REQUIRE(t.size() == 1);
    CHECK(t[0].text.size() <= 163);
    CHECK(t[0].text.ends_with("..."));
    CHECK_NOTHROW((void)json(t[0].text).dump());
  }
}

TEST_CASE("mock policies are named") {
  for (auto p : {a::mock_policy::recorded, a::mock_policy::scripted, a::mock_policy::stop})
    CHECK(a::mock_policy_from_string(a::to_string(p)) == p);
  CHECK(a::to_string(a::mock_policy::stop) == "stop");
  CHECK_FALSE(a::mock_policy_from_string("live"));
}
