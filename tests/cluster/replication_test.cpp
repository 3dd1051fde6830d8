// Replicated groups end to end (docs/replication.md): three keeld members
// with replication 3 on 127.0.0.1. The leader of an agent's group is
// SIGKILLed; another member takes the group over within the election
// timeout and serves the agent with its whole ledger, and the killed member
// catches up when it returns.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cluster/agent_requests.hpp"
#include "cluster/test_cluster.hpp"
#include "config/cluster_config.hpp"

using namespace keel;
using namespace keel::test::cluster;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t shards = 16;
constexpr uint32_t groups = 4;

uint32_t group_of(const std::string& name) {
  return config::group_of_shard(config::shard_of(name, shards), groups);
}

// The group's entry in `id`'s GET /v1/cluster; {} when absent.
json group_entry(test_cluster& c, const std::string& id, uint32_t g) {
  auto a = c.call(id, "GET", "/v1/cluster");
  if (!a.transport_ok || a.status != 200 || !a.body.contains("groups")) return json::object();
  for (const auto& e : a.body["groups"])
    if (e.value("group", 0u) == g) return e;
  return json::object();
}

// The member that leads group g and is ready to serve it, asked of every
// running member; "" when none says so.
std::string ready_leader(test_cluster& c, uint32_t g) {
  for (const auto& id : c.ids()) {
    if (!c.running(id)) continue;
    auto e = group_entry(c, id, g);
    if (e.value("role", "") == "leader" && e.value("ready", false)) return id;
  }
  return {};
}

// Sends until acknowledged (202), retrying the same id through the members
// given; a 503 (no leader yet) is retried, anything else fails the test.
void send_acked(test_cluster& c, const std::vector<std::string>& via, const std::string& name,
                const std::string& id, int add) {
  answer last;
  bool ok = poll_until(
      [&] {
        for (const auto& m : via) {
          last = c.post(m, agent_path(name) + "/messages", {{"id", id}, {"body", {{"add", add}}}});
          if (last.transport_ok && last.status == 202) return true;
          REQUIRE_MESSAGE((!last.transport_ok || last.status == 503),
                          "message " << id << " via " << m << ": " << last.describe());
        }
        return false;
      },
      30s, 100ms);
  REQUIRE_MESSAGE(ok, "message " << id << " never acknowledged: " << last.describe() << "\n"
                                 << c.logs());
}

}  // namespace

TEST_CASE("a replicated agent is served by another member after its leader is SIGKILLed") {
  test_cluster c(3, shards);
  c.set_config_keys({{"replication", 3},
                     {"groups", groups},
                     {"election_timeout_ms", 1000},
                     {"raft_heartbeat_ms", 100},
                     {"leader_wait_ms", 5000}});
  c.start_all();
  const auto ids = c.ids();
  for (uint32_t g = 0; g < groups; ++g)
    REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(c, g).empty(); }, 30s, 100ms),
                    "group " << g << " elected no leader:\n"
                             << c.logs());

  const std::string name = "ticket/1";
  const uint32_t g = group_of(name);
  // Spawned through a member that may not lead the group: forwarded.
  auto spawned = c.post(ids[0], "/v1/agents", {{"name", name}, {"type", "counter"}});
  REQUIRE_MESSAGE((spawned.transport_ok && spawned.status == 201), spawned.describe());
  int sum = 0;
  for (int i = 1; i <= 20; ++i) {
    send_acked(c, {ids[static_cast<std::size_t>(i) % ids.size()]}, name, "m-" + std::to_string(i),
               i);
    sum += i;
  }
  REQUIRE(query_total(c.clients(), ids[1], name) == sum);

  const std::string leader = ready_leader(c, g);
  REQUIRE_FALSE(leader.empty());
  std::vector<std::string> survivors;
  for (const auto& id : ids)
    if (id != leader) survivors.push_back(id);
  const auto killed_at = std::chrono::steady_clock::now();
  c.kill9(leader);

  // Another member serves the agent with its whole ledger; until it leads,
  // calls are answered 503 (never a wrong or older total).
  std::optional<int64_t> total;
  REQUIRE_MESSAGE(poll_until(
                      [&] {
                        auto a = c.post(survivors[0], agent_path(name) + "/query", {{"get", true}});
                        if (a.transport_ok && a.status == 200) {
                          total = a.body.value("total", int64_t{-1});
                          return true;
                        }
                        REQUIRE_MESSAGE((!a.transport_ok || a.status == 503), a.describe());
                        return false;
                      },
                      30s, 50ms),
                  "no member served " << name << " after " << leader << " died:\n"
                                      << c.logs());
  const auto served_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - killed_at)
                             .count();
  std::printf("replication: group %u served again %lld ms after its leader was killed\n", g,
              static_cast<long long>(served_ms));
  CHECK(total == sum);
  const std::string new_leader = ready_leader(c, g);
  CHECK_FALSE(new_leader.empty());
  CHECK(new_leader != leader);

  // It goes on taking messages through either survivor.
  for (int i = 21; i <= 30; ++i) {
    send_acked(c, survivors, name, "m-" + std::to_string(i), i);
    sum += i;
  }
  // A message retried under an id it already took lands once.
  send_acked(c, survivors, name, "m-5", 5);
  CHECK(query_total(c.clients(), survivors[1], name) == sum);

  // The killed member returns and catches up: its copy of the group
  // reaches the index the leader has applied.
  c.restart(leader);
  REQUIRE_MESSAGE(
      poll_until(
          [&] {
            auto mine = group_entry(c, leader, g);
            auto lead =
                group_entry(c, ready_leader(c, g).empty() ? new_leader : ready_leader(c, g), g);
            return !mine.empty() && !lead.empty() && mine.value("applied_index", 0ull) > 0 &&
                   mine.value("applied_index", 0ull) == lead.value("applied_index", 1ull);
          },
          30s, 100ms),
      leader << " did not catch up:\n"
             << c.logs());
  auto events = read_ledger(c.clients(), survivors[0], name);
  auto ids_seen = message_ids(events);
  CHECK(ids_seen.size() == 30);
  for (const auto& [id, n] : ids_seen) CHECK_MESSAGE(n == 1, id << " received " << n << " times");
  CHECK(query_total(c.clients(), leader, name) == sum);
}
