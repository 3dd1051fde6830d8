// Agent-type versions end to end: real keeld processes with the example
// refund desk (examples/agents/refund-desk.json: a refund of 120 needs a
// human's approval above 100). Every spec a node loads is a version (its
// hash); an agent runs the version it was spawned with across edits and
// SIGKILL until it is upgraded; replay, fork and compaction use the version
// the ledger names; PUT/GET /v1/types register and list versions; a spec
// can be tried on recorded runs (replay --spec, eval --spec); follow_latest
// moves idle agents. A data dir of the release before versions
// (tests/fixtures/unversioned-types.tar.gz) loads and goes on. Every case
// ends with the strict replay check of loop_node.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "support/cli_runner.hpp"
#include "support/loop_node.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::loop;
using keel::test::cli::run_keel;
using keel::test::cli::said;
namespace fs = std::filesystem;

namespace {

const std::string refunded = "Refunded 120 on order 9 for customer 42 (refund r-9).";

fs::path examples() {
  return fs::path(KEEL_SOURCE_DIR) / "examples";
}
json example_spec() {
  return read_json(examples() / "agents" / "refund-desk.json");
}
json example_script() {
  return read_json(examples() / "scripts" / "refund-desk.json");
}

// The example's layout in the node's dir (agents/ and scripts/ side by
// side), with `spec` as agents/refund-desk.json.
void write_desk(loop_node& n, const json& spec) {
  write_json(n.dir() / "agents" / "refund-desk.json", spec);
  write_json(n.dir() / "scripts" / "refund-desk.json", example_script());
}

json with_threshold(json spec, double above) {
  spec["guardrails"]["rules"][0]["above"] = above;
  return spec;
}
json with_description(json spec, const std::string& d) {
  spec["description"] = d;
  return spec;
}
// As a node takes a spec over the API: the scripted model's replies inline.
json inline_script(json spec) {
  spec["model"]["script"] = example_script();
  return spec;
}
// The desk without the refund tool (and so without its rule).
json without_refund(json spec) {
  json tools = json::array();
  for (const auto& t : spec["tools"])
    if (t["name"] == "lookup_order") tools.push_back(t);
  spec["tools"] = tools;
  spec.erase("guardrails");
  return spec;
}

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

std::string error_message(const answer& a) {
  return a.body.is_object() && a.body["error"].is_object() ? a.body["error"].value("message", "")
                                                           : std::string();
}

std::string version_of(loop_node& n, const std::string& agent) {
  return n.view(agent).value("version", "");
}

answer put_type(loop_node& n, const std::string& type, const json& spec) {
  return n.call("PUT", "/v1/types/" + type, spec.dump());
}
// PUT that must register a version (201, or 200 when known); its hash.
std::string register_version(loop_node& n, const json& spec) {
  auto r = put_type(n, spec["name"].get<std::string>(), spec);
  REQUIRE_MESSAGE((r.status == 201 || r.status == 200), r.raw);
  return r.body["version"].get<std::string>();
}

// GET /v1/types/{type}/versions: the versions in the order added.
json versions(loop_node& n, const std::string& type = "refund-desk") {
  auto r = n.call("GET", "/v1/types/" + type + "/versions");
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  CHECK(r.body["name"] == type);
  return r.body["versions"];
}
std::vector<std::string> hashes(const json& vs) {
  std::vector<std::string> out;
  for (const auto& v : vs) out.push_back(v["version"].get<std::string>());
  return out;
}
std::string latest_of(loop_node& n, const std::string& type = "refund-desk") {
  auto r = n.call("GET", "/v1/types/" + type);
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  CHECK(r.body["latest"] == true);
  return r.body["version"].get<std::string>();
}

answer upgrade(loop_node& n, const std::string& agent, const json& body) {
  return n.post(loop_node::path(agent) + "/upgrade", body);
}

json replay(loop_node& n, const std::string& agent, const json& body = json::object()) {
  auto r = n.post(loop_node::path(agent) + "/replay", body);
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  return r.body;
}
void check_replays_identically(loop_node& n, const std::string& agent) {
  json r = replay(n, agent);
  CHECK_MESSAGE(r["identical"] == true, agent << ": " << r.dump());
}

json audit(loop_node& n, const std::string& agent) {
  auto r = n.call("GET", loop_node::path(agent) + "/audit");
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  CHECK_MESSAGE(r.body["intact"] == true, agent << ": " << r.raw);
  return r.body;
}

uint64_t seq_of(const std::vector<json>& events, const std::string& type, int nth = 0) {
  for (const auto& e : events)
    if (e["type"] == type && nth-- == 0) return e["seq"].get<uint64_t>();
  FAIL("no " << type << " in the ledger:\n" << summary(events));
  return 0;
}

// The agent's first turn: "Please refund order 9." It waits for approval
// (a version with the 100 threshold) or completes.
void ask_refund(loop_node& n, const std::string& agent) {
  n.send(agent, "Please refund order 9.");
}
// Approves the refund the agent waits for; waits for turn `turns` to end
// with the refund done.
void approve(loop_node& n, const std::string& agent, uint64_t turns = 1) {
  auto a = n.signal(agent, "approve", {{"by", "maria"}});
  CHECK_MESSAGE(a.body["reply"] == json({{"call", "refund"}, {"approved", true}}), a.raw);
  json v = n.wait_turns(agent, turns);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == refunded);
}

