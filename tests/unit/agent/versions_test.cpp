// Agent-type versions without a node: an agent records the version it runs
// (spawned, upgraded), a replay decides each step with the version the
// ledger names, an edited spec can stand in for every recorded version,
// and the registry keeps every version of a type with one latest. Specs
// are parsed from inline JSON (a scripted model's replies inline), so each
// has its real hash; the model's and the tools' answers are fed by hand.

#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/core.hpp"
#include "agent/loop.hpp"
#include "agent/registry.hpp"
#include "agent/replay.hpp"
#include "config/agent_spec.hpp"
#include "support/decisions.hpp"

namespace a = keel::agent;
namespace c = keel::config;
using json = nlohmann::json;

namespace {

constexpr int64_t t0 = 1'700'000'000'000;

json http_tool(const std::string& name, bool idempotent, json properties) {
  json required = json::array();
  for (const auto& [k, v] : properties.items()) required.push_back(k);
  return {{"name", name},
          {"description", "the " + name + " tool"},
          {"kind", "http"},
          {"url", "http://127.0.0.1:1/" + name},
          {"idempotent", idempotent},
          {"parameters",
           {{"type", "object"},
            {"properties", std::move(properties)},
            {"required", std::move(required)},
            {"additionalProperties", false}}}};
}

json lookup_tool() {
  return http_tool("lookup", true, {{"order", {{"type", "integer"}}}});
}
json refund_tool() {
  return http_tool("refund", false,
                   {{"order", {{"type", "integer"}}}, {"amount", {{"type", "number"}}}});
}

// A refund desk on a scripted model (the replies inline, as a stored
// version holds them): refunds above `above` wait for a human.
json desk_json(double above = 100, const std::string& description = "Refunds orders.") {
  return {
      {"name", "desk"},
      {"description", description},
      {"instructions", "You handle refunds."},
      {"model",
       {{"provider", "scripted"}, {"script", {{"replies", json::array({{{"content", "ok"}}})}}}}},
      {"tools", json::array({lookup_tool(), refund_tool()})},
      {"guardrails",
       {{"rules", json::array({{{"name", "big-refund"},
                                {"tool", "refund"},
                                {"pointer", "/amount"},
                                {"above", above},
                                {"action", "require_approval"},
                                {"reason", "refunds above the limit need a human"}}})}}}};
}

std::shared_ptr<const c::agent_spec> parse(const json& j) {
  auto r = c::parse_agent_spec(j, "desk.json", "");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return *r;
}

// The versions of "desk" that a type_registry holds, as a replay looks them
// up (what the node's catalog does with its registry).
class registry_versions final : public a::type_versions {
 public:
  explicit registry_versions(const a::type_registry& r, std::string name = "desk")
      : r_(r), name_(std::move(name)) {}
  const a::agent_type* find(std::string_view version) const override {
    return r_.find(name_, version);
  }

 private:
  const a::type_registry& r_;
  std::string name_;
};

// Records an agent as the node does: each decision is taken by the version
// the agent runs (a spawn by the version it names), its events applied and
// kept under consecutive seqs.
struct recorder {
  const a::type_versions& versions;
  a::agent_state s;
  std::vector<a::recorded_event> ledger;
  int64_t now = t0;
  uint64_t arrival = 0;

  explicit recorder(const a::type_versions& vs) : versions(vs) {}

