// The agent loop's typed control state against the snapshot layout it
// replaces: the refund desk is driven through every kind of step (idle,
// thinking, waiting for approval, on a timer, in doubt, compensating,
// stopped by a budget, failed, terminated, with queued messages and usage
// counters), and every state it passes through must
//   - encode to the bytes recorded in loop_states.golden (written by the
//     loop as it was when the control state was JSON read by key), both as
//     state_to_json(...).dump() and as the stored snapshot record;
//   - decode from those bytes and encode again to the same bytes;
//   - be reached again by folding the scenario's ledger alone.
// KEEL_WRITE_LOOP_GOLDEN=<path> writes the file instead of checking it.

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/core.hpp"
#include "agent/loop.hpp"
#include "ledger/codec.hpp"
#include "support/decisions.hpp"
#include "unit/agent/refund_desk.hpp"

namespace a = keel::agent;
namespace c = keel::config;
using json = nlohmann::json;
using namespace keel::test::pure_loop;
using keel::test::effects_of;

namespace {

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char ch : bytes) {
    out.push_back(digits[ch >> 4]);
    out.push_back(digits[ch & 15]);
  }
  return out;
}

// One recorded state: its JSON dump and its snapshot record's bytes.
struct recorded {
  std::string scenario;
  std::string json_dump;
  std::string record_hex;
};

recorded record_of(const std::string& scenario, const a::agent_state& s) {
  const auto rec = keel::actors::snapshot_record(s, t0);
  return {scenario, a::state_to_json(s).dump(), hex(std::to_string(rec.type) + ":" + rec.payload)};
}

struct scenario_driver {
  std::string name;
  std::shared_ptr<c::agent_spec> spec;
  a::loop_type type;
  a::agent_state s;
  std::vector<a::event> ledger;
  std::vector<recorded>& out;
  int64_t now = t0;
  uint64_t arrival = 0;

  scenario_driver(std::string n, std::shared_ptr<c::agent_spec> sp, std::vector<recorded>& o)
      : name(std::move(n)), spec(std::move(sp)), type(spec), out(o) {
    s.type = spec->name;
    step(a::spawn_input{spec->name, nullptr});
  }

  a::decision step(const a::input& in) {
    now += 7;
    auto d = a::decide(type, s, in, now);
    for (auto& e : d.events) {
      a::apply(type, s, e);
      ledger.push_back(e);
      out.push_back(record_of(name, s));
    }
    return d;
  }
  a::decision message(std::string text) {
    ++arrival;
    return step(a::message_input{arrival, "m" + std::to_string(arrival), "client", json(text)});
  }
  a::decision signal(std::string sig, json payload = nullptr) {
    ++arrival;
    return step(a::signal_input{arrival, std::move(sig), std::move(payload)});
  }
  a::decision result(uint64_t effect, uint32_t attempt, json r) {
    return step(a::effect_result_input{effect, attempt, true, std::move(r), {}, false});
  }
  a::decision failure(uint64_t effect, uint32_t attempt, bool retryable, bool maybe = false) {
    return step(a::effect_result_input{effect, attempt, false, nullptr, "boom", retryable, maybe});
  }
  // The first effect of its kind that `d` asks for; a scenario that goes
  // astray says where.
  template <class Effect>
  Effect first(const a::decision& d) {
    auto fx = effects_of<Effect>(d);
    if (fx.empty())
      throw std::runtime_error(name + ": no such effect after event " +
                               std::to_string(ledger.size()));
    return fx[0];
  }
  uint64_t model(const a::decision& d) { return first<a::model_call_effect>(d).effect; }
  a::tool_call_effect tool(const a::decision& d) { return first<a::tool_call_effect>(d); }

  // Folding the ledger alone must reach the same state.
  void check_fold() const {
    a::agent_state r;
    r.type = spec->name;
    for (const auto& e : ledger) a::apply(type, r, e);
    CHECK(a::state_to_json(r).dump() == a::state_to_json(s).dump());
    CHECK(r == s);
  }
};

