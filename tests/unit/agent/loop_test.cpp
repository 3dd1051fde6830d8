// The agent loop as a pure state machine: every case drives decide() and
// apply() by hand (no actors, no store, no sockets) and checks both what the
// loop decided and that folding its recorded events alone reproduces the
// same state, as recovery and replay do.

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/core.hpp"
#include "agent/loop.hpp"
#include "support/decisions.hpp"
#include "unit/agent/refund_desk.hpp"

namespace a = keel::agent;
namespace c = keel::config;
using json = nlohmann::json;
using namespace keel::test::pure_loop;

namespace {

// Drives one agent: every decision's events are applied to `s` and kept in
// `ledger`, exactly as the shell does.
struct driver {
  std::shared_ptr<c::agent_spec> spec = refund_desk();
  a::loop_type type{spec};
  a::agent_state s;
  std::vector<a::event> ledger;
  int64_t now = t0;
  uint64_t arrival = 0;

  driver() {
    s.type = spec->name;
    step(a::spawn_input{spec->name, nullptr});
  }

  a::decision step(const a::input& in) {
    auto d = a::decide(type, s, in, now);
    for (auto& e : d.events) {
      a::apply(type, s, e);
      ledger.push_back(e);
    }
    return d;
  }
  a::decision message(std::string text) {
    ++arrival;
    return step(a::message_input{arrival, "m" + std::to_string(arrival), "client", json(text)});
  }
  a::decision signal(std::string name, json payload = nullptr) {
    ++arrival;
    return step(a::signal_input{arrival, std::move(name), std::move(payload)});
  }
  a::decision result(uint64_t effect, uint32_t attempt, json r) {
    return step(a::effect_result_input{effect, attempt, true, std::move(r), {}, false});
  }
  a::decision failure(uint64_t effect, uint32_t attempt, bool retryable) {
    return step(a::effect_result_input{effect, attempt, false, nullptr, "boom", retryable});
  }

  std::string phase() const { return type.phase(s); }
  json wait() const { return a::type_data(s)["ctl"]["turn"]["wait"]; }

  // Folding the ledger alone (recovery, replay) must reach the same state.
  void check_fold() const {
    a::agent_state r;
    r.type = spec->name;
    for (const auto& e : ledger) a::apply(type, r, e);
    CHECK(r == s);
  }
};

using keel::test::effects_of;

std::vector<std::string> kinds(const a::decision& d) {
  std::vector<std::string> out;
  for (const auto& e : d.events) out.emplace_back(a::to_string(e.type));
  return out;
}

const a::event* find_event(const std::vector<a::event>& es, a::event_type t) {
  for (const auto& e : es)
    if (e.type == t) return &e;
  return nullptr;
}

}  // namespace

TEST_CASE("a message starts a turn that asks the model, and a plain reply completes it") {
  driver d;
  auto dec = d.message("hello");
  CHECK(kinds(dec) ==
        std::vector<std::string>{"message_received", "turn_started", "model_requested"});
  auto calls_ = effects_of<a::model_call_effect>(dec);
  REQUIRE(calls_.size() == 1);
  CHECK(calls_[0].call_index == 0);
  CHECK(d.phase() == "thinking");

  // The request is rebuilt from state: instructions, then the user message.
  json req = d.type.model_request(d.s);
  REQUIRE(req["messages"].size() == 2);
  CHECK(req["messages"][0]["role"] == "system");
  CHECK(req["messages"][1]["content"] == "hello");
  CHECK(req["tools"].size() == d.spec->tools.size());

  dec = d.result(calls_[0].effect, 1, reply("hi there"));
  CHECK(kinds(dec) == std::vector<std::string>{"model_replied", "turn_completed"});
  CHECK(dec.events.back().data["answer"] == "hi there");
  CHECK(dec.events.back().data["status"] == "completed");
  // The message that started the turn gets the answer.
  auto answers = effects_of<a::reply_effect>(dec);
  std::erase_if(answers, [](const a::reply_effect& r) { return r.to.empty(); });
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].to == "m1");
  CHECK(answers[0].body["answer"] == "hi there");
  CHECK(d.phase() == "idle");
  CHECK(d.s.loop->last->answer.value() == "hi there");
  d.check_fold();
}