  const a::agent_type& running(const a::input& in) const {
    const std::string v = std::holds_alternative<a::spawn_input>(in)
                              ? std::get<a::spawn_input>(in).version
                              : s.version;
    const a::agent_type* t = versions.find(v);
    REQUIRE_MESSAGE(t != nullptr, "no version " << v);
    return *t;
  }
  // `by`: the type that decides, when not the version the agent runs.
  a::decision step(const a::input& in, const a::agent_type* by = nullptr) {
    now += 10;
    const a::agent_type& t = by ? *by : running(in);
    auto d = a::decide_guarded(t, s, in, now);
    for (auto& e : d.events) {
      a::apply(t, s, e);
      ledger.push_back({s.last_seq, e});
    }
    return d;
  }
  a::decision spawn(std::string_view version) {
    return step(a::spawn_input{"desk", nullptr, std::string(version)});
  }
  a::decision message(const std::string& text) {
    ++arrival;
    return step(a::message_input{arrival, "m" + std::to_string(arrival), "client", json(text)});
  }
  a::decision signal(const std::string& name, json payload = nullptr) {
    ++arrival;
    return step(a::signal_input{arrival, name, std::move(payload)});
  }
  a::decision result(uint64_t effect, json r) {
    return step(a::effect_result_input{effect, 1, true, std::move(r), {}, false});
  }
  a::decision upgrade(std::string_view to, const std::string& by = "ops",
                      const std::string& reason = "") {
    return step(a::upgrade_input{std::string(to), by, reason});
  }
};

using keel::test::effects_of;
uint64_t model_of(const a::decision& d) {
  auto m = effects_of<a::model_call_effect>(d);
  REQUIRE(m.size() == 1);
  return m[0].effect;
}
uint64_t tool_of(const a::decision& d) {
  auto t = effects_of<a::tool_call_effect>(d);
  REQUIRE(t.size() == 1);
  return t[0].effect;
}

json reply(const std::string& text) {
  return {{"content", text},
          {"tool_calls", json::array()},
          {"finish_reason", "stop"},
          {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 5}}}};
}
json call(const std::string& tool, json args) {
  return {{"content", nullptr},
          {"tool_calls", json::array({{{"id", "c0"}, {"name", tool}, {"arguments", args}}})},
          {"finish_reason", "tool_calls"},
          {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 5}}}};
}

// One turn: the model asks to refund `amount` on order 9. Returns the
// decision that followed the model's call (it waits for approval, or
// starts the refund).
a::decision ask_refund(recorder& rec, double amount) {
  auto m = model_of(rec.message("refund order 9"));
  return rec.result(m, call("refund", {{"order", 9}, {"amount", amount}}));
}
// Ends a turn whose refund runs as effect `r`.
void finish_refund(recorder& rec, uint64_t r, const std::string& answer) {
  auto m = model_of(rec.result(r, {{"refunded", true}}));
  rec.result(m, reply(answer));
}

uint64_t seq_of(const std::vector<a::recorded_event>& ledger, a::event_type t, int nth = 0) {
  for (const auto& e : ledger)
    if (e.ev.type == t && nth-- == 0) return e.seq;
  FAIL("no such event in the ledger");
  return 0;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string phase(const a::type_versions& vs, const a::agent_state& s) {
  return vs.find(s.version)->phase(s);
}

}  // namespace

// --- recording and replaying versions -------------------------------------------