// A hex version no node here has (not a prefix of any of `known`).
std::string unknown_version(const std::vector<std::string>& known) {
  std::string v = "0123456789ab";
  for (char c = '0'; c <= '9'; ++c) {
    v[0] = c;
    bool clash = false;
    for (const auto& k : known) clash = clash || k.starts_with(v);
    if (!clash) return v;
  }
  FAIL("no unknown version found");
  return v;
}

}  // namespace

// --- 1. an edited spec moves no running agent --------------------------------

TEST_CASE(
    "an agent keeps the version it was spawned with when its spec is edited and keeld killed") {
  loop_node n;
  write_desk(n, example_spec());
  n.start();
  const std::string old_agent = "desk/old";
  n.spawn(old_agent, "refund-desk");
  ask_refund(n, old_agent);
  json v = n.wait_phase(old_agent, "waiting_approval");
  const std::string v0 = v.value("version", "");
  REQUIRE(v0.size() == 64);
  CHECK(latest_of(n) == v0);
  CHECK(of_type(n.ledger(old_agent), "spawned")[0]["version"] == v0);

  bool raised = false;
  SUBCASE("only the description changed") {
    write_desk(n, with_description(example_spec(), "Refunds orders; a human signs off above 100."));
  }
  SUBCASE("the approval threshold raised to 200") {
    write_desk(n, with_threshold(example_spec(), 200));
    raised = true;
  }
  n.kill9_and_restart();

  // Both versions are on the node; the file's edit is the latest.
  const json vs = versions(n);
  REQUIRE(vs.size() == 2);
  CHECK(vs[0]["version"] == v0);
  CHECK(vs[0]["latest"] == false);
  const std::string v1 = vs[1]["version"].get<std::string>();
  CHECK(v1 != v0);
  CHECK(vs[1]["latest"] == true);
  CHECK(latest_of(n) == v1);

  // The waiting agent stays on its version and still waits.
  v = n.view(old_agent);
  CHECK(v["version"] == v0);
  CHECK(v["phase"] == "waiting_approval");

  // A new agent gets the edit.
  const std::string new_agent = "desk/new";
  n.spawn(new_agent, "refund-desk");
  CHECK(version_of(n, new_agent) == v1);
  ask_refund(n, new_agent);
  if (raised) {
    json nv = n.wait_turns(new_agent);
    CHECK(nv["state"]["last"]["answer"] == refunded);
    CHECK(of_type(n.ledger(new_agent), "approval_requested").empty());
  } else {
    n.wait_phase(new_agent, "waiting_approval");
    approve(n, new_agent);
  }
  CHECK(version_of(n, new_agent) == v1);

  // The old agent goes on as its version decides: it asked for approval.
  approve(n, old_agent);
  CHECK(version_of(n, old_agent) == v0);
  auto events = n.ledger(old_agent);
  check_in_order(events,
                 {{"spawned", {{"version", v0}}},
                  {"guardrail_decided", {{"tool", "refund"}, {"verdict", "require_approval"}}},
                  {"approval_requested", {{"tool", "refund"}}},
                  {"signal_received", {{"signal", "approve"}}},
                  {"guardrail_decided", {{"tool", "refund"}, {"verdict", "approved"}}},
                  {"turn_completed", {{"status", "completed"}, {"answer", refunded}}}});
  CHECK(of_type(events, "upgraded").empty());
  json r = replay(n, old_agent);
  CHECK_MESSAGE(r["identical"] == true, r.dump());
  CHECK(r["events"] == events.size());

  // A fork at a step boundary before the refund's guardrail: it goes on
  // with the version its history ran, so it asks for approval again.
  const uint64_t at = seq_of(events, "model_requested", 1);
  const std::string fork = "desk/old-fork";
  auto f = n.post(loop_node::path(old_agent) + "/fork", {{"at", at}, {"as", fork}, {"by", "ops"}});
  REQUIRE_MESSAGE(f.status == 201, f.raw);
  CHECK(f.body["version"] == v0);
  n.wait_phase(fork, "waiting_approval");
  CHECK(version_of(n, fork) == v0);
  approve(n, fork);

  // Compaction at a step boundary: the state before the approval.
  const uint64_t before = seq_of(events, "signal_received");
  auto c = n.post(loop_node::path(old_agent) + "/compact", {{"before", before}});
  REQUIRE_MESSAGE(c.status == 200, c.raw);
  r = replay(n, old_agent);
  CHECK_MESSAGE(r["identical"] == true, r.dump());
  CHECK(r["from_seq"] == before);
  json a = audit(n, old_agent);
  CHECK(a["first_seq"] == before);

  n.kill9_and_restart();
  CHECK(version_of(n, old_agent) == v0);
  CHECK(version_of(n, new_agent) == v1);
  CHECK(version_of(n, fork) == v0);
  for (const auto& name : {old_agent, new_agent, fork}) {
    check_replays_identically(n, name);
    audit(n, name);
  }
}

// --- 2. keel upgrade -----------------------------------------------------------