TEST_CASE("an allowed tool call runs as an effect and its result goes back to the model") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("order 9?"))[0];
  auto dec = d.result(m.effect, 1, calls({{"lookup", {{"order", 9}}}}));
  CHECK(kinds(dec) ==
        std::vector<std::string>{"model_replied", "guardrail_decided", "effect_started"});
  CHECK(find_event(dec.events, a::event_type::guardrail_decided)->data["verdict"] == "allow");
  auto tc = effects_of<a::tool_call_effect>(dec);
  REQUIRE(tc.size() == 1);
  CHECK(tc[0].tool == "lookup");
  CHECK(tc[0].arguments == json{{"order", 9}});
  // The effect id is the seq of its effect_started event.
  CHECK(tc[0].effect == d.s.last_seq);
  CHECK(d.phase() == "running_tool");

  dec = d.result(tc[0].effect, 1, {{"status", "shipped"}});
  CHECK(kinds(dec) == std::vector<std::string>{"effect_completed", "model_requested"});
  json req = d.type.model_request(d.s);
  const json& last = req["messages"].back();
  CHECK(last["role"] == "tool");
  CHECK(last["tool_call_id"] == "c0");
  CHECK(json::parse(last["content"].get<std::string>())["status"] == "shipped");
  // Only what is new is recorded: no event carries the conversation.
  for (const auto& e : d.ledger) CHECK_FALSE(e.data.contains("messages"));
  d.check_fold();
}

TEST_CASE("a call over the approval threshold waits for a human, across any number of signals") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("refund order 9"))[0];
  auto dec = d.result(m.effect, 1, calls({{"refund", {{"order", 9}, {"amount", 120}}}}));
  CHECK(kinds(dec) ==
        std::vector<std::string>{"model_replied", "guardrail_decided", "approval_requested"});
  CHECK(find_event(dec.events, a::event_type::guardrail_decided)->data["rule"] == "big-refund");
  CHECK(effects_of<a::tool_call_effect>(dec).empty());
  CHECK(d.phase() == "waiting_approval");
  CHECK(d.type.view(d.s)["turn"]["wait"]["arguments"]["amount"] == 120);

  SUBCASE("approve runs the tool and records who approved") {
    dec = d.signal("approve", {{"by", "maria"}});
    auto g = find_event(dec.events, a::event_type::guardrail_decided);
    REQUIRE(g);
    CHECK(g->data["verdict"] == "approved");
    CHECK(g->data["by"] == "maria");
    auto tc = effects_of<a::tool_call_effect>(dec);
    REQUIRE(tc.size() == 1);
    CHECK(tc[0].tool == "refund");
    CHECK(d.phase() == "running_tool");
  }
  SUBCASE("reject answers the model with the refusal") {
    dec = d.signal("reject", {{"by", "maria"}, {"reason", "not eligible"}});
    CHECK(effects_of<a::tool_call_effect>(dec).empty());
    CHECK(d.phase() == "thinking");
    json last = d.type.model_request(d.s)["messages"].back();
    CHECK(last["role"] == "tool");
    CHECK(last["content"].get<std::string>().find("not eligible") != std::string::npos);
  }
  SUBCASE("an approval nobody asked for is refused") {
    d.signal("approve");
    auto again = d.signal("approve");
    REQUIRE(effects_of<a::reply_effect>(again).size() == 1);
    CHECK_FALSE(effects_of<a::reply_effect>(again)[0].ok);
  }
  d.check_fold();
}

TEST_CASE("a model that rephrases a denied call is denied every time") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("clean up"))[0];
  const std::vector<std::string> attempts = {"DROP TABLE users", "drop table users",
                                             "DrOp\ttable users", "x; truncate t --"};
  uint64_t effect = m.effect;
  for (const auto& q : attempts) {
    auto dec = d.result(effect, 1, calls({{"sql", {{"query", q}}}}));
    auto g = find_event(dec.events, a::event_type::guardrail_decided);
    REQUIRE(g);
    CHECK(g->data["verdict"] == "deny");
    CHECK(g->data["rule"] == "no-drop");
    CHECK(effects_of<a::tool_call_effect>(dec).empty());
    // The refusal is answered to the model, which is asked again.
    auto next = effects_of<a::model_call_effect>(dec);
    REQUIRE(next.size() == 1);
    effect = next[0].effect;
  }
  // A harmless query is allowed.
  auto dec = d.result(effect, 1, calls({{"sql", {{"query", "select 1"}}}}));
  CHECK(effects_of<a::tool_call_effect>(dec).size() == 1);
  d.check_fold();
}