// Every scenario, in order; each appends the states it passes through.
std::vector<recorded> run_scenarios() {
  std::vector<recorded> out;
  {
    scenario_driver d("plain turns and a queue", refund_desk(), out);
    auto m1 = d.model(d.message("hello"));
    d.message("second");
    d.message("third");
    auto m2 = d.model(d.result(m1, 1, reply("one")));
    auto m3 = d.model(d.result(m2, 1, reply("two")));
    d.result(m3, 1, reply("three"));
    d.check_fold();
  }
  {
    scenario_driver d("tools, approval and a retry timer", refund_desk(), out);
    auto m = d.model(d.message("refund order 7"));
    auto lk =
        d.tool(d.result(m, 1, calls({{"lookup", {{"order", 7}}}, {"refund", {{"amount", 500}}}})));
    auto dec = d.failure(lk.effect, 1, true);
    auto timer = d.first<a::set_timer_effect>(dec);
    d.now = timer.due_ms;
    d.step(a::timer_input{timer.timer_id});
    d.result(lk.effect, 2, {{"order", 7}, {"total", 500}});
    auto rf = d.tool(d.signal("approve", {{"by", "ann"}, {"note", "manager"}}));
    auto m2 = d.model(d.result(rf.effect, 1, {{"refunded", 500}}));
    d.result(m2, 1, reply("refunded"));
    d.check_fold();
  }
  {
    scenario_driver d("failure, compensation and retry of the turn", refund_desk(), out);
    auto m = d.model(d.message("book"));
    auto r1 = d.tool(d.result(m, 1,
                              calls({{"reserve", {{"seat", 1}}},
                                     {"reserve", {{"seat", 2}}},
                                     {"refund", {{"amount", 5}}}})));
    auto r2 = d.tool(d.result(r1.effect, 1, {{"held", 1}}));
    auto rf = d.tool(d.result(r2.effect, 1, {{"held", 2}}));
    auto c1 = d.tool(d.failure(rf.effect, 1, false));
    auto c2 = d.tool(d.result(c1.effect, 1, {{"released", 2}}));
    d.result(c2.effect, 1, {{"released", 1}});
    auto again = d.model(d.signal("retry", {{"by", "ops"}}));
    d.result(again, 1, reply("done now"));
    d.check_fold();
  }
  {
    scenario_driver d("recovery and doubt", refund_desk(), out);
    auto m = d.model(d.message("x"));
    auto lk = d.tool(d.result(m, 1,
                              calls({{"lookup", {{"order", 1}}},
                                     {"refund", {{"amount", 9}}},
                                     {"refund", {{"amount", 8}}}})));
    auto lk2 = d.tool(d.step(a::recover_input{}));
    auto rf = d.tool(d.result(lk2.effect, 2, {{"ok", true}}));
    d.step(a::recover_input{});
    d.signal("resolve", {{"outcome", "retry"}, {"by", "ops"}});
    d.failure(rf.effect, 2, true, true);
    d.signal("resolve", {{"outcome", "succeeded"}, {"result", {{"refunded", 9}}}, {"by", "ops"}});
    (void)lk;
    d.check_fold();
  }
  {
    auto spec = refund_desk();
    spec->budgets.per_turn.tool_calls = 1;
    spec->budgets.lifetime.model_calls = 3;
    scenario_driver d("budgets stop turns", spec, out);
    auto m = d.model(d.message("x"));
    auto tc =
        d.tool(d.result(m, 1, calls({{"lookup", {{"order", 1}}}, {"lookup", {{"order", 2}}}})));
    d.message("y");
    auto m2 = d.model(d.result(tc.effect, 1, {{"ok", 1}}));
    auto dec = d.failure(m2, 1, true);
    auto timer = d.first<a::set_timer_effect>(dec);
    d.now = timer.due_ms;
    d.step(a::timer_input{timer.timer_id});
    d.message("z");
    d.check_fold();
  }
  {
    auto spec = refund_desk();
    spec->max_steps_per_turn = 2;
    scenario_driver d("max steps", spec, out);
    auto m = d.model(d.message("x"));
    auto m2 = d.model(d.result(m, 1, calls({{"sql", {{"query", "drop t"}}}})));
    d.result(m2, 1, calls({{"sql", {{"query", "drop t"}}}}));
    d.check_fold();
  }
  {
    scenario_driver d("sleep, ask_human, cancel and pause", refund_desk(), out);
    auto m = d.model(d.message("x"));
    auto dec = d.result(m, 1, calls({{"nap", {{"ms", 5000}}}, {"ask", {{"question", "ok?"}}}}));
    auto timer = d.first<a::set_timer_effect>(dec);
    d.now = timer.due_ms;
    d.step(a::timer_input{timer.timer_id});
    d.now += 60'000;
    auto m2 = d.model(d.signal("answer", {{"text", "yes"}, {"by", "bob"}}));
    auto r =
        d.tool(d.result(m2, 1, calls({{"reserve", {{"seat", 7}}}, {"refund", {{"amount", 500}}}})));
    d.result(r.effect, 1, {{"held", 7}});
    d.signal("pause", {{"by", "ops"}});
    d.signal("resume", {{"by", "ops"}});
    d.step(a::fork_input{"desk/parent", 3, "ops", 250});
    auto comp = d.tool(d.signal("cancel", {{"by", "ops"}}));
    d.result(comp.effect, 1, {{"released", 7}});
    d.check_fold();
  }
  {
    auto spec = refund_desk();
    auto undo = tool("undo_by_worker", c::tool_kind::worker, true);
    undo.queue = "ops";
    spec->tools.push_back(undo);
    for (auto& t : spec->tools)
      if (t.name == "reserve") t.compensate = "undo_by_worker";
    scenario_driver d("worker compensation, then terminated", spec, out);
    auto m = d.model(d.message("x"));
    auto r =
        d.tool(d.result(m, 1, calls({{"reserve", {{"seat", 1}}}, {"refund", {{"amount", 1}}}})));
    auto rf = d.tool(d.result(r.effect, 1, {{"held", 1}}));
    d.failure(rf.effect, 1, false);
    d.message("later");
    d.step(a::terminate_input{"ops"});
    d.check_fold();
  }
  {
    scenario_driver d("a failed agent", refund_desk(), out);
    auto m = d.model(d.message("x"));
    d.result(m, 1, {{"content", "no calls"}, {"tool_calls", "not a list"}});
    d.model(d.message("y"));
    a::event failed{a::event_type::failed, d.now, {{"reason", "a bug"}}};
    a::apply(d.type, d.s, failed);
    d.ledger.push_back(failed);
    d.out.push_back(record_of(d.name, d.s));
    d.check_fold();
  }
  return out;
}