TEST_CASE("a ledger that names two versions replays when both are known, and not otherwise") {
  auto v100 = parse(desk_json(100));
  auto v200 = parse(desk_json(200));
  REQUIRE(v100->hash != v200->hash);
  a::type_registry both;
  REQUIRE(both.add(v100).is_ok());
  REQUIRE(both.add(v200, false).is_ok());
  registry_versions versions(both);

  recorder rec(versions);
  rec.spawn(v100->hash);
  CHECK(rec.s.version == v100->hash);
  CHECK(rec.ledger[0].ev.data["version"] == v100->hash);
  // Version 100 makes the refund of 120 wait for a human...
  ask_refund(rec, 120);
  REQUIRE(phase(versions, rec.s) == "waiting_approval");
  // ... and the agent moves to version 200 while it waits.
  rec.upgrade(v200->hash);
  CHECK(rec.s.version == v200->hash);
  const uint64_t upgraded = rec.s.last_seq;
  CHECK(seq_of(rec.ledger, a::event_type::upgraded) == upgraded);
  auto r = tool_of(rec.signal("approve", {{"by", "maria"}}));
  finish_refund(rec, r, "Refunded 120.");
  // Version 200 refunds 150 without asking.
  auto d = ask_refund(rec, 150);
  CHECK(phase(versions, rec.s) != "waiting_approval");
  finish_refund(rec, tool_of(d), "Refunded 150.");
  REQUIRE(rec.s.loop->last->answer.value() == "Refunded 150.");

  SUBCASE("with both versions it is identical") {
    auto res = a::replay_strict(versions, {}, rec.ledger);
    if (res.diverged) MESSAGE("diverged at ", res.diverged->seq, ": ", res.diverged->reason);
    CHECK(res.identical);
    CHECK(res.events == rec.ledger.size());
    CHECK(res.state == rec.s);
    CHECK(res.state.version == v200->hash);
  }
  SUBCASE("without the version it moved to, it diverges where that version begins") {
    a::type_registry first_only;
    REQUIRE(first_only.add(v100).is_ok());
    auto res = a::replay_strict(registry_versions(first_only), {}, rec.ledger);
    CHECK_FALSE(res.identical);
    REQUIRE(res.diverged);
    CHECK(res.diverged->seq == upgraded + 1);
    CHECK_MESSAGE(has(res.diverged->reason, v200->hash), res.diverged->reason);
    CHECK_MESSAGE(has(res.diverged->reason, "is not on this node"), res.diverged->reason);
    CHECK(res.events == upgraded);
  }
  SUBCASE("without the version it was spawned with, it diverges at the spawn") {
    a::type_registry second_only;
    REQUIRE(second_only.add(v200).is_ok());
    auto res = a::replay_strict(registry_versions(second_only), {}, rec.ledger);
    REQUIRE(res.diverged);
    CHECK(res.diverged->seq == 1);
    CHECK_MESSAGE(has(res.diverged->reason, v100->hash), res.diverged->reason);
  }
  SUBCASE("one version deciding every step decides otherwise after the upgrade") {
    const a::agent_type* only100 = both.find("desk", v100->hash);
    REQUIRE(only100);
    auto res = a::replay_strict(*only100, {}, rec.ledger);
    REQUIRE(res.diverged);
    CHECK(res.diverged->seq > upgraded);
    CHECK_MESSAGE(res.diverged->recorded["type"] == "guardrail_decided",
                  res.diverged->recorded.dump());
  }
}

TEST_CASE("a ledger written before versions were recorded runs the version of its initial data") {
  auto v100 = parse(desk_json(100));
  auto v200 = parse(desk_json(200));
  a::type_registry reg;
  REQUIRE(reg.add(v100).is_ok());
  registry_versions versions(reg);
  recorder rec(versions);
  // The release before versions spawned without naming one: the loop's
  // initial data (ctl.spec_hash) is all that tells.
  rec.step(a::spawn_input{"desk", nullptr, ""}, reg.find("desk"));
  // Found through ctl.spec_hash: the recorder needs the version to go on.
  REQUIRE(rec.s.version == v100->hash);
  CHECK_FALSE(rec.ledger[0].ev.data.contains("version"));
  CHECK(rec.ledger[0].ev.data["data"]["ctl"]["spec_hash"] == v100->hash);
  CHECK(a::version_of(a::agent_state{}, rec.ledger[0].ev) == v100->hash);
  ask_refund(rec, 120);
  auto r = tool_of(rec.signal("approve", {{"by", "maria"}}));
  finish_refund(rec, r, "Refunded 120.");

  SUBCASE("a node with that version and a newer latest replays it identically") {
    REQUIRE(reg.add(v200).is_ok());  // the edited file: the latest
    auto res = a::replay_strict(versions, {}, rec.ledger);
    CHECK(res.identical);
    CHECK(res.state == rec.s);
    CHECK(res.state.version == v100->hash);
  }
  SUBCASE("a node that has only the edit cannot replay it, and says which version is missing") {
    a::type_registry edited;
    REQUIRE(edited.add(v200).is_ok());
    auto res = a::replay_strict(registry_versions(edited), {}, rec.ledger);
    REQUIRE(res.diverged);
    CHECK(res.diverged->seq == 1);
    CHECK_MESSAGE(has(res.diverged->reason, v100->hash), res.diverged->reason);
  }
  SUBCASE("a state saved before versions existed runs the version of its data") {
    json j = a::state_to_json(rec.s);
    CHECK(j["version"] == v100->hash);
    j.erase("version");
    auto back = a::state_from_json(j, "old state");
    REQUIRE(back.is_ok());
    CHECK(back->version == v100->hash);
    CHECK(*back == rec.s);
  }
}