TEST_CASE("unknown tools and arguments that are not JSON never reach a tool") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec = d.result(m.effect, 1,
                      calls({{"rm_rf", json::object()}, {"lookup", {{"$unparsed", "{oops"}}}}));
  int invalid = 0;
  for (const auto& e : dec.events)
    if (e.type == a::event_type::guardrail_decided && e.data["verdict"] == "invalid") ++invalid;
  CHECK(invalid == 2);
  CHECK(effects_of<a::tool_call_effect>(dec).empty());
  CHECK(effects_of<a::model_call_effect>(dec).size() == 1);
  d.check_fold();
}

TEST_CASE("a retryable failure is retried after a durable backoff with the same effect id") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto tc = effects_of<a::tool_call_effect>(
      d.result(m.effect, 1, calls({{"lookup", {{"order", 1}}}})))[0];
  auto dec = d.failure(tc.effect, 1, true);
  CHECK(kinds(dec) == std::vector<std::string>{"effect_failed", "timer_set"});
  CHECK(dec.events[0].data["final"] == false);
  auto timers = effects_of<a::set_timer_effect>(dec);
  REQUIRE(timers.size() == 1);
  CHECK(timers[0].due_ms >= d.now + 80);  // 100 ms +- 20 % jitter
  CHECK(timers[0].due_ms <= d.now + 120);
  CHECK(d.phase() == "retrying");
  CHECK(effects_of<a::end_effect>(dec).size() == 1);

  // A late result of the failed attempt is stale.
  auto stale = d.result(tc.effect, 1, {{"late", true}});
  CHECK(stale.events.empty());

  d.now = timers[0].due_ms;
  dec = d.step(a::timer_input{timers[0].timer_id});
  auto again = effects_of<a::tool_call_effect>(dec);
  REQUIRE(again.size() == 1);
  CHECK(again[0].effect == tc.effect);
  CHECK(again[0].attempt == 2);
  dec = d.result(tc.effect, 2, {{"ok", true}});
  CHECK(find_event(dec.events, a::event_type::effect_completed));
  d.check_fold();
}

TEST_CASE("a turn that fails past its retries compensates completed calls in reverse order") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("book"))[0];
  auto dec = d.result(
      m.effect, 1,
      calls({{"reserve", {{"seat", 1}}}, {"reserve", {{"seat", 2}}}, {"refund", {{"amount", 5}}}}));
  auto r1 = effects_of<a::tool_call_effect>(dec)[0];
  auto r2 = effects_of<a::tool_call_effect>(d.result(r1.effect, 1, {{"held", 1}}))[0];
  auto rf = effects_of<a::tool_call_effect>(d.result(r2.effect, 1, {{"held", 2}}))[0];
  CHECK(rf.tool == "refund");
  dec = d.failure(rf.effect, 1, false);  // permanent
  auto comp = effects_of<a::tool_call_effect>(dec);
  REQUIRE(comp.size() == 1);
  CHECK(comp[0].tool == "release");
  CHECK(comp[0].arguments["arguments"]["seat"] == 2);  // the last completed call first
  CHECK(d.phase() == "compensating");
  dec = d.result(comp[0].effect, 1, {{"released", 2}});
  comp = effects_of<a::tool_call_effect>(dec);
  REQUIRE(comp.size() == 1);
  CHECK(comp[0].arguments["arguments"]["seat"] == 1);
  dec = d.result(comp[0].effect, 1, {{"released", 1}});
  auto done = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(done);
  CHECK(done->data["status"] == "failed");
  CHECK(done->data["reason"].get<std::string>().find("refund") != std::string::npos);
  CHECK(d.phase() == "idle");
  // The next turn's request is well formed: every proposed call is answered.
  d.message("again");
  json msgs = d.type.model_request(d.s)["messages"];
  int tool_msgs = 0;
  for (const auto& msg : msgs) tool_msgs += msg["role"] == "tool";
  CHECK(tool_msgs == 3);
  d.check_fold();
}

