// Partitions done in the kernel, not in Keel (docs/replication.md): three
// keeld members with replication 3, each in its own network namespace with
// its own address (cluster/private_network.hpp says why a namespace each),
// links cut by nftables rules that drop a member's packets on another's
// input. The test talks to each member's HTTP API on that member's own
// loopback, from inside its namespace, so no rule ever touches the
// client's traffic.
//
// Each case skips (printing keel-partition-tests-skipped and why, which
// ctest reports as skipped) where the machine does not permit network
// namespaces, veth links, bridges or nftables; it never fails for that.
//
// What is checked, per case: a leader cut from both followers (the
// majority elects a leader and serves, the old leader acknowledges nothing
// and steps down on heal), a one-way cut (every group still serves) and a
// flapping link under writes; after each, every message is resent until
// acknowledged under its own id and every counter's total is the sum of
// its messages, read through every member, with each id in the ledger
// once and every replica at the leader's applied index.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/agent_requests.hpp"
#include "cluster/private_network.hpp"
#include "cluster/test_cluster.hpp"
#include "config/cluster_config.hpp"

using namespace keel;
using namespace keel::test::cluster;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t shards = 16;
constexpr uint32_t groups = 4;
constexpr uint32_t election_timeout_ms = 1000;
constexpr const char* skip_mark = "keel-partition-tests-skipped";

uint32_t group_of(const std::string& name) {
  return config::group_of_shard(config::shard_of(name, shards), groups);
}

