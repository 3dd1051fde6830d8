#pragma once
// Three keeld members with replication 3, each in its own network namespace
// of a private network (cluster/private_network.hpp), for the partition
// tests: links are cut by nftables rules, and the test talks to each
// member's HTTP API on that member's own loopback, from inside its
// namespace, so no rule ever touches the client's traffic. Extra
// namespaces (not members) can hold servers the members call, such as a
// tool API. Included by one test file each (an anonymous namespace).

#include <doctest/doctest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cluster/private_network.hpp"
#include "cluster/replicated_cluster.hpp"  // shards, groups, group_of and the usings

namespace {

constexpr uint32_t election_timeout_ms = 1000;
constexpr const char* skip_mark = "keel-partition-tests-skipped";

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
inline bool retryable(const answer& a) {
  return !a.transport_ok || a.status == 503 || a.status == 504;
}

// Three members n1..n3, each in its own namespace of a private network.
struct partitioned_cluster {
  const std::vector<std::string> ids{"n1", "n2", "n3"};
  std::unique_ptr<private_network> net;  // outlives the cluster's processes
  std::unique_ptr<test_cluster> c;
  // Set before start(): namespaces of the private network that are not
  // members (addresses after the members'), and flags every member gets.
  std::vector<std::string> extra_namespaces;
  std::vector<std::string> member_args;

  // Starts the members and waits until every group has a ready leader.
  // false (with the reason printed) when the machine cannot make the
  // private network: the case is skipped.
  bool start() {
    std::string why_not;
    std::vector<std::string> spaces = ids;
    spaces.insert(spaces.end(), extra_namespaces.begin(), extra_namespaces.end());
    net = private_network::make(spaces, why_not);
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
    for (const auto& id : ids) net->in(id, [&] { c->start(id, cfg, member_args); });
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