TEST_CASE("after a crash an idempotent call is retried and any other is put in doubt") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  SUBCASE("idempotent: a new attempt of the same effect") {
    auto tc = effects_of<a::tool_call_effect>(
        d.result(m.effect, 1, calls({{"lookup", {{"order", 1}}}})))[0];
    CHECK(d.type.needs_recovery(d.s));
    auto dec = d.step(a::recover_input{});
    auto again = effects_of<a::tool_call_effect>(dec);
    REQUIRE(again.size() == 1);
    CHECK(again[0].effect == tc.effect);
    CHECK(again[0].attempt == 2);
    CHECK(dec.events[0].data["recovered"] == true);
  }
  SUBCASE("not idempotent: in doubt until resolved") {
    auto tc = effects_of<a::tool_call_effect>(
        d.result(m.effect, 1, calls({{"refund", {{"amount", 5}}}})))[0];
    auto dec = d.step(a::recover_input{});
    CHECK(kinds(dec) == std::vector<std::string>{"effect_in_doubt"});
    CHECK(effects_of<a::tool_call_effect>(dec).empty());
    CHECK(d.phase() == "in_doubt");
    CHECK_FALSE(d.type.needs_recovery(d.s));
    SUBCASE("resolved as succeeded: recorded with its result, the turn goes on") {
      dec = d.signal("resolve",
                     {{"outcome", "succeeded"}, {"result", {{"refunded", 5}}}, {"by", "ops"}});
      auto done = find_event(dec.events, a::event_type::effect_completed);
      REQUIRE(done);
      CHECK(done->data["effect"] == tc.effect);
      CHECK(done->data["resolved_by"] == "ops");
      CHECK(d.phase() == "thinking");
    }
    SUBCASE("resolved as retry: a new attempt") {
      dec = d.signal("resolve", {{"outcome", "retry"}});
      auto again = effects_of<a::tool_call_effect>(dec);
      REQUIRE(again.size() == 1);
      CHECK(again[0].attempt == 2);
    }
    SUBCASE("a bad resolve is refused and changes nothing") {
      dec = d.signal("resolve", {{"outcome", "maybe"}});
      CHECK_FALSE(effects_of<a::reply_effect>(dec)[0].ok);
      CHECK(d.phase() == "in_doubt");
    }
  }
  SUBCASE("a model call is simply asked again") {
    auto dec = d.step(a::recover_input{});
    auto again = effects_of<a::model_call_effect>(dec);
    REQUIRE(again.size() == 1);
    CHECK(again[0].effect == m.effect);
    CHECK(again[0].attempt == 2);
  }
  d.check_fold();
}

TEST_CASE("a failure that may have applied a non-idempotent call puts it in doubt, never retried") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto may_have_applied = [](uint64_t effect, uint32_t attempt, bool retryable) {
    return a::effect_result_input{effect, attempt, false, nullptr, "timed out", retryable, true};
  };
  SUBCASE("not idempotent: in doubt, with the failure recorded, whatever the retry policy") {
    auto tc = effects_of<a::tool_call_effect>(
        d.result(m.effect, 1, calls({{"refund", {{"amount", 5}}}})))[0];
    auto dec = d.step(may_have_applied(tc.effect, 1, true));
    CHECK(kinds(dec) == std::vector<std::string>{"effect_in_doubt"});
    CHECK(dec.events[0].data["error"] == "timed out");
    CHECK(effects_of<a::tool_call_effect>(dec).empty());
    CHECK(effects_of<a::set_timer_effect>(dec).empty());  // no retry scheduled
    CHECK(d.phase() == "in_doubt");
    dec = d.signal("resolve", {{"outcome", "failed"}, {"by", "ops"}});
    auto failed = find_event(dec.events, a::event_type::effect_failed);
    REQUIRE(failed);
    CHECK(failed->data["resolved_by"] == "ops");
  }
  SUBCASE("a failure that proves nothing happened is retried as before") {
    auto tc = effects_of<a::tool_call_effect>(
        d.result(m.effect, 1, calls({{"refund", {{"amount", 5}}}})))[0];
    auto dec = d.failure(tc.effect, 1, true);
    CHECK(kinds(dec) == std::vector<std::string>{"effect_failed", "timer_set"});
    CHECK(d.phase() == "retrying");
  }
  SUBCASE("idempotent: retried with the same key, as the tool can tell a repeat") {
    auto tc = effects_of<a::tool_call_effect>(
        d.result(m.effect, 1, calls({{"lookup", {{"order", 1}}}})))[0];
    auto dec = d.step(may_have_applied(tc.effect, 1, true));
    CHECK(kinds(dec) == std::vector<std::string>{"effect_failed", "timer_set"});
    CHECK(d.phase() == "retrying");
  }
  d.check_fold();
}

