#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "agent/core.hpp"
#include "agent/counter.hpp"
#include "agent/registry.hpp"
#include "persistence/values.hpp"
#include "support/decisions.hpp"

using keel::code;
namespace a = keel::agent;
using a::event_type;
using a::json;

namespace {

constexpr int64_t now = 1'700'000'000'000;

const a::agent_type& counter() {
  const a::agent_type* t = a::find_builtin_type("counter");
  REQUIRE(t != nullptr);
  return *t;
}

// Applies every event of `d` to `s`.
void apply_all(a::agent_state& s, const a::decision& d) {
  for (const auto& e : d.events) a::apply(counter(), s, e);
}

// decide + apply, returning the decision.
a::decision step(a::agent_state& s, const a::input& in, int64_t at = now) {
  auto d = a::decide(counter(), s, in, at);
  apply_all(s, d);
  return d;
}

a::agent_state spawned(json input = nullptr) {
  a::agent_state s;
  auto d = step(s, a::spawn_input{"counter", std::move(input)});
  REQUIRE(d.events.size() == 1);
  REQUIRE(d.events[0].type == event_type::spawned);
  return s;
}

a::message_input msg(json body, uint64_t arrival = 1) {
  return {arrival, "m" + std::to_string(arrival), "acct/bob", std::move(body)};
}

int64_t total(const a::agent_state& s) {
  return s.data.at("total").get<int64_t>();
}

std::vector<event_type> types(const a::decision& d) {
  std::vector<event_type> out;
  for (const auto& e : d.events) out.push_back(e.type);
  return out;
}

bool same_state(const a::agent_state& x, const a::agent_state& y) {
  return x == y;
}

// The decision as JSON, so two decisions can be compared as a whole.
json to_json(const a::decision& d) {
  json events = json::array(), effects = json::array();
  for (const auto& e : d.events)
    events.push_back({{"type", static_cast<int>(e.type)}, {"time", e.time_ms}, {"data", e.data}});
  for (const auto& f : d.effects) {
    if (auto* r = std::get_if<a::reply_effect>(&f))
      effects.push_back(
          {{"reply", r->ok}, {"body", r->body}, {"code", r->code}, {"msg", r->message}});
    else if (auto* st = std::get_if<a::set_timer_effect>(&f))
      effects.push_back({{"set", st->timer_id}, {"due", st->due_ms}, {"payload", st->payload}});
    else if (auto* c = std::get_if<a::cancel_timer_effect>(&f))
      effects.push_back({{"cancel", c->timer_id}, {"due", c->due_ms}});
  }
  return {{"events", events}, {"effects", effects}};
}

using keel::test::effects_of;

a::reply_effect only_reply(const a::decision& d) {
  auto replies = effects_of<a::reply_effect>(d);
  REQUIRE(replies.size() == 1);
  return replies[0];
}

}  // namespace

TEST_CASE("the counter type is registered under its name") {
  a::type_registry types;
  REQUIRE(types.find("counter") != nullptr);
  CHECK(types.find("counter")->name() == "counter");
  CHECK(types.find("nope") == nullptr);
  auto names = types.names();
  CHECK(std::find(names.begin(), names.end(), "counter") != names.end());
}