// --- an edited spec standing in for the recorded versions -----------------------

TEST_CASE(
    "an edited spec standing in for every recorded version shows where it decides otherwise") {
  auto v100 = parse(desk_json(100));
  a::type_registry reg;
  REQUIRE(reg.add(v100).is_ok());
  registry_versions versions(reg);
  recorder rec(versions);
  rec.spawn(v100->hash);
  ask_refund(rec, 120);
  REQUIRE(phase(versions, rec.s) == "waiting_approval");
  auto r = tool_of(rec.signal("approve", {{"by", "maria"}}));
  finish_refund(rec, r, "Refunded 120.");
  REQUIRE(a::replay_strict(versions, {}, rec.ledger).identical);

  SUBCASE("a raised approval threshold diverges at the refund's guardrail decision") {
    a::stand_in_versions candidate(parse(desk_json(200)));
    auto res = a::replay_strict(candidate, {}, rec.ledger);
    CHECK_FALSE(res.identical);
    REQUIRE(res.diverged);
    const json& recorded = res.diverged->recorded;
    CHECK_MESSAGE(recorded["type"] == "guardrail_decided", recorded.dump());
    CHECK(recorded["data"]["tool"] == "refund");
    CHECK(res.diverged->seq == recorded["seq"].get<uint64_t>());
    // Everything before it, the spawn with its recorded version included,
    // replayed the same.
    CHECK(res.events == res.diverged->seq - 1);
  }
  SUBCASE("a changed description decides everything the same") {
    auto edited = parse(desk_json(100, "Refunds orders, politely."));
    REQUIRE(edited->hash != v100->hash);
    a::stand_in_versions candidate(edited);
    auto res = a::replay_strict(candidate, {}, rec.ledger);
    if (res.diverged) MESSAGE("diverged at ", res.diverged->seq, ": ", res.diverged->reason);
    CHECK(res.identical);
    CHECK(res.state == rec.s);
  }
  SUBCASE("the stand-in records the version it stands in for") {
    auto edited = parse(desk_json(300));
    a::stand_in_versions candidate(edited);
    const a::agent_type* t = candidate.find(v100->hash);
    REQUIRE(t);
    CHECK(t->version() == v100->hash);
    CHECK(candidate.find(v100->hash) == t);
    const a::agent_type* other = candidate.find("abcdef");
    REQUIRE(other);
    CHECK(other->version() == "abcdef");
    CHECK(other != t);
    auto data = t->initial_data(nullptr);
    REQUIRE(data.is_ok());
    CHECK((*data)["ctl"]["spec_hash"] == v100->hash);
  }
}

// --- the upgrade decision --------------------------------------------------------