// The first of prefix0, prefix1, ... in group g.
std::string name_in_group(const std::string& prefix, uint32_t g) {
  for (int i = 0; i < 10'000; ++i)
    if (group_of(prefix + std::to_string(i)) == g) return prefix + std::to_string(i);
  FAIL("no name with prefix " << prefix << " in group " << g);
  return {};
}

// A message sent under its own id, and whether a 202 acknowledged it.
struct sent {
  std::string agent;
  std::string id;
  int add = 0;
  bool acked = false;
};

// Whether an answer to a message is one a client retries (nothing was
// promised): no response, 503 (no leader reachable in leader_wait_ms), or
// 504 (the leader it was forwarded to did not answer within
// forward_timeout_ms: it may be waiting for a majority across the cut).
bool retryable(const answer& a) {
  return !a.transport_ok || a.status == 503 || a.status == 504;
}

// Three members n1..n3, each in its own namespace of a private network.
struct partitioned_cluster {
  const std::vector<std::string> ids{"n1", "n2", "n3"};
  std::unique_ptr<private_network> net;  // outlives the cluster's processes
  std::unique_ptr<test_cluster> c;

  // Starts the members and waits until every group has a ready leader.
  // false (with the reason printed) when the machine cannot make the
  // private network: the case is skipped.
  bool start() {
    std::string why_not;
    net = private_network::make(ids, why_not);
    if (!net) {
      std::printf("%s: %s\n", skip_mark, why_not.c_str());
      std::fflush(stdout);
      return false;
    }
    c = std::make_unique<test_cluster>(static_cast<int>(ids.size()), shards);
    json members = json::array();
    for (const auto& id : ids) {
      json m = config::to_json(c->member(id));
      m["host"] = net->address(id);  // peers connect across the bridge
      m["http_host"] = "127.0.0.1";  // the member's own loopback
      members.push_back(m);
    }
    c->set_config_keys({{"replication", 3},
                        {"groups", groups},
                        {"election_timeout_ms", election_timeout_ms},
                        {"raft_heartbeat_ms", 100},
                        {"leader_wait_ms", 3000},
                        {"members", members}});
    const auto cfg = c->write_config("cluster", ids);
    for (const auto& id : ids) net->in(id, [&] { c->start(id, cfg); });
    std::string last;
    REQUIRE_MESSAGE(poll_until(
                        [&] {
                          for (const auto& id : ids) {
                            auto a = call(id, "GET", "/v1/cluster");
                            if (!a.transport_ok || a.status != 200) return false;
                            for (const auto& other : ids)
                              if (other != id && !member_entry(a.body, other).value("up", false)) {
                                last = id + " sees " + other + " down";
                                return false;
                              }
                          }
                          return true;
                        },
                        30s, 100ms),
                    "the members did not connect: " << last << "\n"
                                                    << c->logs());
    for (uint32_t g = 0; g < groups; ++g)
      REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(g).empty(); }, 30s, 100ms),
                      "group " << g << " elected no leader:\n"
                               << c->logs());
    return true;
  }

  answer call(const std::string& id, std::string_view method, const std::string& target,
              std::string_view body = {}) {
    return net->in(id, [&] { return c->call(id, method, target, body); });
  }

  // One attempt at a message through `via`, on the caller's clients.
  answer send(client_set& clients, const std::string& via, const sent& m) {
    json body{{"id", m.id}, {"body", {{"add", m.add}}}};
    return net->in(via, [&] {
      return clients.call(via, "POST", agent_path(m.agent) + "/messages", body.dump());
    });
  }

  // Resends m through the members in turn until one acknowledges it; a
  // retryable answer is retried, anything else fails the test.
  void send_acked(sent& m, const std::vector<std::string>& via,
                  std::chrono::milliseconds timeout = 30s) {
    answer last;
    bool ok = poll_until(
        [&] {
          for (const auto& v : via) {
            last = send(c->clients(), v, m);
            if (last.transport_ok && last.status == 202) return true;
            REQUIRE_MESSAGE(retryable(last),
                            "message " << m.id << " via " << v << ": " << last.describe());
          }
          return false;
        },
        timeout, 100ms);
    REQUIRE_MESSAGE(ok, "message " << m.id << " never acknowledged: " << last.describe() << "\n"
                                   << c->logs());
    m.acked = true;
  }

  // The group's entry in `id`'s GET /v1/cluster; {} when absent.
  json group_entry(const std::string& id, uint32_t g) {
    auto a = call(id, "GET", "/v1/cluster");
    if (!a.transport_ok || a.status != 200 || !a.body.contains("groups")) return json::object();
    for (const auto& e : a.body["groups"])
      if (e.value("group", 0u) == g) return e;
    return json::object();
  }

  // The member of `among` that leads group g and is ready; "" when none.
  std::string ready_leader(uint32_t g, const std::vector<std::string>& among) {
    for (const auto& id : among) {
      auto e = group_entry(id, g);
      if (e.value("role", "") == "leader" && e.value("ready", false)) return id;
    }
    return {};
  }
  std::string ready_leader(uint32_t g) { return ready_leader(g, ids); }

  std::vector<std::string> others(const std::string& id) const {
    std::vector<std::string> out;
    for (const auto& o : ids)
      if (o != id) out.push_back(o);
    return out;
  }

  // Waits until one ready leader of every group is known to all members
  // and every replica has applied what the leader has.
  void wait_settled(std::chrono::milliseconds timeout = 40s) {
    std::string last;
    bool ok = poll_until(
        [&] {
          for (uint32_t g = 0; g < groups; ++g) {
            const std::string leader = ready_leader(g);
            if (leader.empty()) {
              last = "group " + std::to_string(g) + " has no ready leader";
              return false;
            }
            const auto applied = group_entry(leader, g).value("applied_index", 0ull);
            for (const auto& id : ids) {
              auto e = group_entry(id, g);
              if (e.value("leader", "") != leader || e.value("applied_index", 0ull) != applied) {
                last = "group " + std::to_string(g) + " on " + id + ": " + e.dump() + " (leader " +
                       leader + " applied " + std::to_string(applied) + ")";
                return false;
              }
            }
          }
          return true;
        },
        timeout, 200ms);
    REQUIRE_MESSAGE(ok, "the groups did not settle: " << last << "\n" << c->logs());
  }

  // Resends every unacknowledged message until acknowledged, then checks
  // through every member: each agent's total is the sum of its messages,
  // each id is in its ledger once, and the ledgers read alike.
  void check_nothing_lost(std::vector<sent>& messages) {
    for (auto& m : messages)
      if (!m.acked) send_acked(m, ids);
    wait_settled();
    std::map<std::string, int64_t> sums;
    std::map<std::string, std::map<std::string, int>> expected;  // agent -> id -> 1
    for (const auto& m : messages) {
      sums[m.agent] += m.add;
      expected[m.agent][m.id] = 1;
    }
    for (const auto& [agent, sum] : sums) {
      std::vector<json> first;
      for (const auto& via : ids) {
        auto total = net->in(via, [&] { return query_total(c->clients(), via, agent); });
        CHECK_MESSAGE(total == sum, agent << " via " << via << ": total "
                                          << (total ? std::to_string(*total) : "none")
                                          << ", acknowledged " << sum);
        auto events = net->in(via, [&] { return read_ledger(c->clients(), via, agent); });
        CHECK_MESSAGE(message_ids(events) == expected[agent],
                      agent << " via " << via << " received:\n"
                            << summary(events, "message_received"));
        if (first.empty()) first = events;
        CHECK_MESSAGE(events == first, agent << "'s ledger read through " << via
                                             << " differs from the one read through "
                                             << ids.front());
      }
    }
    // Reads go to the leader; each replica's own copy is compared too:
    // every agent's last seq and chain head, read from its store.
    for (uint32_t g = 0; g < groups; ++g) {
      json first;
      for (const auto& id : ids) {
        auto a = call(id, "GET", "/v1/cluster/groups/" + std::to_string(g) + "/digest");
        REQUIRE_MESSAGE((a.transport_ok && a.status == 200), id << ": " << a.describe());
        if (first.is_null()) first = a.body["agents"];
        CHECK_MESSAGE(a.body["agents"] == first,
                      "group " << g << ": " << id << "'s copy " << a.body["agents"].dump()
                               << " differs from " << ids.front() << "'s " << first.dump());
      }
    }
  }
};

}  // namespace