TEST_CASE("spawning a counter records its type and initial total") {
  SUBCASE("null input starts at 0") {
    auto s = spawned();
    CHECK(s.type == "counter");
    CHECK(s.status == keel::agent_status::active);
    CHECK(s.last_seq == 1);
    CHECK(total(s) == 0);
  }
  SUBCASE("an explicit total") {
    auto s = spawned({{"total", -12}});
    CHECK(total(s) == -12);
  }
  SUBCASE("a label is carried in the state unchanged") {
    auto s = spawned({{"total", 1}, {"label", "benchmark"}});
    CHECK(s.data.at("label") == "benchmark");
    step(s, msg({{"add", 2}}));
    CHECK(total(s) == 3);
    CHECK(s.data.at("label") == "benchmark");
  }
  SUBCASE("bad spawn input is refused without events") {
    for (const json& bad :
         {json{{"total", "x"}}, json{{"other", 1}}, json(5), json{{"total", 1}, {"extra", 2}},
          json{{"label", 5}}, json{{"label", std::string(64 * 1024 + 1, 'x')}},
          json{{"total", uint64_t(std::numeric_limits<int64_t>::max()) + 1}}}) {
      CAPTURE(bad.dump().substr(0, 80));
      a::agent_state s;
      auto d = a::decide(counter(), s, a::spawn_input{"counter", bad}, now);
      CHECK(d.events.empty());
      auto r = only_reply(d);
      CHECK_FALSE(r.ok);
      CHECK(r.code == "invalid_argument");
    }
  }
}

TEST_CASE("adding to a counter records the message and the new total and replies with it") {
  auto s = spawned();
  auto d = step(s, msg({{"add", 5}}, 1));
  REQUIRE(types(d) ==
          std::vector<event_type>{event_type::message_received, event_type::state_changed});
  CHECK(d.events[0].time_ms == now);
  CHECK(d.events[0].data.at("arrival") == 1);
  CHECK(d.events[0].data.at("id") == "m1");
  CHECK(d.events[0].data.at("from") == "acct/bob");
  CHECK(d.events[0].data.at("body") == json{{"add", 5}});
  CHECK(d.events[1].data == json{{"total", 5}});
  auto r = only_reply(d);
  CHECK(r.ok);
  CHECK(r.body == json{{"total", 5}});
  CHECK(total(s) == 5);
  CHECK(s.last_arrival == 1);
  CHECK(s.last_seq == 3);

  auto d2 = step(s, msg({{"add", -8}}, 2));
  CHECK(only_reply(d2).body == json{{"total", -3}});
  CHECK(total(s) == -3);
}

TEST_CASE("get records only the message and replies with the total") {
  auto s = spawned({{"total", 41}});
  auto before = s;
  auto d = a::decide(counter(), s, msg({{"get", true}}, 4), now);
  CHECK(types(d) == std::vector<event_type>{event_type::message_received});
  CHECK(only_reply(d).body == json{{"total", 41}});
  apply_all(s, d);
  CHECK(total(s) == 41);
  CHECK(s.last_arrival == 4);
  CHECK(s.data == before.data);
}

TEST_CASE("an unknown message body is recorded, rejected and answered with invalid_message") {
  json body;
  SUBCASE("empty object") {
    body = json::object();
  }
  SUBCASE("not an object") {
    body = "add 5";
  }
  SUBCASE("unknown field") {
    body = {{"add", 1}, {"mul", 2}};
  }
  SUBCASE("add is not an integer") {
    body = {{"add", "5"}};
  }
  SUBCASE("add is fractional") {
    body = {{"add", 1.5}};
  }
  SUBCASE("get false") {
    body = {{"get", false}};
  }
  SUBCASE("negative delay") {
    body = {{"add", 1}, {"delay_ms", -1}};
  }
  SUBCASE("delay over a year") {
    body = {{"add", 1}, {"delay_ms", 400ull * 24 * 3600 * 1000}};
  }
  auto s = spawned({{"total", 3}});
  auto d = step(s, msg(body, 2));
  CAPTURE(body.dump());
  REQUIRE(types(d) ==
          std::vector<event_type>{event_type::message_received, event_type::message_rejected});
  CHECK(d.events[1].data.at("code") == "invalid_message");
  CHECK(d.events[1].data.at("id") == "m2");
  auto r = only_reply(d);
  CHECK_FALSE(r.ok);
  CHECK(r.code == "invalid_message");
  CHECK_FALSE(r.message.empty());
  CHECK(total(s) == 3);
  CHECK(s.timers.empty());
}