TEST_CASE("budgets stop a turn with the limit named in the reason") {
  driver d;
  d.spec->budgets.per_turn.tool_calls = 1;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec = d.result(m.effect, 1, calls({{"lookup", {{"order", 1}}}, {"lookup", {{"order", 2}}}}));
  auto tc = effects_of<a::tool_call_effect>(dec);
  REQUIRE(tc.size() == 1);
  dec = d.result(tc[0].effect, 1, {{"ok", 1}});
  auto done = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(done);
  CHECK(done->data["status"] == "stopped");
  CHECK(done->data["reason"].get<std::string>().find("per-turn tool_calls (1)") !=
        std::string::npos);
  CHECK(effects_of<a::tool_call_effect>(dec).empty());
  d.check_fold();
}

TEST_CASE("max_steps_per_turn bounds the model calls of one turn") {
  driver d;
  d.spec->max_steps_per_turn = 2;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec = d.result(m.effect, 1, calls({{"sql", {{"query", "drop t"}}}}));  // denied, asks again
  auto m2 = effects_of<a::model_call_effect>(dec);
  REQUIRE(m2.size() == 1);
  dec = d.result(m2[0].effect, 1, calls({{"sql", {{"query", "drop t"}}}}));
  auto done = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(done);
  CHECK(done->data["reason"].get<std::string>().find("max_steps_per_turn") != std::string::npos);
  d.check_fold();
}

TEST_CASE("cancel compensates what the turn completed and ends it cancelled") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec =
      d.result(m.effect, 1, calls({{"reserve", {{"seat", 7}}}, {"refund", {{"amount", 500}}}}));
  auto r = effects_of<a::tool_call_effect>(dec)[0];
  d.result(r.effect, 1, {{"held", 7}});
  CHECK(d.phase() == "waiting_approval");
  dec = d.signal("cancel", {{"by", "ops"}});
  auto comp = effects_of<a::tool_call_effect>(dec);
  REQUIRE(comp.size() == 1);
  CHECK(comp[0].tool == "release");
  dec = d.result(comp[0].effect, 1, {{"released", 7}});
  auto done = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(done);
  CHECK(done->data["status"] == "cancelled");
  CHECK(done->data["reason"] == "cancelled by ops");
  CHECK(d.phase() == "idle");
  auto again = d.signal("cancel");
  CHECK_FALSE(effects_of<a::reply_effect>(again)[0].ok);
  d.check_fold();
}

TEST_CASE("messages that arrive during a turn wait and start the next turns in order") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("first"))[0];
  auto q = d.message("second");
  CHECK(effects_of<a::model_call_effect>(q).empty());
  CHECK(effects_of<a::reply_effect>(q).empty());  // answered when its turn ends
  CHECK(d.type.view(d.s)["queued"] == 1);
  auto dec = d.result(m.effect, 1, reply("one"));
  CHECK(kinds(dec) == std::vector<std::string>{"model_replied", "turn_completed", "turn_started",
                                               "model_requested"});
  CHECK(d.type.model_request(d.s)["messages"].back()["content"] == "second");
  d.check_fold();
}