TEST_CASE("a leader cut from both followers acknowledges nothing and steps down on heal") {
  partitioned_cluster pc;
  if (!pc.start()) return;
  const std::string name = "ticket/1";
  const uint32_t g = group_of(name);
  auto spawned =
      pc.call(pc.ids[0], "POST", "/v1/agents", json{{"name", name}, {"type", "counter"}}.dump());
  REQUIRE_MESSAGE((spawned.transport_ok && spawned.status == 201), spawned.describe());
  std::vector<sent> messages;
  for (int i = 1; i <= 10; ++i) {
    messages.push_back({name, "before-" + std::to_string(i), i});
    pc.send_acked(messages.back(), {pc.ids[static_cast<std::size_t>(i) % pc.ids.size()]});
  }

  const std::string old_leader = pc.ready_leader(g);
  REQUIRE_FALSE(old_leader.empty());
  const auto old_term = pc.group_entry(old_leader, g).value("term", 0ull);
  const auto majority = pc.others(old_leader);
  // The old leader acknowledges nothing: its clients get 503 (or no
  // answer), never a 202; asked at once after the cut, while it may still
  // believe it leads, and again once the majority has moved on.
  auto send_to_old_leader = [&](const std::string& id, int add) {
    messages.push_back({name, id, add});
    auto a = pc.send(pc.c->clients(), old_leader, messages.back());
    std::printf("partition: the cut-off %s answered message %s with %s\n", old_leader.c_str(),
                id.c_str(),
                a.transport_ok ? ("HTTP " + std::to_string(a.status)).c_str() : a.error.c_str());
    CHECK_MESSAGE(retryable(a), "the cut-off " << old_leader << " answered message " << id << ": "
                                               << a.describe());
  };
  const auto cut_at = std::chrono::steady_clock::now();
  for (const auto& m : majority) pc.net->cut(old_leader, m);
  send_to_old_leader("minority-0", 1000);

  // The majority elects a leader of its own within a few election timeouts
  // of the cut.
  const auto elected_by = cut_at + std::chrono::milliseconds(6 * election_timeout_ms);
  std::string new_leader;
  REQUIRE_MESSAGE(poll_until(
                      [&] {
                        new_leader = pc.ready_leader(g, majority);
                        return !new_leader.empty();
                      },
                      std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   elected_by - std::chrono::steady_clock::now()),
                               std::chrono::milliseconds(100)),
                      50ms),
                  "the majority " << majority[0] << ", " << majority[1]
                                  << " elected no leader of group " << g << ":\n"
                                  << pc.c->logs());
  std::printf("partition: group %u led by %s %lld ms after its leader %s was cut off\n", g,
              new_leader.c_str(),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - cut_at)
                                         .count()),
              old_leader.c_str());
  // ... and serves through either of its members.
  for (int i = 1; i <= 10; ++i) {
    messages.push_back({name, "majority-" + std::to_string(i), 100 + i});
    pc.send_acked(messages.back(), {majority[static_cast<std::size_t>(i) % 2]});
  }

  // Nor does it answer a read with a total that misses the majority's
  // acknowledged writes.
  int64_t acked_sum = 0;
  for (const auto& m : messages) acked_sum += m.acked ? m.add : 0;
  for (int i = 1; i <= 3; ++i) send_to_old_leader("minority-" + std::to_string(i), 1000 + i);
  auto read = pc.call(old_leader, "POST", agent_path(name) + "/query", json{{"get", true}}.dump());
  std::printf(
      "partition: the cut-off %s answered a read with %s\n", old_leader.c_str(),
      read.transport_ok ? ("HTTP " + std::to_string(read.status)).c_str() : read.error.c_str());
  if (read.transport_ok && read.status == 200)
    CHECK_MESSAGE(read.body.value("total", int64_t{-1}) == acked_sum,
                  "the cut-off " << old_leader << " served a stale read: " << read.describe());
  else
    CHECK_MESSAGE(retryable(read), read.describe());

  // Heal: the old leader hears a higher term: its term is over. It follows,
  // or, when it is the group's preferred replica, may soon lead again in a
  // later term once it has caught up (leadership moves back).
  pc.net->heal_all();
  json entry;
  CHECK_MESSAGE(poll_until(
                    [&] {
                      entry = pc.group_entry(old_leader, g);
                      const std::string role = entry.value("role", "");
                      return (role == "follower" || role == "leader") &&
                             entry.value("term", 0ull) > old_term;
                    },
                    20s, 100ms),
                old_leader << " did not step down after the heal: " << entry.dump() << "\n"
                           << pc.c->logs());
  pc.check_nothing_lost(messages);
}