TEST_CASE("an upgrade moves a waiting agent to another version, refused where it cannot run it") {
  loop_node n;
  write_desk(n, example_spec());
  n.start();
  const std::string agent = "desk/up";
  n.spawn(agent, "refund-desk");
  ask_refund(n, agent);
  n.wait_phase(agent, "waiting_approval");
  const std::string v0 = version_of(n, agent);
  REQUIRE_FALSE(v0.empty());

  // A version without the refund tool cannot take over a call of it.
  auto nr = put_type(n, "refund-desk", inline_script(without_refund(example_spec())));
  REQUIRE_MESSAGE(nr.status == 201, nr.raw);
  const std::string no_refund = nr.body["version"].get<std::string>();
  auto refused = upgrade(n, agent, {{"to", no_refund}, {"by", "ops"}});
  CHECK_MESSAGE(refused.status == 409, refused.raw);
  CHECK_MESSAGE(has(error_message(refused), "in a call of tool refund"), refused.raw);
  CHECK_MESSAGE(has(error_message(refused), no_refund), refused.raw);
  CHECK(version_of(n, agent) == v0);

  // One that has it can (given by a prefix of its hash).
  const std::string v2 = register_version(
      n, inline_script(with_description(with_threshold(example_spec(), 200), "Version two.")));
  auto up = upgrade(n, agent, {{"to", v2.substr(0, 12)}, {"by", "ops"}});
  REQUIRE_MESSAGE(up.status == 200, up.raw);
  CHECK(up.body == json({{"from", v0}, {"to", v2}}));
  auto events = n.ledger(agent);
  REQUIRE(events.back()["type"] == "upgraded");
  CHECK(events.back()["data"] == json({{"from", v0}, {"to", v2}, {"by", "anonymous"}}));
  json v = n.view(agent);
  CHECK(v["version"] == v2);
  CHECK(v["phase"] == "waiting_approval");
  check_replays_identically(n, agent);

  auto again = upgrade(n, agent, {{"to", v2}});
  CHECK_MESSAGE(again.status == 409, again.raw);
  CHECK_MESSAGE(has(error_message(again), "already runs"), again.raw);
  const std::string unknown = unknown_version({v0, v2, no_refund});
  auto missing = upgrade(n, agent, {{"to", unknown}});
  CHECK_MESSAGE(missing.status == 404, missing.raw);
  for (const char* bad : {"xyz", "abc", "zzzzzzzz"}) {
    auto malformed = upgrade(n, agent, {{"to", bad}});
    CHECK_MESSAGE(malformed.status == 400, bad << ": " << malformed.raw);
  }
  CHECK(upgrade(n, "desk/nobody", {{"to", v2}}).status == 404);
  n.spawn("acct/one", "counter");
  CHECK(upgrade(n, "acct/one", json::object()).status == 404);  // a built-in type
  CHECK(n.ledger(agent).size() == events.size());               // refusals record nothing

  // After SIGKILL it still runs version 2, although the file (version 0)
  // is the latest again.
  n.kill9_and_restart();
  CHECK(latest_of(n) == v0);
  CHECK(version_of(n, agent) == v2);
  approve(n, agent);
  CHECK(version_of(n, agent) == v2);
  check_replays_identically(n, agent);

  // Compacted after the upgrade: the snapshot keeps version 2.
  events = n.ledger(agent);
  const uint64_t before = seq_of(events, "model_replied", 2);  // the answer's step
  auto c = n.post(loop_node::path(agent) + "/compact", {{"before", before}});
  REQUIRE_MESSAGE(c.status == 200, c.raw);
  n.kill9_and_restart();
  CHECK(version_of(n, agent) == v2);
  check_replays_identically(n, agent);
  audit(n, agent);

  // keel upgrade back to the latest: the next turn runs version 0, whose
  // threshold makes the refund wait for a human again.
  auto cli = run_keel(n.port(), {"upgrade", agent, "--to", "latest", "--by", "ops"});
  REQUIRE_MESSAGE(cli.exit_code == 0, said(cli));
  CHECK_MESSAGE(has(cli.out, agent + ": version " + v2 + " -> " + v0), cli.out);
  CHECK(version_of(n, agent) == v0);
  n.send(agent, "And refund order 9 again.");
  n.wait_phase(agent, "waiting_approval");
  approve(n, agent, 2);
  auto upgrades = of_type(n.ledger(agent), "upgraded");
  REQUIRE(upgrades.size() == 1);  // the first one was compacted away
  CHECK(upgrades[0] == json({{"from", v2}, {"to", v0}, {"by", "anonymous"}}));
  check_replays_identically(n, agent);
  audit(n, agent);
}

// --- 3. registering and listing versions ----------------------------------------