TEST_CASE("sleep is a durable timer and ask_human waits for the answer signal") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec =
      d.result(m.effect, 1, calls({{"nap", {{"ms", 5000}}}, {"ask", {{"question", "ok?"}}}}));
  auto timers = effects_of<a::set_timer_effect>(dec);
  REQUIRE(timers.size() == 1);
  CHECK(timers[0].due_ms == d.now + 5000);
  CHECK(d.phase() == "sleeping");
  CHECK_FALSE(d.type.needs_recovery(d.s));  // nothing runs in-process
  d.now += 5000;
  dec = d.step(a::timer_input{timers[0].timer_id});
  CHECK(find_event(dec.events, a::event_type::effect_completed));
  CHECK(d.phase() == "waiting_human");
  dec = d.signal("answer", {{"text", "yes"}, {"by", "bob"}});
  CHECK(find_event(dec.events, a::event_type::effect_completed)->data["result"]["text"] == "yes");
  CHECK(d.phase() == "thinking");
  d.check_fold();
}

TEST_CASE("retry delays grow, stay within the jitter and are the same on every run") {
  c::retry_policy p;
  p.backoff_ms = 100;
  p.multiplier = 2;
  p.jitter = 0.2;
  p.max_backoff_ms = 1000;
  CHECK(a::retry_delay_ms(p, 7, 1) == a::retry_delay_ms(p, 7, 1));
  for (uint32_t attempt = 1; attempt <= 6; ++attempt) {
    double base = std::min(100.0 * (1 << (attempt - 1)), 1000.0);
    int64_t d = a::retry_delay_ms(p, 42, attempt);
    CHECK(d >= static_cast<int64_t>(base * 0.8) - 1);
    CHECK(d <= static_cast<int64_t>(base * 1.2) + 1);
  }
}

TEST_CASE("a spec that lost a tool refuses its waiting call instead of running it") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("refund"))[0];
  d.result(m.effect, 1, calls({{"refund", {{"amount", 500}}}}));
  REQUIRE(d.phase() == "waiting_approval");
  // keeld restarted with a spec without "refund": the agent keeps its state.
  auto smaller = std::make_shared<c::agent_spec>(*d.spec);
  std::erase_if(smaller->tools, [](const c::tool_spec& t) { return t.name == "refund"; });
  a::loop_type changed(smaller);
  auto dec = a::decide(changed, d.s, a::signal_input{99, "approve", {{"by", "maria"}}}, d.now);
  CHECK(effects_of<a::tool_call_effect>(dec).empty());
  bool refused = false;
  for (const auto& e : dec.events)
    refused |= e.type == a::event_type::guardrail_decided && e.data["verdict"] == "invalid";
  CHECK(refused);
  CHECK(effects_of<a::model_call_effect>(dec).size() == 1);
}

TEST_CASE("a malformed model reply fails the turn instead of the agent") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec = d.result(m.effect, 1, json("not an object"));
  auto done = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(done);
  CHECK(done->data["status"] == "failed");
  CHECK(d.s.status == keel::agent_status::active);
  d.check_fold();
}

TEST_CASE("payload fields of the wrong type are ignored, never fatal") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("refund"))[0];
  d.result(m.effect, 1, calls({{"refund", {{"amount", 500}}}}));
  auto dec = d.signal("approve", {{"by", 5}, {"reason", json::array()}});
  CHECK(d.s.status == keel::agent_status::active);
  CHECK(effects_of<a::tool_call_effect>(dec).size() == 1);
  d.signal("poke", "not an object");
  d.signal("cancel", {{"by", false}});
  CHECK(d.s.status == keel::agent_status::active);
  d.check_fold();
}

TEST_CASE("a cancelled turn does not retry the call it was running") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto tc =
      effects_of<a::tool_call_effect>(d.result(m.effect, 1, calls({{"lookup", {{"o", 1}}}})))[0];
  d.signal("cancel", {{"by", "ops"}});
  auto dec = d.failure(tc.effect, 1, true);  // retryable, but the turn is being cancelled
  CHECK(effects_of<a::set_timer_effect>(dec).empty());
  auto done = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(done);
  CHECK(done->data["status"] == "cancelled");
  d.check_fold();
}

