#pragma once
// Helpers for tests of replicated groups with real keeld members on
// 127.0.0.1 (test_cluster): starting them with replication, finding a
// group's ready leader, sending until acknowledged, and comparing every
// replica's copy of a group. Included by one test file each (an anonymous
// namespace).

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cluster/agent_requests.hpp"
#include "cluster/test_cluster.hpp"
#include "config/cluster_config.hpp"

namespace {

using namespace keel;
using namespace keel::test::cluster;
using namespace std::chrono_literals;

constexpr uint32_t shards = 16;
constexpr uint32_t groups = 4;

inline uint32_t group_of(const std::string& name) {
  return config::group_of_shard(config::shard_of(name, shards), groups);
}

// The first of prefix0, prefix1, ... in group g.
inline std::string name_in_group(const std::string& prefix, uint32_t g) {
  for (int i = 0; i < 10'000; ++i)
    if (group_of(prefix + std::to_string(i)) == g) return prefix + std::to_string(i);
  FAIL("no name with prefix " << prefix << " in group " << g);
  return {};
}

// The group's entry in `id`'s GET /v1/cluster; {} when absent.
inline json group_entry(test_cluster& c, const std::string& id, uint32_t g) {
  auto a = c.call(id, "GET", "/v1/cluster");
  if (!a.transport_ok || a.status != 200 || !a.body.contains("groups")) return json::object();
  for (const auto& e : a.body["groups"])
    if (e.value("group", 0u) == g) return e;
  return json::object();
}

// The member that leads group g and is ready to serve it, asked of every
// running member; "" when none says so.
inline std::string ready_leader(test_cluster& c, uint32_t g) {
  for (const auto& id : c.ids()) {
    if (!c.running(id)) continue;
    auto e = group_entry(c, id, g);
    if (e.value("role", "") == "leader" && e.value("ready", false)) return id;
  }
  return {};
}

// Starts every member with replication `replication` over `groups` groups
// (`extra` appended to each one's flags) and waits until each group has a
// ready leader.
inline void start_replicated(test_cluster& c, uint32_t replication, uint32_t leader_wait_ms = 5000,
                             const std::vector<std::string>& extra = {}) {
  c.set_config_keys({{"replication", replication},
                     {"groups", groups},
                     {"election_timeout_ms", 1000},
                     {"raft_heartbeat_ms", 100},
                     {"leader_wait_ms", leader_wait_ms}});
  c.start_all(extra);
  for (uint32_t g = 0; g < groups; ++g)
    REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(c, g).empty(); }, 30s, 100ms),
                    "group " << g << " elected no leader:\n"
                             << c.logs());
}

inline std::vector<config::cluster_member> members_of(test_cluster& c) {
  std::vector<config::cluster_member> out;
  for (const auto& id : c.ids()) out.push_back(c.member(id));
  return out;
}

// Sends until acknowledged (202), retrying the same id through the members
// given; a 503 (no leader yet) or 504 (the leader did not answer in time)
// is retried, anything else fails the test.
inline void send_acked(test_cluster& c, const std::vector<std::string>& via,
                       const std::string& name, const std::string& id, int add) {
  answer last;
  bool ok = poll_until(
      [&] {
        for (const auto& m : via) {
          last = c.post(m, agent_path(name) + "/messages", {{"id", id}, {"body", {{"add", add}}}});
          if (last.transport_ok && last.status == 202) return true;
          REQUIRE_MESSAGE((!last.transport_ok || last.status == 503 || last.status == 504),
                          "message " << id << " via " << m << ": " << last.describe());
        }
        return false;
      },
      30s, 100ms);
  REQUIRE_MESSAGE(ok, "message " << id << " never acknowledged: " << last.describe() << "\n"
                                 << c.logs());
}

// Waits until every running member that replicates group g is one of its
// voters and has applied the same index, then checks their digests agree
// agent by agent.
inline void check_replicas_agree(test_cluster& c, uint32_t g) {
  std::map<std::string, json> digests;
  std::string last;
  bool settled = poll_until(
      [&] {
        digests.clear();
        std::set<uint64_t> applied;
        for (const auto& id : c.ids()) {
          if (!c.running(id)) continue;
          // A member with an empty store lists no group until it has asked
          // the others (docs/replication.md): not settled, not skipped.
          auto st = c.call(id, "GET", "/v1/cluster");
          if (!st.transport_ok || st.status != 200 || st.body.value("raft_id", 0ull) == 0) {
            last = id + " has not chosen its raft id";
            return false;
          }
          auto entry = group_entry(c, id, g);
          if (entry.empty()) continue;  // not a replica of g
          if (entry.contains("joining")) {
            last = id + " is joining the group: " + entry["joining"].dump();
            return false;
          }
          auto a = c.call(id, "GET", "/v1/cluster/groups/" + std::to_string(g) + "/digest");
          if (!a.transport_ok || a.status != 200) {
            last = id + ": " + a.describe();
            return false;
          }
          applied.insert(a.body.value("applied_index", 0ull));
          digests[id] = a.body;
        }
        last = "applied indexes differ";
        return applied.size() == 1 && digests.size() >= 2;
      },
      60s, 200ms);
  REQUIRE_MESSAGE(settled, "group " << g << " did not settle: " << last << "\n" << c.logs());
  const auto& first = digests.begin()->second["agents"];
  for (const auto& [id, d] : digests)
    CHECK_MESSAGE(d["agents"] == first,
                  "group " << g << ": " << id << " holds " << d["agents"].size() << " agents "
                           << d["agents"].dump().substr(0, 300) << " but " << digests.begin()->first
                           << " holds " << first.dump().substr(0, 300));
}

}  // namespace