TEST_CASE("PUT and GET /v1/types register and list versions, and a registered type survives") {
  loop_node n;
  write_desk(n, example_spec());
  n.start();
  const json greeter = {
      {"name", "greeter"},
      {"description", "Says hello."},
      {"instructions", "Greet."},
      {"model",
       {{"provider", "scripted"}, {"script", {{"replies", json::array({text_reply("Hello!")})}}}}}};

  auto listed = n.call("GET", "/v1/types");
  REQUIRE_MESSAGE(listed.status == 200, listed.raw);
  std::set<std::string> names;
  for (const auto& t : listed.body["types"]) {
    names.insert(t["name"].get<std::string>());
    if (t["name"] == "counter") {
      CHECK(t["builtin"] == true);
      CHECK(t["versions"] == 1);
    }
    if (t["name"] == "refund-desk") {
      CHECK(t["builtin"] == false);
      CHECK(t["versions"] == 1);
      CHECK(t["latest"] == latest_of(n));
    }
  }
  CHECK(names == std::set<std::string>{"counter", "refund-desk"});
  CHECK(n.call("GET", "/v1/types/greeter").status == 404);
  CHECK(n.call("GET", "/v1/types/greeter/versions").status == 404);

  // A new version: 201; the same again: 200, nothing changed.
  auto first = put_type(n, "greeter", greeter);
  REQUIRE_MESSAGE(first.status == 201, first.raw);
  CHECK(first.body["name"] == "greeter");
  CHECK(first.body["new"] == true);
  CHECK(first.body["changed"] == true);
  const std::string g1 = first.body["version"].get<std::string>();
  auto same = put_type(n, "greeter", greeter);
  CHECK_MESSAGE(same.status == 200, same.raw);
  CHECK(same.body["new"] == false);
  CHECK(same.body["changed"] == false);
  CHECK(same.body["version"] == g1);
  // The name may be left out: the path names the type.
  json unnamed = greeter;
  unnamed.erase("name");
  auto by_path = put_type(n, "greeter", unnamed);
  CHECK_MESSAGE(by_path.status == 200, by_path.raw);
  CHECK(by_path.body["version"] == g1);

  json shown = n.call("GET", "/v1/types/greeter").body;
  CHECK(shown["name"] == "greeter");
  CHECK(shown["version"] == g1);
  CHECK(shown["latest"] == true);
  CHECK(shown["spec"]["description"] == "Says hello.");
  CHECK(shown["spec"]["model"]["script"]["replies"][0]["content"] == "Hello!");

  // A second version is the latest; listed after the first.
  const std::string g2 = register_version(n, with_description(greeter, "Says hello warmly."));
  CHECK(g2 != g1);
  json vs = versions(n, "greeter");
  CHECK(hashes(vs) == std::vector<std::string>{g1, g2});
  CHECK(vs[0]["latest"] == false);
  CHECK(vs[1]["latest"] == true);
  CHECK(vs[1]["description"] == "Says hello warmly.");
  CHECK(vs[0]["added_ms"].get<int64_t>() <= vs[1]["added_ms"].get<int64_t>());
  CHECK_FALSE(vs[0].contains("spec"));
  auto with_spec = n.call("GET", "/v1/types/greeter/versions?spec=1");
  REQUIRE(with_spec.status == 200);
  CHECK(with_spec.body["versions"][1]["spec"]["description"] == "Says hello warmly.");
  auto one = n.call("GET", "/v1/types/greeter/versions/" + g1);
  REQUIRE_MESSAGE(one.status == 200, one.raw);
  CHECK(one.body["version"] == g1);
  CHECK(one.body["latest"] == false);
  CHECK(one.body["spec"]["description"] == "Says hello.");
  CHECK(n.call("GET", "/v1/types/greeter/versions/" + unknown_version({g1, g2})).status == 404);

  // The first again: known (200) but now the latest again.
  auto back = put_type(n, "greeter", greeter);
  CHECK_MESSAGE(back.status == 200, back.raw);
  CHECK(back.body["new"] == false);
  CHECK(back.body["changed"] == true);
  vs = versions(n, "greeter");
  CHECK(hashes(vs) == std::vector<std::string>{g1, g2});
  CHECK(vs[0]["latest"] == true);
  CHECK(vs[1]["latest"] == false);

  // Refused: a script named by file, an invalid spec (naming where), a
  // name other than the path's, a built-in type's name.
  json script_file = greeter;
  script_file["model"]["script"] = "scripts/greeter.json";
  auto r = put_type(n, "greeter", script_file);
  CHECK_MESSAGE(r.status == 400, r.raw);
  CHECK_MESSAGE(has(error_message(r), "/model/script"), r.raw);
  json bad_tool = greeter;
  bad_tool["tools"] = json::array({{{"name", "t"}}});
  r = put_type(n, "greeter", bad_tool);
  CHECK_MESSAGE(r.status == 400, r.raw);
  CHECK_MESSAGE(has(error_message(r), "/tools/0/kind"), r.raw);
  json bad_field = greeter;
  bad_field["max_steps_per_turn"] = 0;
  r = put_type(n, "greeter", bad_field);
  CHECK_MESSAGE(r.status == 400, r.raw);
  CHECK_MESSAGE(has(error_message(r), "/max_steps_per_turn"), r.raw);
  r = put_type(n, "other", greeter);
  CHECK_MESSAGE(r.status == 400, r.raw);
  CHECK_MESSAGE(has(error_message(r), "/name"), r.raw);
  json counter = greeter;
  counter.erase("name");
  CHECK(put_type(n, "counter", counter).status == 400);
  r = n.call("PUT", "/v1/types/greeter", "not json");
  CHECK_MESSAGE(r.status == 400, r.raw);
  CHECK(hashes(versions(n, "greeter")) == std::vector<std::string>{g1, g2});

  // keel types put reads a script file the spec names (relative to it).
  write_json(n.dir() / "scripts" / "greeter.json",
             {{"replies", json::array({text_reply("Hi there.")})}});
  json file_spec = greeter;
  file_spec["model"]["script"] = "../scripts/greeter.json";
  const fs::path candidate = n.dir() / "candidates" / "greeter.json";
  fs::create_directories(candidate.parent_path());
  write_json(candidate, file_spec);
  auto put = run_keel(n.port(), {"--json", "types", "put", candidate.string()});
  REQUIRE_MESSAGE(put.exit_code == 0, said(put));
  json put_j = json::parse(put.out, nullptr, false);
  REQUIRE_MESSAGE(put_j.is_object(), put.out);
  CHECK(put_j["new"] == true);
  const std::string g3 = put_j["version"].get<std::string>();
  CHECK(
      n.call("GET", "/v1/types/greeter").body["spec"]["model"]["script"]["replies"][0]["content"] ==
      "Hi there.");
  auto ls = run_keel(n.port(), {"types"});
  CHECK_MESSAGE(ls.exit_code == 0, said(ls));
  CHECK_MESSAGE(has(ls.out, "greeter"), ls.out);
  CHECK_MESSAGE(has(ls.out, g3.substr(0, 12)), ls.out);
  CHECK_MESSAGE(has(ls.out, "(built-in)"), ls.out);
  auto listing = run_keel(n.port(), {"types", "versions", "greeter"});
  CHECK_MESSAGE(listing.exit_code == 0, said(listing));
  for (const auto& h : {g1, g2, g3}) CHECK_MESSAGE(has(listing.out, h.substr(0, 12)), listing.out);
  auto show = run_keel(n.port(), {"types", "show", "greeter", g1});
  CHECK_MESSAGE(show.exit_code == 0, said(show));
  CHECK_MESSAGE(has(show.out, "Says hello."), show.out);
  // Back to the first for the restart below.
  CHECK(put_type(n, "greeter", greeter).status == 200);

  // Registered only over the API, it survives SIGKILL: listed with its
  // versions and latest, and agents spawn with it.
  n.kill9_and_restart();
  vs = versions(n, "greeter");
  CHECK(hashes(vs) == std::vector<std::string>{g1, g2, g3});
  CHECK(vs[0]["latest"] == true);
  CHECK(latest_of(n, "greeter") == g1);
  n.spawn("greet/one", "greeter");
  CHECK(version_of(n, "greet/one") == g1);
  n.send("greet/one", "hi");
  json v = n.wait_turns("greet/one");
  CHECK(v["state"]["last"]["answer"] == "Hello!");
  CHECK(version_of(n, "greet/one") == g1);
}