TEST_CASE("a retry of a model call keeps its call index, even on the last allowed step") {
  driver d;
  d.spec->max_steps_per_turn = 1;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  CHECK(m.call_index == 0);
  auto dec = d.failure(m.effect, 1, true);
  auto timers = effects_of<a::set_timer_effect>(dec);
  REQUIRE(timers.size() == 1);
  d.now = timers[0].due_ms;
  dec = d.step(a::timer_input{timers[0].timer_id});
  auto again = effects_of<a::model_call_effect>(dec);
  REQUIRE(again.size() == 1);
  CHECK(again[0].attempt == 2);
  CHECK(again[0].call_index == 0);
  d.result(m.effect, 2, reply("ok"));
  // The next turn's first call is the agent's second call, not its third.
  auto next = effects_of<a::model_call_effect>(d.message("y"));
  REQUIRE(next.size() == 1);
  CHECK(next[0].call_index == 1);
  d.check_fold();
}

TEST_CASE("terminating an agent abandons the effect it waits on") {
  driver d;
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto tc =
      effects_of<a::tool_call_effect>(d.result(m.effect, 1, calls({{"lookup", {{"o", 1}}}})))[0];
  auto dec = d.step(a::terminate_input{"ops"});
  auto ends = effects_of<a::end_effect>(dec);
  REQUIRE(ends.size() == 1);
  CHECK(ends[0].effect == tc.effect);
  auto late = d.result(tc.effect, 1, {{"ok", 1}});
  CHECK(late.events.empty());
  REQUIRE(effects_of<a::reply_effect>(late).size() == 1);
  CHECK_FALSE(effects_of<a::reply_effect>(late)[0].ok);
}

TEST_CASE("time spent waiting for a human does not count against the turn's wall budget") {
  driver d;
  d.spec->budgets.per_turn.wall_ms = 60'000;
  auto m = effects_of<a::model_call_effect>(d.message("refund"))[0];
  d.result(m.effect, 1, calls({{"refund", {{"amount", 500}}}}));
  d.now += int64_t{30} * 24 * 3600 * 1000;  // approved a month later
  auto dec = d.signal("approve", {{"by", "maria"}});
  CHECK(effects_of<a::tool_call_effect>(dec).size() == 1);
  CHECK(find_event(dec.events, a::event_type::turn_completed) == nullptr);
  d.check_fold();
}

TEST_CASE("a turn started by a signal answers under an id no client can use") {
  driver d;
  auto dec = d.signal("poke", {{"x", 1}});
  auto started = find_event(dec.events, a::event_type::turn_started);
  REQUIRE(started);
  CHECK(started->data["id"].get<std::string>().rfind("auto-", 0) == 0);
}

TEST_CASE("a worker compensation waits passively and needs no recovery") {
  driver d;
  auto undo = tool("undo_by_worker", c::tool_kind::worker, true);
  undo.queue = "ops";
  d.spec->tools.push_back(undo);
  for (auto& t : d.spec->tools)
    if (t.name == "reserve") t.compensate = "undo_by_worker";
  auto m = effects_of<a::model_call_effect>(d.message("x"))[0];
  auto dec =
      d.result(m.effect, 1, calls({{"reserve", {{"seat", 1}}}, {"refund", {{"amount", 1}}}}));
  auto r = effects_of<a::tool_call_effect>(dec)[0];
  auto rf = effects_of<a::tool_call_effect>(d.result(r.effect, 1, {{"held", 1}}))[0];
  dec = d.failure(rf.effect, 1, false);
  REQUIRE(effects_of<a::tool_call_effect>(dec).size() == 1);
  CHECK(d.phase() == "compensating");
  CHECK_FALSE(d.type.needs_recovery(d.s));
  d.check_fold();
}