std::string golden_path() {
  return std::string(KEEL_SOURCE_DIR) + "/tests/unit/agent/loop_states.golden";
}

}  // namespace

TEST_CASE("every loop state encodes to the bytes of the JSON control state it replaced") {
  const std::vector<recorded> states = run_scenarios();
  REQUIRE(states.size() > 100);
  if (const char* out = std::getenv("KEEL_WRITE_LOOP_GOLDEN")) {
    std::ofstream f(out);
    for (const auto& r : states)
      f << r.scenario << "\n" << r.json_dump << "\n" << r.record_hex << "\n";
    return;
  }
  std::ifstream f(golden_path());
  REQUIRE(f.good());
  std::vector<recorded> golden;
  recorded r;
  while (std::getline(f, r.scenario) && std::getline(f, r.json_dump) &&
         std::getline(f, r.record_hex))
    golden.push_back(r);
  REQUIRE(golden.size() == states.size());
  for (std::size_t i = 0; i < states.size(); ++i) {
    INFO("state " << i << " of scenario " << golden[i].scenario);
    CHECK(states[i].scenario == golden[i].scenario);
    CHECK(states[i].json_dump == golden[i].json_dump);
    CHECK(states[i].record_hex == golden[i].record_hex);
  }
}

TEST_CASE("a recorded loop state decodes and encodes again to the same bytes") {
  std::ifstream f(golden_path());
  REQUIRE(f.good());
  std::string scenario, dump, record_hex;
  std::size_t n = 0;
  while (std::getline(f, scenario) && std::getline(f, dump) && std::getline(f, record_hex)) {
    INFO("state " << n << " of scenario " << scenario);
    auto st = a::state_from_json(json::parse(dump), "golden");
    REQUIRE(st.is_ok());
    CHECK(a::state_to_json(*st).dump() == dump);
    CHECK(hex(std::to_string(keel::actors::snapshot_record(*st, t0).type) + ":" +
              keel::actors::snapshot_record(*st, t0).payload) == record_hex);
    auto rec = keel::actors::snapshot_record(*st, t0);
    auto back = keel::actors::snapshot_from_record(rec, "golden");
    REQUIRE(back.is_ok());
    CHECK(*back == *st);
    CHECK(a::state_to_json(*back).dump() == dump);
    ++n;
  }
  CHECK(n > 100);
}

TEST_CASE(
    "a control state with a field the loop does not know, or of the wrong type, is corruption") {
  std::ifstream f(golden_path());
  std::string scenario, dump, record_hex;
  json waiting;
  while (std::getline(f, scenario) && std::getline(f, dump) && std::getline(f, record_hex)) {
    json st = json::parse(dump);
    if (st["data"]["ctl"]["turn"].is_object() && st["data"]["ctl"]["turn"]["wait"].is_object()) {
      waiting = st;
      break;
    }
  }
  REQUIRE(waiting.is_object());
  REQUIRE(a::state_from_json(waiting, "golden").is_ok());
  auto corrupt = [](const json& st, const std::string& names) {
    auto r = a::state_from_json(st, "snapshot of desk/1");
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == keel::code::corruption);
    CHECK_MESSAGE(r.error().message().find(names) != std::string::npos, r.error().message());
  };
  SUBCASE("an unknown field") {
    json st = waiting;
    st["data"]["ctl"]["turn"]["wait"]["colour"] = "red";
    corrupt(st, "turn.wait has a field this version does not know");
  }
  SUBCASE("an unknown wait") {
    json st = waiting;
    st["data"]["ctl"]["turn"]["wait"]["on"] = "lunch";
    corrupt(st, "waits on 'lunch'");
  }
  SUBCASE("a counter of the wrong type") {
    json st = waiting;
    st["data"]["ctl"]["turns"] = "two";
    corrupt(st, "turns is not a non-negative integer");
  }
  SUBCASE("an unknown agent status") {
    json st = waiting;
    st["status"] = "asleep";
    corrupt(st, "unknown agent status 'asleep'");
  }
}