// --- 4. trying an edited spec on recorded runs ---------------------------------

TEST_CASE("keel replay --spec and keel eval --spec try an edited spec on recorded runs") {
  loop_node n;
  write_desk(n, example_spec());
  n.start();
  const std::string agent = "desk/tried";
  n.spawn(agent, "refund-desk");
  ask_refund(n, agent);
  n.wait_phase(agent, "waiting_approval");
  approve(n, agent);
  const auto events = n.ledger(agent);
  const uint64_t refund_guard = [&] {
    for (const auto& e : events)
      if (e["type"] == "guardrail_decided" && e["data"]["tool"] == "refund")
        return e["seq"].get<uint64_t>();
    FAIL("no guardrail decision on the refund");
    return uint64_t{0};
  }();
  const std::string v0 = version_of(n, agent);

  // The edits as files, as an operator has them: the script by file name.
  const fs::path dir = n.dir() / "candidates";
  fs::create_directories(dir);
  const fs::path raised = dir / "raised.json", reworded = dir / "reworded.json";
  write_json(raised, with_threshold(example_spec(), 200));
  write_json(reworded, with_description(example_spec(), "Refunds, with care."));

  // The raised threshold decides otherwise at the refund's guardrail.
  auto diverged = run_keel(n.port(), {"replay", agent, "--spec", raised.string()});
  CHECK_MESSAGE(diverged.exit_code == 1, said(diverged));
  CHECK_MESSAGE(has(diverged.out, "DIVERGED at seq " + std::to_string(refund_guard)), diverged.out);
  auto j = run_keel(n.port(), {"--json", "replay", agent, "--spec", raised.string()});
  REQUIRE_MESSAGE(j.exit_code == 0, said(j));
  json r = json::parse(j.out, nullptr, false);
  REQUIRE_MESSAGE(r.is_object(), j.out);
  CHECK(r["identical"] == false);
  CHECK(r["divergence"]["seq"] == refund_guard);
  CHECK(r["divergence"]["recorded"]["type"] == "guardrail_decided");
  CHECK(r["divergence"]["recorded"]["data"]["verdict"] == "require_approval");
  CHECK(r["events"] == refund_guard - 1);
  REQUIRE(r["spec"].is_string());
  CHECK(r["spec"] != v0);

  // A description is no decision: identical.
  auto same = run_keel(n.port(), {"replay", agent, "--spec", reworded.string()});
  CHECK_MESSAGE(same.exit_code == 0, said(same));
  CHECK_MESSAGE(has(same.out, "identical: " + std::to_string(events.size()) + " events"), same.out);
  CHECK_MESSAGE(has(same.out, "and the given spec"), same.out);

  // Over HTTP: a spec for another type, or naming its script by file, is refused.
  json other = inline_script(example_spec());
  other["name"] = "another-desk";
  auto wrong = n.post(loop_node::path(agent) + "/replay", {{"spec", other}});
  CHECK_MESSAGE(wrong.status == 400, wrong.raw);
  auto by_file = n.post(loop_node::path(agent) + "/replay", {{"spec", example_spec()}});
  CHECK_MESSAGE(by_file.status == 400, by_file.raw);
  CHECK_MESSAGE(has(error_message(by_file), "/model/script"), by_file.raw);

  // eval --spec: a suite expecting the recorded run passes with the reworded
  // spec and fails with the raised threshold.
  const fs::path suite = dir / "suite.json";
  write_json(suite, {{"cases",
                      {{{"name", "refund needs a human"},
                        {"agent", agent},
                        {"expect", {{"identical", true}, {"answer", "Refunded 120"}}}}}}});
  auto plain = run_keel(n.port(), {"eval", suite.string()});
  CHECK_MESSAGE(plain.exit_code == 0, said(plain));
  auto pass = run_keel(n.port(), {"eval", suite.string(), "--spec", reworded.string()});
  CHECK_MESSAGE(pass.exit_code == 0, said(pass));
  CHECK_MESSAGE(has(pass.out, "1 cases, 0 failed"), pass.out);
  auto fail = run_keel(n.port(), {"--json", "eval", suite.string(), "--spec", raised.string()});
  CHECK_MESSAGE(fail.exit_code == 1, said(fail));
  json report = json::parse(fail.out, nullptr, false);
  REQUIRE_MESSAGE(report.is_object(), fail.out);
  CHECK(report["failures"] == 1);

  // Trying specs changed nothing on the node.
  CHECK(n.ledger(agent).size() == events.size());
  CHECK(versions(n).size() == 1);
  check_replays_identically(n, agent);
}