TEST_CASE("an upgrade is an upgraded event that changes the version the agent runs") {
  auto v100 = parse(desk_json(100));
  auto v200 = parse(desk_json(200));
  a::loop_type t100(v100);
  a::agent_state s;
  for (auto& e : a::decide(t100, s, a::spawn_input{"desk", nullptr, v100->hash}, t0).events)
    a::apply(t100, s, e);
  REQUIRE(s.version == v100->hash);
  const uint64_t seq = s.last_seq;

  SUBCASE("by an operator") {
    auto d = a::decide(t100, s, a::upgrade_input{v200->hash, "ops", ""}, t0 + 5);
    REQUIRE(d.events.size() == 1);
    CHECK(d.events[0].type == a::event_type::upgraded);
    CHECK(d.events[0].time_ms == t0 + 5);
    CHECK(d.events[0].data == json{{"from", v100->hash}, {"to", v200->hash}, {"by", "ops"}});
    auto replies = effects_of<a::reply_effect>(d);
    REQUIRE(replies.size() == 1);
    CHECK(replies[0].ok);
    CHECK(replies[0].body == json{{"from", v100->hash}, {"to", v200->hash}});
    a::apply(t100, s, d.events[0]);
    CHECK(s.version == v200->hash);
    CHECK(s.last_seq == seq + 1);
    // The loop's data keeps what it was spawned with.
    CHECK(s.loop->spec_hash.value() == v100->hash);
  }
  SUBCASE("by the node, with its reason") {
    auto d = a::decide(t100, s, a::upgrade_input{v200->hash, "keel", "follow_latest"}, t0 + 5);
    REQUIRE(d.events.size() == 1);
    CHECK(d.events[0].data["by"] == "keel");
    CHECK(d.events[0].data["reason"] == "follow_latest");
  }
  SUBCASE("to the version it runs already: a conflict, nothing recorded") {
    auto d = a::decide(t100, s, a::upgrade_input{v100->hash, "ops", ""}, t0 + 5);
    CHECK(d.events.empty());
    auto replies = effects_of<a::reply_effect>(d);
    REQUIRE(replies.size() == 1);
    CHECK_FALSE(replies[0].ok);
    CHECK(replies[0].code == "conflict");
    CHECK_MESSAGE(has(replies[0].message, "already runs"), replies[0].message);
  }
  SUBCASE("of a terminated agent: a conflict, nothing recorded") {
    for (auto& e : a::decide(t100, s, a::terminate_input{"ops"}, t0 + 5).events)
      a::apply(t100, s, e);
    REQUIRE(s.status == keel::agent_status::terminated);
    auto d = a::decide(t100, s, a::upgrade_input{v200->hash, "ops", ""}, t0 + 10);
    CHECK(d.events.empty());
    auto replies = effects_of<a::reply_effect>(d);
    REQUIRE(replies.size() == 1);
    CHECK_FALSE(replies[0].ok);
    CHECK(replies[0].code == "conflict");
    CHECK_MESSAGE(has(replies[0].message, "terminated"), replies[0].message);
    CHECK(s.version == v100->hash);
  }
  SUBCASE("the event's name and code") {
    CHECK(a::to_string(a::event_type::upgraded) == "upgraded");
    auto code = a::event_type_from_code(static_cast<uint16_t>(a::event_type::upgraded));
    REQUIRE(code);
    CHECK(*code == a::event_type::upgraded);
  }
}

TEST_CASE("a version cannot take over an agent that waits in a call of a tool it lacks") {
  auto full = parse(desk_json(100));
  json no_refund_json = desk_json(100, "Looks orders up only.");
  no_refund_json["tools"] = json::array({lookup_tool()});
  no_refund_json.erase("guardrails");
  auto no_refund = parse(no_refund_json);
  json no_lookup_json = desk_json(100, "Refunds only.");
  no_lookup_json["tools"] = json::array({refund_tool()});
  auto no_lookup = parse(no_lookup_json);
  a::type_registry reg;
  REQUIRE(reg.add(full).is_ok());
  registry_versions versions(reg);
  const a::loop_type t_full(full), t_no_refund(no_refund), t_no_lookup(no_lookup);

  recorder rec(versions);
  rec.spawn(full->hash);
  CHECK(t_no_refund.can_take_over(rec.s).is_ok());  // idle

  SUBCASE("waiting for approval of a refund") {
    ask_refund(rec, 120);
    REQUIRE(phase(versions, rec.s) == "waiting_approval");
    auto st = t_no_refund.can_take_over(rec.s);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.error_code() == keel::code::conflict);
    CHECK_MESSAGE(has(st.message(), "in a call of tool refund"), st.message());
    CHECK_MESSAGE(has(st.message(), no_refund->hash), st.message());
    CHECK(t_full.can_take_over(rec.s).is_ok());
    CHECK(t_no_lookup.can_take_over(rec.s).is_ok());
  }
  SUBCASE("while a lookup runs") {
    auto m = model_of(rec.message("where is order 9?"));
    CHECK(t_no_refund.can_take_over(rec.s).is_ok());  // waits for the model
    tool_of(rec.result(m, call("lookup", {{"order", 9}})));
    auto st = t_no_lookup.can_take_over(rec.s);
    REQUIRE_FALSE(st.is_ok());
    CHECK(st.error_code() == keel::code::conflict);
    CHECK_MESSAGE(has(st.message(), "tool lookup"), st.message());
    CHECK(t_no_refund.can_take_over(rec.s).is_ok());
  }
}