TEST_CASE("an add that would overflow the total is rejected and leaves it unchanged") {
  constexpr int64_t max = std::numeric_limits<int64_t>::max();
  constexpr int64_t min = std::numeric_limits<int64_t>::min();
  json start, body;
  SUBCASE("above the maximum") {
    start = {{"total", max}};
    body = {{"add", 1}};
  }
  SUBCASE("below the minimum") {
    start = {{"total", -1}};
    body = {{"add", min}};
  }
  SUBCASE("an add that does not fit in int64") {
    start = {{"total", 0}};
    body = {{"add", uint64_t(max) + 1}};
  }
  auto s = spawned(start);
  int64_t before = total(s);
  auto d = step(s, msg(body));
  CHECK(types(d) ==
        std::vector<event_type>{event_type::message_received, event_type::message_rejected});
  auto r = only_reply(d);
  CHECK_FALSE(r.ok);
  CHECK(r.code == "invalid_message");
  CHECK(total(s) == before);
}

TEST_CASE("an add up to the exact limit is accepted") {
  constexpr int64_t max = std::numeric_limits<int64_t>::max();
  auto s = spawned({{"total", max - 1}});
  auto d = step(s, msg({{"add", 1}}));
  CHECK(only_reply(d).ok);
  CHECK(total(s) == max);
}

TEST_CASE("a delayed add sets a timer that adds once when it fires") {
  auto s = spawned({{"total", 10}});
  auto d = step(s, msg({{"add", 7}, {"delay_ms", 250}}));
  REQUIRE(types(d) == std::vector<event_type>{event_type::message_received, event_type::timer_set});
  const uint64_t id = d.events[1].data.at("timer").get<uint64_t>();
  CHECK(d.events[1].data.at("due_ms") == now + 250);
  CHECK(d.events[1].data.at("payload") == json{{"add", 7}});
  auto sets = effects_of<a::set_timer_effect>(d);
  REQUIRE(sets.size() == 1);
  CHECK(sets[0].timer_id == id);
  CHECK(sets[0].due_ms == now + 250);
  CHECK(sets[0].payload == json{{"add", 7}});
  auto r = only_reply(d);
  CHECK(r.ok);
  CHECK(r.body.at("timer") == id);
  CHECK(r.body.at("due_ms") == now + 250);
  CHECK(total(s) == 10);  // nothing added yet
  REQUIRE(s.timers.count(id) == 1);
  CHECK(s.timers.at(id).due_ms == now + 250);
  CHECK(s.next_timer_id == id + 1);

  SUBCASE("the timer fires: timer_fired, state_changed and a cancel effect") {
    auto f = step(s, a::timer_input{id}, now + 250);
    CHECK(types(f) == std::vector<event_type>{event_type::timer_fired, event_type::state_changed});
    CHECK(f.events[0].data == json{{"timer", id}});
    CHECK(f.events[1].data == json{{"total", 17}});
    auto cancels = effects_of<a::cancel_timer_effect>(f);
    REQUIRE(cancels.size() == 1);
    CHECK(cancels[0].timer_id == id);
    CHECK(cancels[0].due_ms == now + 250);
    CHECK(total(s) == 17);
    CHECK(s.timers.empty());

    SUBCASE("a second firing of the same timer does nothing") {
      auto before = s;
      auto again = a::decide(counter(), s, a::timer_input{id}, now + 300);
      CHECK(again.events.empty());
      CHECK(again.effects.empty());
      apply_all(s, again);
      CHECK(same_state(s, before));
      CHECK(total(s) == 17);
    }
  }
  SUBCASE("two timers get distinct ids") {
    auto d2 = step(s, msg({{"add", 1}, {"delay_ms", 0}}, 2));
    auto sets2 = effects_of<a::set_timer_effect>(d2);
    REQUIRE(sets2.size() == 1);
    CHECK(sets2[0].timer_id != id);
    CHECK(sets2[0].due_ms == now);
    CHECK(s.timers.size() == 2);
  }
  SUBCASE("an unknown timer id does nothing") {
    auto u = a::decide(counter(), s, a::timer_input{id + 100}, now);
    CHECK(u.events.empty());
    CHECK(u.effects.empty());
  }
}

