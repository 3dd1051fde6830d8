// Audit, replay, fork and the ledger stream across members: a fork is
// placed by its own name, wherever its parent lives, and every member
// answers for both.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/agent_requests.hpp"
#include "cluster/test_cluster.hpp"

namespace keel::test::cluster {

namespace {

// Sends `n` {"add": 1} messages to `name` through `via` and waits until
// the total says they were all applied.
void add_ones(test_cluster& c, const std::string& via, const std::string& name, int n,
              int64_t expect_total) {
  for (int i = 0; i < n; ++i) {
    auto a = c.post(via, agent_path(name) + "/messages", {{"body", {{"add", 1}}}});
    REQUIRE_MESSAGE((a.transport_ok && a.status == 202), a.describe());
  }
  REQUIRE_MESSAGE(poll_until([&] { return query_total(c.clients(), via, name) == expect_total; },
                             std::chrono::seconds(20)),
                  c.logs());
}

}  // namespace

TEST_CASE("a fork is placed by its own name and both sides audit, replay and show the relation") {
  test_cluster c(3);
  const auto ids = c.ids();
  const auto map = c.initial_map(ids);
  const std::string parent = name_owned_by(map, "ledger/parent-", "n1");
  const std::string child = name_owned_by(map, "ledger/child-", "n2");
  c.start_all();
  spawn_counter(c.clients(), "n3", parent);
  add_ones(c, "n3", parent, 10, 10);  // seqs 2..21: message_received, state_changed

  // Fork through the third member: after seq 11 the parent's total was 5.
  auto f = c.post("n3", agent_path(parent) + "/fork", {{"at", 11}, {"as", child}, {"by", "qa"}});
  REQUIRE_MESSAGE((f.transport_ok && f.status == 201), f.describe() << c.logs());
  CHECK(f.body["origin"] == "fork");
  CHECK(f.body["parent"] == json{{"name", parent}, {"at", 11}});
  CHECK(f.body["fork"]["copied_events"] == 11);
  CHECK(query_total(c.clients(), "n1", child) == 5);

  // The fork lives on its own: it takes messages, the parent does not see them.
  add_ones(c, "n1", child, 3, 8);
  CHECK(query_total(c.clients(), "n2", parent) == 10);

  // The shared prefix is the same history, hash for hash.
  const auto pl = read_ledger(c.clients(), "n2", parent);
  const auto cl = read_ledger(c.clients(), "n3", child);
  REQUIRE(pl.size() >= 11);
  REQUIRE(cl.size() == 11 + 1 + 6);
  for (std::size_t i = 0; i < 11; ++i) {
    CHECK(cl[i]["hash"] == pl[i]["hash"]);
    CHECK(cl[i]["data"] == pl[i]["data"]);
  }
  // Then the fork's own history, linked to the copied prefix.
  CHECK(cl[11]["type"] == "fork_started");
  CHECK(cl[11]["data"]["parent"] == parent);
  CHECK(cl[11]["prev"] == pl[10]["hash"]);
  // The parent's ledger records who forked it, and where to.
  CHECK(pl.back()["type"] == "forked");
  CHECK(pl.back()["data"] == json{{"as", child}, {"at", 11}, {"by", "anonymous"}});
  auto show = c.call("n2", "GET", agent_path(parent));
  REQUIRE(show.status == 200);
  CHECK(show.body["forks"] == json::array({{{"name", child}, {"at", 11}}}));

  // Every member audits and replays both, through their owners.
  for (const auto& via : ids)
    for (const auto& name : {parent, child}) {
      auto audit = c.call(via, "GET", agent_path(name) + "/audit");
      CHECK_MESSAGE((audit.status == 200 && audit.body["intact"] == true), audit.describe());
      auto replay = c.post(via, agent_path(name) + "/replay", json::object());
      CHECK_MESSAGE((replay.status == 200 && replay.body["identical"] == true), replay.describe());
    }

  // A stream is not forwarded: a member that does not serve the agent
  // sends the client to the owner.
  auto stream = c.call("n3", "GET", agent_path(child) + "/ledger/stream");
  CHECK(stream.status == 307);
  CHECK(stream.body["owner"] == "n2");
  CHECK(stream.body["location"].get<std::string>().find(
            ":" + std::to_string(c.member("n2").http_port) + "/v1/agents/") != std::string::npos);

  // A fork may not take a name that exists, or its parent's.
  auto again = c.post("n1", agent_path(parent) + "/fork", {{"at", 3}, {"as", child}});
  CHECK(again.status == 409);
  auto self = c.post("n1", agent_path(parent) + "/fork", {{"at", 3}, {"as", parent}});
  CHECK(self.status == 400);

  // The fork survives its owner's SIGKILL.
  c.kill9("n2");
  c.restart("n2");
  c.wait_connected(ids);
  CHECK(poll_until([&] { return query_total(c.clients(), "n1", child) == 8; },
                   std::chrono::seconds(20)));
  CHECK(check_replays(c, "n3") == 2);
}

}  // namespace keel::test::cluster