// --- 5. follow_latest ------------------------------------------------------------

TEST_CASE("an idle agent moves to a latest version that asks to be followed before its next turn") {
  loop_node n;
  write_desk(n, example_spec());
  n.start();
  const std::string follower = "desk/follower", quiet = "desk/quiet";
  n.spawn(follower, "refund-desk");
  n.spawn(quiet, "refund-desk");
  ask_refund(n, follower);
  n.wait_phase(follower, "waiting_approval");
  approve(n, follower);
  const std::string v0 = version_of(n, follower);

  json followed = inline_script(with_threshold(example_spec(), 200));
  followed["follow_latest"] = true;
  const std::string vf = register_version(n, followed);
  REQUIRE(vf != v0);
  CHECK(version_of(n, follower) == v0);  // nothing moves until a message comes
  CHECK(version_of(n, quiet) == v0);

  const uint64_t last_before = n.ledger(follower).back()["seq"].get<uint64_t>();
  n.send(follower, "Refund order 9 once more.");
  // Version f refunds 120 without asking.
  json v = n.wait_turns(follower, 2);
  CHECK(v["state"]["last"]["answer"] == refunded);
  CHECK(v["version"] == vf);
  auto events = n.ledger(follower);
  std::vector<json> after;
  for (const auto& e : events)
    if (e["seq"].get<uint64_t>() > last_before) after.push_back(e);
  REQUIRE_MESSAGE(after.size() > 2, summary(events));
  CHECK_MESSAGE(after[0]["type"] == "upgraded", summary(after));
  CHECK(after[0]["data"] ==
        json({{"from", v0}, {"to", vf}, {"by", "keel"}, {"reason", "follow_latest"}}));
  CHECK(after[1]["type"] == "message_received");
  CHECK(of_type(after, "approval_requested").empty());
  check_replays_identically(n, follower);

  // The agent that got no message stays where it was, across a restart too
  // (the file, version 0, is the latest again then).
  CHECK(version_of(n, quiet) == v0);
  n.kill9_and_restart();
  CHECK(version_of(n, quiet) == v0);
  CHECK(version_of(n, follower) == vf);
  CHECK(of_type(n.ledger(quiet), "upgraded").empty());
}

// --- 6. a data dir of the release before versions ---------------------------------

namespace {

// Extracts the fixture into the node's dir: agents/, scripts/ and data/ of a
// keeld of the release before versions, stopped with SIGTERM: ticket/1 (a
// completed turn), ticket/2 (waits for approval), acct/alice (a counter at 5).
void extract_fixture(loop_node& n) {
  const fs::path archive = fs::path(KEEL_FIXTURES_DIR) / "unversioned-types.tar.gz";
  REQUIRE_MESSAGE(fs::exists(archive), archive.string());
  const std::string cmd = "tar -xzf '" + archive.string() + "' -C '" + n.dir().string() + "'";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  REQUIRE(fs::exists(n.dir() / "data" / "CURRENT"));
  REQUIRE(fs::exists(n.dir() / "agents" / "refund-desk.json"));
}

json fixture_spec(loop_node& n) {
  return read_json(n.dir() / "agents" / "refund-desk.json");
}

void check_fixture_agents(loop_node& n) {
  auto list = n.call("GET", "/v1/agents?limit=100");
  REQUIRE_MESSAGE(list.status == 200, list.raw);
  std::set<std::string> names;
  for (const auto& a : list.body["agents"]) names.insert(a["name"].get<std::string>());
  CHECK(names == std::set<std::string>{"acct/alice", "ticket/1", "ticket/2"});

  json t1 = n.view("ticket/1");
  CHECK(t1["last_seq"] == 19);
  CHECK(t1["phase"] == "idle");
  CHECK(t1["state"]["last"]["answer"] == refunded);
  json t2 = n.view("ticket/2");
  CHECK(t2["last_seq"] == 12);
  CHECK(t2["phase"] == "waiting_approval");
  CHECK(t2["state"]["turn"]["wait"]["tool"] == "refund");
  json alice = n.view("acct/alice");
  CHECK(alice["type"] == "counter");
  CHECK(alice["state"]["total"] == 5);
  CHECK_FALSE(alice.contains("version"));
}

}  // namespace