// --- the registry -----------------------------------------------------------------

TEST_CASE("the type registry keeps every version of a type, each once, with one latest") {
  auto v1 = parse(desk_json(100));
  auto v2 = parse(desk_json(200));
  auto v3 = parse(desk_json(100, "A third."));
  a::type_registry reg;
  CHECK(reg.find("desk") == nullptr);
  CHECK(reg.versions("desk").empty());

  auto first = reg.add(v1, false, 111);  // the first version is the latest anyway
  REQUIRE(first.is_ok());
  CHECK(first->is_new);
  REQUIRE(first->type);
  CHECK(first->type->version() == v1->hash);
  CHECK(reg.find("desk") == first->type);

  auto again = reg.add(parse(desk_json(100)));  // the same spec parsed again
  REQUIRE(again.is_ok());
  CHECK_FALSE(again->is_new);
  CHECK(again->type == first->type);

  auto second = reg.add(v2, false, 222);
  REQUIRE(second.is_ok());
  CHECK(second->is_new);
  CHECK(reg.find("desk") == first->type);  // not made the latest
  CHECK(reg.find("desk", v2->hash) == second->type);
  CHECK(reg.find("desk", v1->hash) == first->type);
  CHECK(reg.find("desk", "0123456789ab") == nullptr);
  CHECK(reg.find("desk", "") == nullptr);

  auto third = reg.add(v3, true, 333);
  REQUIRE(third.is_ok());
  CHECK(reg.find("desk") == third->type);
  // A known version made the latest again is not added twice.
  auto back = reg.add(v1, true, 444);
  REQUIRE(back.is_ok());
  CHECK_FALSE(back->is_new);
  CHECK(reg.find("desk") == first->type);

  auto vs = reg.versions("desk");
  REQUIRE(vs.size() == 3);
  CHECK(vs[0].hash == v1->hash);
  CHECK(vs[1].hash == v2->hash);
  CHECK(vs[2].hash == v3->hash);
  CHECK(vs[0].latest);
  CHECK_FALSE(vs[1].latest);
  CHECK_FALSE(vs[2].latest);
  CHECK(vs[0].order < vs[1].order);
  CHECK(vs[1].order < vs[2].order);
  CHECK(vs[0].added_ms == 111);  // when it was first added
  CHECK(vs[1].added_ms == 222);
  CHECK(vs[2].added_ms == 333);
  CHECK(vs[1].spec->hash == v2->hash);

  // Another type's versions are its own.
  json other = desk_json(100);
  other["name"] = "till";
  auto till = parse(other);
  REQUIRE(reg.add(till).is_ok());
  CHECK(reg.versions("till").size() == 1);
  CHECK(reg.versions("desk").size() == 3);
  CHECK(reg.find("till", v1->hash) == nullptr);
  CHECK(reg.find("till")->version() == till->hash);
  auto names = reg.names();
  CHECK(std::find(names.begin(), names.end(), "counter") != names.end());
  CHECK(std::find(names.begin(), names.end(), "desk") != names.end());
  CHECK(std::find(names.begin(), names.end(), "till") != names.end());

  // The built-in type has one version, "".
  const a::agent_type* counter = reg.find("counter");
  REQUIRE(counter);
  CHECK(counter->version().empty());
  CHECK(reg.find("counter", "") == counter);
  CHECK(reg.find("counter", v1->hash) == nullptr);
  CHECK(reg.versions("counter").empty());
  auto builtin = std::make_shared<c::agent_spec>(*v1);
  builtin->name = "counter";
  auto refused = reg.add(builtin);
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.error().error_code() == keel::code::already_exists);
}