TEST_CASE("a one-way cut between two members leaves every group serving and loses nothing") {
  partitioned_cluster pc;
  if (!pc.start()) return;
  std::vector<std::string> agents;
  for (uint32_t g = 0; g < groups; ++g) {
    agents.push_back(name_in_group("acct/", g));
    auto a = pc.call(pc.ids[g % pc.ids.size()], "POST", "/v1/agents",
                     json{{"name", agents.back()}, {"type", "counter"}}.dump());
    REQUIRE_MESSAGE((a.transport_ok && a.status == 201), a.describe());
  }
  std::vector<sent> messages;
  for (std::size_t i = 0; i < agents.size(); ++i) {
    messages.push_back({agents[i], "before-" + std::to_string(i), 1});
    pc.send_acked(messages.back(), pc.ids);
  }

  const std::string leader = pc.ready_leader(0);
  REQUIRE_FALSE(leader.empty());
  const std::string follower = pc.others(leader).front();
  SUBCASE("the leader of a group does not hear a follower that hears it") {
    // Its heartbeats arrive, the answers to them do not.
    pc.net->deafen(leader, follower);
  }
  SUBCASE("a follower does not hear the leader of a group that hears it") {
    // It misses the heartbeats and asks for votes the leader receives.
    pc.net->deafen(follower, leader);
  }

  // Every group takes new messages through every member (a member that
  // cannot reach the group's leader answers 503, and the same id is sent
  // again), within the bound of send_acked.
  for (int round = 1; round <= 2; ++round)
    for (std::size_t i = 0; i < agents.size(); ++i)
      for (const auto& via : pc.ids) {
        messages.push_back({agents[i], "cut-" + via + "-" + std::to_string(round), 10 * round});
        std::vector<std::string> order{via};
        for (const auto& o : pc.others(via)) order.push_back(o);
        pc.send_acked(messages.back(), order, 40s);
      }
  for (uint32_t g = 0; g < groups; ++g)
    CHECK_MESSAGE(!pc.ready_leader(g).empty(), "group " << g << " has no ready leader");

  pc.net->heal_all();
  pc.check_nothing_lost(messages);
}

TEST_CASE("a flapping link under writes loses no acknowledged message and takes none twice") {
  partitioned_cluster pc;
  if (!pc.start()) return;
  std::vector<std::string> agents;
  for (uint32_t g = 0; g < groups; ++g) {
    agents.push_back(name_in_group("flap/", g));
    auto a = pc.call(pc.ids[0], "POST", "/v1/agents",
                     json{{"name", agents.back()}, {"type", "counter"}}.dump());
    REQUIRE_MESSAGE((a.transport_ok && a.status == 201), a.describe());
  }
  const std::string leader = pc.ready_leader(group_of(agents[0]));
  REQUIRE_FALSE(leader.empty());
  const std::string follower = pc.others(leader).front();

  // One writer: each message once, through the members in turn; what is
  // not acknowledged is resent after the flapping.
  std::vector<sent> messages;
  std::vector<std::string> refused;  // answers that are neither 202 nor retryable
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    client_set clients(pc.c->http_ports(), 10s);
    for (int i = 0; !stop.load() && i < 100'000; ++i) {
      sent m{agents[static_cast<std::size_t>(i) % agents.size()], "flap-" + std::to_string(i),
             1 + i % 7};
      auto a = pc.send(clients, pc.ids[static_cast<std::size_t>(i) % pc.ids.size()], m);
      m.acked = a.transport_ok && a.status == 202;
      if (!m.acked && !retryable(a)) refused.push_back(m.id + ": " + a.describe());
      messages.push_back(m);
    }
  });
  struct joiner {
    std::atomic<bool>& stop;
    std::thread& t;
    ~joiner() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join_writer{stop, writer};

  // The link between the leader of group 0 and one follower goes down and
  // up every second for 20 s.
  auto next = std::chrono::steady_clock::now();
  bool down = false;
  for (int flip = 0; flip < 20; ++flip) {
    next += 1s;
    if (down)
      pc.net->join(leader, follower);
    else
      pc.net->cut(leader, follower);
    down = !down;
    // Pacing the flips, not waiting for the cluster: nothing is observed.
    std::this_thread::sleep_until(next);
  }
  pc.net->heal_all();
  stop = true;
  writer.join();

  std::size_t acked = 0;
  for (const auto& m : messages) acked += m.acked ? 1 : 0;
  std::printf("partition: %zu of %zu messages acknowledged while the link flapped\n", acked,
              messages.size());
  CHECK(acked > 0);
  CHECK_MESSAGE(refused.empty(), refused.size() << " messages refused, the first "
                                                << (refused.empty() ? "" : refused.front()));
  pc.check_nothing_lost(messages);
}