TEST_CASE("a data dir of the release before versions loads, replays and goes on") {
  loop_node n;
  extract_fixture(n);
  n.start();
  check_fixture_agents(n);
  // The file parses to the version those agents ran: nobody moved.
  const json vs = versions(n);
  REQUIRE(vs.size() == 1);
  const std::string v0 = vs[0]["version"].get<std::string>();
  CHECK(vs[0]["latest"] == true);
  CHECK(version_of(n, "ticket/1") == v0);
  CHECK(version_of(n, "ticket/2") == v0);
  auto events = n.ledger("ticket/2");
  REQUIRE(events.size() == 12);
  CHECK_FALSE(of_type(events, "spawned")[0].contains("version"));  // written before versions
  CHECK(of_type(events, "spawned")[0]["data"]["ctl"]["spec_hash"] == v0);
  for (const std::string name : {"ticket/1", "ticket/2", "acct/alice"}) {
    CAPTURE(name);
    json r = replay(n, name);
    CHECK_MESSAGE(r["identical"] == true, r.dump());
    CHECK(r["events"] == (name == "ticket/1" ? 19 : name == "ticket/2" ? 12 : 3));
    audit(n, name);
    CHECK(of_type(n.ledger(name), "upgraded").empty());
  }

  SUBCASE("ticket/2 approved completes its turn") {
    approve(n, "ticket/2");
    CHECK(version_of(n, "ticket/2") == v0);
  }
  SUBCASE("the spec edited after the upgrade moves none of them") {
    write_json(n.dir() / "agents" / "refund-desk.json", with_threshold(fixture_spec(n), 200));
    n.kill9_and_restart();
    const json now = versions(n);
    REQUIRE(now.size() == 2);
    CHECK(now[0]["version"] == v0);
    const std::string v1 = now[1]["version"].get<std::string>();
    CHECK(now[1]["latest"] == true);
    CHECK(version_of(n, "ticket/2") == v0);
    CHECK(n.view("ticket/2")["phase"] == "waiting_approval");
    approve(n, "ticket/2");
    CHECK(version_of(n, "ticket/2") == v0);
    // ticket/1's next refund of 120 still needs a human: its version says so.
    n.send("ticket/1", "Refund order 9 again.");
    n.wait_phase("ticket/1", "waiting_approval");
    approve(n, "ticket/1", 2);
    CHECK(version_of(n, "ticket/1") == v0);
    // A new ticket runs the edit: no approval.
    n.spawn("ticket/3", "refund-desk");
    CHECK(version_of(n, "ticket/3") == v1);
    ask_refund(n, "ticket/3");
    json t3 = n.wait_turns("ticket/3");
    CHECK(t3["state"]["last"]["answer"] == refunded);
    CHECK(of_type(n.ledger("ticket/3"), "approval_requested").empty());
    // The counter goes on too.
    auto r = n.post(loop_node::path("acct/alice") + "/messages", {{"body", {{"add", 2}}}});
    CHECK_MESSAGE(r.status == 202, r.raw);
    n.wait_view(
        "acct/alice", [](const json& v) { return v["state"].value("total", 0) == 7; }, "total 7");
  }
  for (const std::string name : {"ticket/1", "ticket/2"}) {
    check_replays_identically(n, name);
    audit(n, name);
  }
}

TEST_CASE("agents of the release before versions whose spec was edited first move to the latest") {
  loop_node n;
  extract_fixture(n);
  // Edited before the new release ever ran: the version those agents ran
  // was never stored, so the node cannot run it.
  const json original_file = fixture_spec(n);
  write_json(n.dir() / "agents" / "refund-desk.json", with_threshold(original_file, 200));
  n.start();
  const json vs = versions(n);
  REQUIRE(vs.size() == 1);
  const std::string v1 = vs[0]["version"].get<std::string>();
  const std::string old = n.ledger("ticket/2")[0]["data"]["data"]["ctl"]["spec_hash"];
  REQUIRE(old != v1);

  // Activated, ticket/2 moves to the latest first, by keel, saying why; the
  // latest has the refund tool it waits in.
  json v = n.view("ticket/2");
  CHECK(v["version"] == v1);
  CHECK(v["phase"] == "waiting_approval");
  auto events = n.ledger("ticket/2");
  REQUIRE(events.size() == 13);
  CHECK(events[12]["type"] == "upgraded");
  CHECK(events[12]["data"]["from"] == old);
  CHECK(events[12]["data"]["to"] == v1);
  CHECK(events[12]["data"]["by"] == "keel");
  CHECK_MESSAGE(has(events[12]["data"].value("reason", ""), "not on this node"), events[12].dump());
  approve(n, "ticket/2");
  CHECK(version_of(n, "ticket/2") == v1);
  audit(n, "ticket/2");

  // Its first steps ran a version the node does not have: replay says so...
  json r = replay(n, "ticket/2");
  CHECK(r["identical"] == false);
  CHECK(r["divergence"]["seq"] == 1);
  CHECK_MESSAGE(has(r["divergence"]["reason"].get<std::string>(), old), r.dump());
  // ... until that version is registered again.
  json original = original_file;
  original["model"]["script"] = read_json(n.dir() / "scripts" / "refund-desk.json");
  auto put = put_type(n, "refund-desk", original);
  REQUIRE_MESSAGE(put.status == 201, put.raw);
  CHECK(put.body["version"] == old);
  check_replays_identically(n, "ticket/2");
  check_replays_identically(n, "ticket/1");
  check_replays_identically(n, "acct/alice");
}