TEST_CASE(
    "terminate records terminated, cancels timers, and later messages are recorded and refused") {
  auto s = spawned({{"total", 2}});
  step(s, msg({{"add", 1}, {"delay_ms", 1000}}));
  REQUIRE(s.timers.size() == 1);
  const uint64_t timer_id = s.timers.begin()->first;

  auto d = step(s, a::terminate_input{"acct/admin"});
  CHECK(types(d) == std::vector<event_type>{event_type::terminated});
  CHECK(d.events[0].data == json{{"by", "acct/admin"}});
  auto cancels = effects_of<a::cancel_timer_effect>(d);
  REQUIRE(cancels.size() == 1);
  CHECK(cancels[0].timer_id == timer_id);
  CHECK(only_reply(d).ok);
  CHECK(s.status == keel::agent_status::terminated);
  CHECK(s.timers.empty());

  auto before = s;
  SUBCASE("a message") {
    auto m = a::decide(counter(), s, msg({{"add", 5}}, 9), now);
    CHECK(types(m) ==
          std::vector<event_type>{event_type::message_received, event_type::message_rejected});
    auto r = only_reply(m);
    CHECK_FALSE(r.ok);
    CHECK(r.code == "conflict");
  }
  SUBCASE("a signal") {
    auto m = a::decide(counter(), s, a::signal_input{9, "reset", nullptr}, now);
    CHECK(types(m) ==
          std::vector<event_type>{event_type::signal_received, event_type::message_rejected});
    CHECK(only_reply(m).code == "conflict");
  }
  SUBCASE("a second terminate") {
    auto m = a::decide(counter(), s, a::terminate_input{"x"}, now);
    CHECK(m.events.empty());
    CHECK(only_reply(m).code == "conflict");
  }
  SUBCASE("the cancelled timer") {
    auto m = a::decide(counter(), s, a::timer_input{timer_id}, now + 1000);
    CHECK(m.events.empty());
  }
  CHECK(same_state(s, before));
  CHECK(total(s) == 2);  // the delayed add never fired
}

TEST_CASE("signals are recorded; reset sets the total to 0") {
  auto s = spawned({{"total", 99}});
  SUBCASE("reset") {
    auto d = step(s, a::signal_input{5, "reset", nullptr});
    CHECK(types(d) ==
          std::vector<event_type>{event_type::signal_received, event_type::state_changed});
    CHECK(d.events[0].data.at("signal") == "reset");
    CHECK(d.events[1].data == json{{"total", 0}});
    CHECK(only_reply(d).body == json{{"total", 0}});
    CHECK(total(s) == 0);
    CHECK(s.last_arrival == 5);
  }
  SUBCASE("the node refuses any other signal before it is recorded") {
    auto poke = a::check_signal_name(counter(), "poke", "acct/a");
    CHECK(poke.error_code() == keel::code::invalid_argument);
    CHECK(poke.message() == "agent acct/a (type counter) takes no signal 'poke'; it takes reset");
    CHECK(a::check_signal_name(counter(), "rest", "acct/a").message() ==
          "agent acct/a (type counter) takes no signal 'rest' (did you mean reset?); it takes "
          "reset");
    CHECK(a::check_signal_name(counter(), "reset", "acct/a").is_ok());
    CHECK(
        a::check_signal_now(counter(), s, a::signal_input{0, "reset", nullptr}, "acct/a").is_ok());
  }
  SUBCASE("another signal, recorded before the node refused them, only records itself") {
    auto d = step(s, a::signal_input{6, "poke", {{"x", 1}}});
    CHECK(types(d) == std::vector<event_type>{event_type::signal_received});
    CHECK(d.events[0].data.at("payload") == json{{"x", 1}});
    CHECK(only_reply(d).ok);
    CHECK(total(s) == 99);
    CHECK(s.last_arrival == 6);
  }
}

