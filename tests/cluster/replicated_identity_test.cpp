// Which raft id a replicated member runs its groups under
// (docs/replication.md, "A member that lost its data"): the members of a
// new cluster bootstrap under their original ids once every one of them
// answered that it never held an election; a member whose store is empty
// while the others already did joins under a new incarnation (the wipe
// cases: replicated_outbox_test, replication_test); groups that lost two
// of three replicas' data are recovered on the member left
// (--recover-group).

#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cluster/replicated_cluster.hpp"
#include "cluster/test_cluster.hpp"

namespace {

uint64_t raft_id_of(test_cluster& c, const std::string& id) {
  auto a = c.call(id, "GET", "/v1/cluster");
  return a.transport_ok && a.status == 200 ? a.body.value("raft_id", uint64_t{0}) : 0;
}

// Whether `member` is a voter under `raft_id` in every group it replicates,
// as each group's ready leader sees it.
bool voter_everywhere(test_cluster& c, const std::string& member, uint64_t raft_id) {
  for (uint32_t g = 0; g < groups; ++g) {
    const std::string leader = ready_leader(c, g);
    if (leader.empty()) return false;
    if (leader == member) continue;  // it leads: a voter
    for (const auto& r : group_entry(c, leader, g).value("replicas", json::array()))
      if (r.value("member", "") == member &&
          (r.value("raft_id", uint64_t{0}) != raft_id || r.value("role", "") != "voter"))
        return false;
  }
  return true;
}

}  // namespace

TEST_CASE("replicated: a new cluster's members bootstrap only once all of them are up") {
  test_cluster c(3, shards);
  c.set_config_keys({{"replication", 3},
                     {"groups", groups},
                     {"election_timeout_ms", 1000},
                     {"raft_heartbeat_ms", 100},
                     {"leader_wait_ms", 3000}});
  const auto ids = c.ids();
  const auto cfg = c.write_config("cluster", ids);
  // Two of three: a majority, but the third, for all they know, may be a
  // member that ran and lost its data; they wait for its answer.
  c.start(ids[0], cfg);
  c.start(ids[1], cfg);
  CHECK_FALSE(poll_until([&] { return raft_id_of(c, ids[0]) != 0 || raft_id_of(c, ids[1]) != 0; },
                         3s, 100ms));
  CHECK(ready_leader(c, 0).empty());

  c.start(ids[2], cfg);
  for (uint32_t g = 0; g < groups; ++g)
    REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(c, g).empty(); }, 30s, 100ms),
                    "group " << g << " elected no leader\n"
                             << c.logs());
  // The first two bootstrapped under their original ids (1..3 in member
  // id order); the third too, unless the others' first election came
  // before it asked: then it joined under an incarnation.
  for (const auto& id : {ids[0], ids[1]}) {
    const uint64_t r = raft_id_of(c, id);
    CAPTURE(id);
    CHECK(r >= 1);
    CHECK(r <= 3);
  }
  uint64_t third = 0;
  REQUIRE(poll_until(
      [&] {
        third = raft_id_of(c, ids[2]);
        return third != 0;
      },
      30s, 100ms));
  CHECK(poll_until([&] { return voter_everywhere(c, ids[2], third); }, 30s, 100ms));

  // A voter indeed: with the first member gone, every group still elects
  // and takes a message.
  c.kill9(ids[0]);
  REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(c, 0).empty(); }, 30s, 100ms),
                  "group 0 elected no leader without " << ids[0] << "\n"
                                                       << c.logs());
  const std::string name = name_in_group("late/", 0);
  spawn_counter(c.clients(), ids[1], name);
  send_acked(c, {ids[1], ids[2]}, name, "m-1", 5);
  CHECK(query_total(c.clients(), ids[2], name) == 5);
}

TEST_CASE(
    "replicated: groups that lost two of three replicas' data are recovered on the member left "
    "and the others join again with nothing acknowledged lost") {
  test_cluster c(3, shards);
  start_replicated(c, 3);
  const auto ids = c.ids();
  std::vector<std::string> names;
  for (uint32_t g = 0; g < groups; ++g) {
    names.push_back(name_in_group("kept/", g));
    spawn_counter(c.clients(), ids[0], names.back());
    for (int i = 1; i <= 3; ++i)
      send_acked(c, ids, names.back(), names.back() + "-m" + std::to_string(i), i);
  }
  const std::string left = ids[0];
  for (const auto& id : {ids[1], ids[2]}) {
    c.kill9(id);
    std::filesystem::remove_all(c.root() / id / "data");
  }
  // The member left holds every acknowledged entry but cannot lead alone:
  // its leases lapse and nothing is appended any more.
  CHECK(poll_until(
      [&] {
        for (uint32_t g = 0; g < groups; ++g)
          if (group_entry(c, left, g).value("ready", true)) return false;
        return true;
      },
      30s, 100ms));
  std::vector<std::string> flags;
  for (uint32_t g = 0; g < groups; ++g) {
    const auto e = group_entry(c, left, g);
    flags.push_back("--recover-group");
    flags.push_back(std::to_string(g) + "@" + std::to_string(e.value("last_index", 0ull)));
  }
  c.kill9(left);
  c.start(left, (c.root() / "cluster.json").string(), flags);
  for (uint32_t g = 0; g < groups; ++g)
    REQUIRE_MESSAGE(poll_until([&] { return ready_leader(c, g) == left; }, 30s, 100ms),
                    "group " << g << " was not recovered on " << left << "\n"
                             << c.logs());

  // The others start empty: they find the cluster ran and join under
  // incarnations.
  c.restart(ids[1]);
  c.restart(ids[2]);
  for (const auto& id : {ids[1], ids[2]}) {
    uint64_t r = 0;
    REQUIRE(poll_until(
        [&] {
          r = raft_id_of(c, id);
          return r != 0;
        },
        30s, 100ms));
    CHECK(r > 0xFFFF);
    CHECK_MESSAGE(poll_until([&] { return voter_everywhere(c, id, r); }, 30s, 100ms),
                  id << " did not join every group as a voter\n"
                     << c.logs());
  }
  for (uint32_t g = 0; g < groups; ++g) {
    CHECK(query_total(c.clients(), ids[2], names[g]) == 6);
    check_replicas_agree(c, g);
  }
}