TEST_CASE(
    "an agent the latest version cannot take over stays down until its version is registered") {
  loop_node n;
  extract_fixture(n);
  const json original_file = fixture_spec(n);
  // Edited before the new release ran, and without the refund tool that
  // ticket/2 waits in.
  json lookup_only = original_file;
  json tools = json::array();
  for (const auto& t : lookup_only["tools"])
    if (t["name"] == "lookup_order") tools.push_back(t);
  lookup_only["tools"] = tools;
  lookup_only.erase("guardrails");
  write_json(n.dir() / "agents" / "refund-desk.json", lookup_only);
  n.start();
  const std::string latest = latest_of(n);
  const std::string old = n.ledger("ticket/2")[0]["data"]["data"]["ctl"]["spec_hash"];
  REQUIRE(old != latest);

  // ticket/2 cannot run, and says why; nothing reaches it.
  auto down = n.call("GET", loop_node::path("ticket/2"));
  CHECK_MESSAGE(down.status == 409, down.raw);
  CHECK_MESSAGE(has(error_message(down), "cannot run"), down.raw);
  CHECK_MESSAGE(has(error_message(down), old), down.raw);
  CHECK_MESSAGE(has(error_message(down), "in a call of tool refund"), down.raw);
  auto refused = n.post(loop_node::path("ticket/2") + "/signals/approve", {{"payload", {}}});
  CHECK_MESSAGE(refused.status == 409, refused.raw);
  CHECK(n.ledger("ticket/2").size() == 12);

  // ticket/1 is idle: the latest takes it over.
  CHECK(version_of(n, "ticket/1") == latest);
  auto up = of_type(n.ledger("ticket/1"), "upgraded");
  REQUIRE(up.size() == 1);
  CHECK(up[0]["from"] == old);
  CHECK(up[0]["by"] == "keel");

  // With its version registered again, ticket/2 runs it and goes on.
  json original = original_file;
  original["model"]["script"] = read_json(n.dir() / "scripts" / "refund-desk.json");
  auto put = put_type(n, "refund-desk", original);
  REQUIRE_MESSAGE(put.status == 201, put.raw);
  CHECK(put.body["version"] == old);
  json v = n.view("ticket/2");
  CHECK(v["version"] == old);
  CHECK(v["phase"] == "waiting_approval");
  approve(n, "ticket/2");
  CHECK(of_type(n.ledger("ticket/2"), "upgraded").empty());
  for (const std::string name : {"ticket/1", "ticket/2"}) {
    check_replays_identically(n, name);
    audit(n, name);
  }
}

TEST_CASE(
    "an agent whose type the node never loaded stays listed and answers 409 naming --agents") {
  loop_node n;
  extract_fixture(n);
  // Started without its type's file: the release before versions stored none.
  fs::remove(n.dir() / "agents" / "refund-desk.json");
  n.start();
  // The listing reads the directory: every agent is there, whatever its
  // type; entries written before phases were kept say "unknown".
  auto list = n.call("GET", "/v1/agents");
  REQUIRE_MESSAGE(list.status == 200, list.raw);
  std::map<std::string, std::string> phases;
  for (const auto& a : list.body["agents"])
    phases[a["name"].get<std::string>()] = a["phase"].get<std::string>();
  CHECK(phases == std::map<std::string, std::string>{
                      {"acct/alice", "unknown"}, {"ticket/1", "unknown"}, {"ticket/2", "unknown"}});

  const std::string why =
      "agent ticket/2 is of type refund-desk, which this node has not loaded; start keeld with "
      "--agents DIR";
  auto view = n.call("GET", loop_node::path("ticket/2"));
  CHECK(view.status == 409);
  CHECK_MESSAGE(view.raw.find(why) != std::string::npos, view.raw);
  auto send = n.post(loop_node::path("ticket/2") + "/messages", {{"body", "hello"}});
  CHECK(send.status == 409);
  auto show = test::cli::run_keel(n.port(), {"show", "ticket/2"});
  CHECK(show.exit_code == 1);
  CHECK_MESSAGE(show.err.find(why) != std::string::npos, show.err);
  // The built-in counter runs, and its entry gets its phase once written.
  auto add =
      n.post(loop_node::path("acct/alice") + "/messages?wait=5000", {{"body", {{"add", 1}}}});
  CHECK(add.body["reply"] == json{{"total", 6}});
  CHECK(n.call("GET", "/v1/agents?phase=idle").body["agents"][0]["name"] == "acct/alice");
}