TEST_CASE("decide is pure: equal inputs give equal decisions and the state is not touched") {
  auto s = spawned({{"total", 4}});
  step(s, msg({{"add", 1}, {"delay_ms", 10}}, 1));
  const uint64_t timer_id = s.timers.begin()->first;
  const std::vector<a::input> inputs = {
      msg({{"add", 3}}, 2),
      msg({{"get", true}}, 3),
      msg({{"bogus", true}}, 4),
      msg({{"add", 2}, {"delay_ms", 5}}, 5),
      a::signal_input{6, "reset", nullptr},
      a::signal_input{7, "other", {{"p", 1}}},
      a::timer_input{timer_id},
      a::timer_input{timer_id + 50},
      a::terminate_input{"admin"},
      a::spawn_input{"counter", {{"total", 8}}},
  };
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    CAPTURE(i);
    const a::agent_state before = s;
    auto d1 = a::decide(counter(), s, inputs[i], now);
    auto d2 = a::decide(counter(), s, inputs[i], now);
    CHECK(to_json(d1) == to_json(d2));
    CHECK(d1.events == d2.events);
    CHECK(same_state(s, before));
    // A different time changes only timestamps and due times.
    auto later = a::decide(counter(), s, inputs[i], now + 1);
    CHECK(later.events.size() == d1.events.size());
    for (const auto& e : later.events) CHECK(e.time_ms == now + 1);
  }
}

TEST_CASE("folding the events of a long random run reproduces the step-by-step state") {
  std::mt19937_64 rng(20240611);
  a::agent_state live;
  std::vector<a::event> ledger;
  int64_t model_total = 0;
  std::map<uint64_t, int64_t> model_timers;  // timer id -> amount
  int64_t clock = now;
  uint64_t arrival = 0;

  auto run = [&](const a::input& in) {
    auto d = a::decide(counter(), live, in, clock);
    for (const auto& e : d.events) {
      a::apply(counter(), live, e);
      ledger.push_back(e);
    }
    return d;
  };
  run(a::spawn_input{"counter", nullptr});

  for (int i = 0; i < 3000; ++i) {
    clock += static_cast<int64_t>(rng() % 50);
    switch (rng() % 8) {
      case 0:
      case 1: {
        int64_t n = static_cast<int64_t>(rng() % 2001) - 1000;
        run(msg({{"add", n}}, ++arrival));
        model_total += n;
        break;
      }
      case 2:
        CHECK(only_reply(run(msg({{"get", true}}, ++arrival))).body ==
              json{{"total", model_total}});
        break;
      case 3:
        run(msg({{"nonsense", static_cast<int>(rng() % 3)}}, ++arrival));
        break;
      case 4: {
        int64_t n = static_cast<int64_t>(rng() % 100);
        auto d = run(msg({{"add", n}, {"delay_ms", rng() % 1000}}, ++arrival));
        auto sets = effects_of<a::set_timer_effect>(d);
        REQUIRE(sets.size() == 1);
        model_timers[sets[0].timer_id] = n;
        break;
      }
      case 5:
        if (!model_timers.empty()) {
          auto it = model_timers.begin();
          std::advance(it, static_cast<long>(rng() % model_timers.size()));
          run(a::timer_input{it->first});
          model_total += it->second;
          model_timers.erase(it);
        } else {
          run(a::timer_input{rng() % 10 + 1000000});
        }
        break;
      case 6:
        if (rng() % 4 == 0) {
          run(a::signal_input{++arrival, "reset", nullptr});
          model_total = 0;
        } else {
          run(a::signal_input{++arrival, "noise", nullptr});
        }
        break;
      case 7:
        if (!model_timers.empty() && rng() % 3 == 0) {  // a duplicate firing
          uint64_t fired = model_timers.begin()->first;
          run(a::timer_input{fired});
          model_total += model_timers.begin()->second;
          model_timers.erase(model_timers.begin());
          CHECK(run(a::timer_input{fired}).events.empty());
        }
        break;
    }
    if (total(live) != model_total) {
      CAPTURE(i);
      FAIL("the counter's total diverged from the model");
    }
  }
  CHECK(total(live) == model_total);
  CHECK(live.timers.size() == model_timers.size());
  CHECK(live.last_seq == ledger.size());
  CHECK(live.last_arrival == arrival);

  a::agent_state folded;
  for (const auto& e : ledger) a::apply(counter(), folded, e);
  CHECK(same_state(folded, live));

  SUBCASE("folding from a snapshot taken half way gives the same state") {
    a::agent_state half;
    std::size_t mid = ledger.size() / 2;
    for (std::size_t i = 0; i < mid; ++i) a::apply(counter(), half, ledger[i]);
    auto restored = a::state_from_json(a::state_to_json(half), "snapshot");
    REQUIRE(restored.is_ok());
    a::agent_state resumed = *restored;
    for (std::size_t i = mid; i < ledger.size(); ++i) a::apply(counter(), resumed, ledger[i]);
    CHECK(same_state(resumed, live));
  }
}

