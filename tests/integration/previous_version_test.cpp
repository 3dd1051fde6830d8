// A data directory written by the release before the code was regrouped
// into ledger/, effects/ and http/ (tests/fixtures/before-house.tar.gz,
// made by tests/fixtures/make_house_fixture.sh) opens, lists, audits and
// replays strictly, and its agents go on: the restructuring changed no
// byte on disk.

#include <doctest/doctest.h>

#include <cstdlib>
#include <set>

#include "support/loop_node.hpp"

using namespace keel;
using namespace keel::test::loop;

namespace {

const std::string refunded_120 = "Refunded 120 on order 9 for customer 42 (refund r-9).";
const std::string refunded_40 = "Refunded 40 on order 9 for customer 42 (refund r-9).";

// agents/, scripts/ and data/ of that release's keeld, stopped with SIGTERM.
void extract(loop_node& n) {
  const fs::path archive = fs::path(KEEL_FIXTURES_DIR) / "before-house.tar.gz";
  REQUIRE_MESSAGE(fs::exists(archive), archive.string());
  const std::string cmd = "tar -xzf '" + archive.string() + "' -C '" + n.dir().string() + "'";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  REQUIRE(fs::exists(n.dir() / "data" / "CURRENT"));
}

json audit_of(loop_node& n, const std::string& name) {
  auto r = n.call("GET", loop_node::path(name) + "/audit");
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  return r.body;
}

json replay_of(loop_node& n, const std::string& name) {
  auto r = n.post(loop_node::path(name) + "/replay", json::object());
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  return r.body;
}

}  // namespace

TEST_CASE("a data dir of the release before the regrouping lists, audits, replays and goes on") {
  loop_node n;
  extract(n);
  n.start();

  // Listed as written, without waking anyone: all four dormant.
  auto list = n.call("GET", "/v1/agents?limit=100");
  REQUIRE_MESSAGE(list.status == 200, list.raw);
  std::map<std::string, json> listed;
  for (const auto& a : list.body["agents"]) listed[a["name"].get<std::string>()] = a;
  REQUIRE(listed.size() == 4);
  CHECK(listed["acct/alice"]["phase"] == "idle");
  CHECK(listed["ticket/1"]["phase"] == "idle");
  CHECK(listed["ticket/1-small"]["phase"] == "idle");
  CHECK(listed["ticket/2"]["phase"] == "waiting_approval");

  // Each ledger's hash chain is intact and replays through today's code
  // to the same decisions.
  const std::map<std::string, uint64_t> events = {
      {"acct/alice", 5}, {"ticket/1", 21}, {"ticket/1-small", 17}, {"ticket/2", 12}};
  for (const auto& [name, count] : events) {
    CAPTURE(name);
    json a = audit_of(n, name);
    CHECK_MESSAGE(a["intact"] == true, a.dump());
    json r = replay_of(n, name);
    CHECK_MESSAGE(r["identical"] == true, r.dump());
    CHECK(r["events"] == count);
  }

  // The state each agent had.
  CHECK(n.view("acct/alice")["state"]["total"] == 7);
  CHECK(n.view("ticket/1")["state"]["last"]["answer"] == refunded_120);
  json fork = n.view("ticket/1-small");
  CHECK(fork["state"]["last"]["answer"] == refunded_40);
  json source = n.view("ticket/1");
  REQUIRE(source["forks"].size() == 1);
  CHECK(source["forks"][0]["name"] == "ticket/1-small");
  CHECK(source["forks"][0]["at"] == 10);

  // And they go on: the approval ticket/2 waited for completes its turn,
  // the counter counts, the fork takes another turn.
  auto a = n.signal("ticket/2", "approve", {{"by", "maria"}});
  CHECK_MESSAGE(a.status == 202, a.raw);
  json t2 = n.wait_turns("ticket/2");
  CHECK(t2["state"]["last"]["answer"] == refunded_120);

  auto add = n.post(loop_node::path("acct/alice") + "/messages", {{"body", {{"add", 2}}}});
  CHECK_MESSAGE(add.status == 202, add.raw);
  json alice = n.wait_view(
      "acct/alice", [](const json& v) { return v["state"]["total"] == 9; }, "total 9");
  CHECK(alice["state"]["total"] == 9);

  // Nothing is lost across a crash of the new version either.
  n.kill9_and_restart();
  CHECK(n.view("acct/alice")["state"]["total"] == 9);
  CHECK(n.view("ticket/2")["state"]["last"]["answer"] == refunded_120);
  for (const auto& [name, count] : events) {
    CAPTURE(name);
    CHECK(audit_of(n, name)["intact"] == true);
  }
  // (~loop_node replays every agent strictly once more.)
}