TEST_CASE("retry runs a failed turn again with its input, and only a failed or stopped one") {
  driver d;
  const a::signal_input retry{0, "retry", {{"by", "ops"}}};
  auto none = a::check_signal_now(d.type, d.s, retry, "desk/1");
  CHECK(none.error_code() == keel::code::conflict);
  CHECK(none.message() == "agent desk/1 is idle: no turn has run yet: nothing to retry");

  auto m = effects_of<a::model_call_effect>(d.message("look up order 9"))[0];
  CHECK(a::check_signal_now(d.type, d.s, retry, "desk/1").message() ==
        "agent desk/1 is thinking: turn 1 is in progress; retry a turn once it failed");
  auto lk = effects_of<a::tool_call_effect>(
      d.result(m.effect, 1, calls({{"lookup", {{"order", 9}}}})))[0];
  auto dec = d.failure(lk.effect, 1, false);  // permanent: the turn fails
  auto failed = find_event(dec.events, a::event_type::turn_completed);
  REQUIRE(failed);
  CHECK(failed->data["status"] == "failed");

  REQUIRE(a::check_signal_now(d.type, d.s, retry, "desk/1").is_ok());
  dec = d.signal("retry", {{"by", "ops"}});
  CHECK(effects_of<a::reply_effect>(dec).empty());  // the new turn answers it
  const std::string retry_id = a::signal_input_id(d.arrival);
  auto started = find_event(dec.events, a::event_type::turn_started);
  REQUIRE(started);
  CHECK(started->data == json{{"turn", 2}, {"id", retry_id}, {"from", ""}, {"retry_of", 1}});
  REQUIRE(effects_of<a::model_call_effect>(dec).size() == 1);
  // The model sees the same input again, after what happened the first time.
  const json msgs = d.type.model_request(d.s)["messages"];
  CHECK(msgs.back() == json{{"role", "user"}, {"content", "look up order 9"}});
  int inputs = 0;
  for (const auto& msg : msgs) inputs += msg["role"] == "user";
  CHECK(inputs == 2);

  auto m2 = effects_of<a::model_call_effect>(dec)[0];
  dec = d.result(m2.effect, 1, reply("order 9 is delivered"));
  auto answers = effects_of<a::reply_effect>(dec);
  REQUIRE(answers.size() == 2);  // the effect result's, and the turn's answer
  CHECK(answers[0].to == retry_id);
  CHECK(answers[0].body["status"] == "completed");

  // A completed turn is not retried; a retry decided anyway (it waited
  // behind other input) is refused and only recorded.
  CHECK(a::check_signal_now(d.type, d.s, retry, "desk/1").message() ==
        "agent desk/1 is idle: the last turn (2) completed: nothing to retry");
  dec = d.signal("retry");
  CHECK(kinds(dec) == std::vector<std::string>{"signal_received"});
  auto refused = effects_of<a::reply_effect>(dec);
  REQUIRE(refused.size() == 1);
  CHECK_FALSE(refused[0].ok);
  CHECK(refused[0].code == "conflict");
  d.check_fold();
}

TEST_CASE("a signal the loop does not take, or that does not apply now, is refused up front") {
  driver d;
  d.spec->signals = {"escalate"};
  auto typo = a::check_signal_name(d.type, "aprove", "desk/1");
  CHECK(typo.error_code() == keel::code::invalid_argument);
  CHECK(typo.message() ==
        "agent desk/1 (type refund-desk) takes no signal 'aprove' (did you mean approve?); it "
        "takes approve, reject, resolve, answer, cancel, retry, escalate");
  for (const char* ok : {"escalate", "approve", "retry", "pause", "resume"})
    CHECK_MESSAGE(a::check_signal_name(d.type, ok, "desk/1").is_ok(), ok);

  auto now = [&d](const char* name, json payload = nullptr) {
    return a::check_signal_now(d.type, d.s, a::signal_input{0, name, std::move(payload)}, "desk/1");
  };
  CHECK(now("approve").message() == "agent desk/1 is idle: nothing awaits approval");
  CHECK(now("reject").error_code() == keel::code::conflict);
  CHECK(now("answer").message() == "agent desk/1 is idle: nobody asked a human");
  CHECK(now("resolve", {{"outcome", "succeeded"}}).message() ==
        "agent desk/1 is idle: no effect is in doubt");
  CHECK(now("cancel").message() == "agent desk/1 is idle: no turn is in progress");
  CHECK(now("resume").message() == "agent desk/1 is not paused");
  CHECK(now("escalate").is_ok());

  auto m = effects_of<a::model_call_effect>(d.message("refund 500"))[0];
  d.result(m.effect, 1, calls({{"refund", {{"amount", 500}}}}));
  REQUIRE(d.phase() == "waiting_approval");
  CHECK(now("approve").is_ok());
  CHECK(now("reject").is_ok());
  CHECK(now("cancel").is_ok());
  CHECK(now("answer").message() == "agent desk/1 is waiting_approval: nobody asked a human");
  d.signal("pause", {{"by", "ops"}});
  CHECK(now("pause").message() == "agent desk/1 is already paused");
  d.check_fold();
}