TEST_CASE("state_to_json and state_from_json round trip the state") {
  auto s = spawned({{"total", -5}});
  step(s, msg({{"add", 3}, {"delay_ms", 100}}, 1));
  step(s, msg({{"add", 4}, {"delay_ms", 200}}, 2));
  step(s, msg({{"add", 1}}, 3));
  REQUIRE(s.timers.size() == 2);

  SUBCASE("directly") {
    auto back = a::state_from_json(a::state_to_json(s), "snapshot of acct/alice seq 6");
    REQUIRE(back.is_ok());
    CHECK(same_state(*back, s));
    // same_state itself notices a difference in a timer.
    auto other = *back;
    other.timers.begin()->second.due_ms += 1;
    CHECK_FALSE(same_state(other, s));
  }
  SUBCASE("through MessagePack, as a snapshot is stored") {
    auto bytes = keel::persistence::to_msgpack(a::state_to_json(s));
    auto j = keel::persistence::from_msgpack(bytes, "snapshot");
    REQUIRE(j.is_ok());
    auto back = a::state_from_json(*j, "snapshot");
    REQUIRE(back.is_ok());
    CHECK(same_state(*back, s));
    CHECK(total(*back) == -4);
  }
  SUBCASE("a terminated state") {
    step(s, a::terminate_input{"admin"});
    auto back = a::state_from_json(a::state_to_json(s), "snapshot");
    REQUIRE(back.is_ok());
    CHECK(same_state(*back, s));
    CHECK(back->status == keel::agent_status::terminated);
  }
}

TEST_CASE("state_from_json on garbage is corruption naming the snapshot") {
  json j = a::state_to_json(spawned());
  SUBCASE("a string") {
    j = "garbage";
  }
  SUBCASE("null") {
    j = nullptr;
  }
  SUBCASE("an array") {
    j = json::array({1, 2});
  }
  SUBCASE("a missing field") {
    j.erase("last_seq");
  }
  SUBCASE("a wrongly typed field") {
    j["status"] = 3;
  }
  SUBCASE("a timer without an id") {
    j["timers"] = json::array({{{"due_ms", 1}, {"payload", nullptr}}});
  }
  SUBCASE("timers not a list") {
    j["timers"] = 5;
  }
  auto r = a::state_from_json(j, "snapshot of acct/alice seq 9");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::corruption);
  CHECK(r.error().message().find("snapshot of acct/alice seq 9") != std::string::npos);
}
