// Agent-to-agent messages in a replicated cluster (docs/replication.md):
// an agent's outbox entries are in its group's log, so the loss of the
// sending group's leader, disk and all, loses none of the messages it had
// accepted and not yet delivered; the group's next leader delivers them.
//
// Four members, replication 3, four groups: each group's replicas are
// three of the four members, so two of them can be frozen (SIGSTOP) that
// take the receiving group's majority while the sending group keeps its
// own. The receiver's group then has no leader, and the sender's messages
// wait in its leader's outbox; that leader is SIGKILLed and its data
// directory deleted, and the two are thawed: the group's replica that
// holds the entries takes over.

#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/agent_requests.hpp"
#include "cluster/replicated_cluster.hpp"
#include "cluster/test_cluster.hpp"
#include "config/cluster_config.hpp"

namespace {

// The ready leader of g among `among` (members that answer); "" if none.
std::string ready_leader_among(test_cluster& c, uint32_t g, const std::vector<std::string>& among) {
  for (const auto& id : among) {
    auto e = group_entry(c, id, g);
    if (e.value("role", "") == "leader" && e.value("ready", false)) return id;
  }
  return {};
}

uint64_t queued_in_outbox(test_cluster& c, const std::string& id) {
  auto a = c.call(id, "GET", "/v1/cluster");
  if (!a.transport_ok || a.status != 200) return 0;
  return a.body.value("outbox", json::object()).value("queued", uint64_t{0});
}

}  // namespace

TEST_CASE(
    "replicated: messages an agent sent wait in its group's log and are delivered by the next "
    "leader after the sending leader's disk is lost") {
  test_cluster c(4, shards);
  // Two groups whose replicas differ: the receiver's group has one replica
  // the sender's has not (x) and shares the others; freezing x and one
  // shared member (y) leaves the receiver's group without a majority and
  // the sender's with two of its three.
  const auto members = members_of(c);
  uint32_t gp = 0, gc = 0;
  std::string x, y;
  for (uint32_t a = 0; a < groups && x.empty(); ++a)
    for (uint32_t b = 0; b < groups && x.empty(); ++b) {
      auto rp = config::group_replicas(members, a, 3), rc = config::group_replicas(members, b, 3);
      std::set<std::string> sp(rp.begin(), rp.end());
      for (const auto& m : rc)
        if (!sp.count(m)) x = m;
      if (x.empty()) continue;
      for (const auto& m : rc)
        if (sp.count(m)) y = m;
      gp = a;
      gc = b;
    }
  REQUIRE_MESSAGE(!x.empty(), "every group has the same replicas: no pair to test with");
  const std::string pong = name_in_group("pong/", gc);
  const std::vector<std::string> pings{name_in_group("ping/a", gp), name_in_group("ping/b", gp)};
  const std::string agents = write_ping_type(c.root(), pong);
  start_replicated(c, 3, 3000, {"--agents", agents});
  const auto ids = c.ids();
  spawn_counter(c.clients(), ids[0], pong);
  for (const auto& p : pings) spawn(c.clients(), ids[0], p, "ping");

  std::vector<std::string> awake;
  for (const auto& id : ids)
    if (id != x && id != y) awake.push_back(id);
  c.process(x).freeze();
  c.process(y).freeze();
  std::string leader;
  REQUIRE_MESSAGE(poll_until(
                      [&] {
                        leader = ready_leader_among(c, gp, awake);
                        return !leader.empty();
                      },
                      30s, 100ms),
                  "the sending group has no leader with " << x << " and " << y << " frozen\n"
                                                          << c.logs());

  // Each message makes its ping send {"add": 1} to pong, whose group has
  // no leader now: the sends wait in the sending leader's outbox.
  constexpr int per_ping = 4;
  int sent = 0;
  for (const auto& p : pings)
    for (int i = 0; i < per_ping; ++i, ++sent)
      send_acked(c, awake, p, p + "-m" + std::to_string(i), 1);
  REQUIRE_MESSAGE(
      poll_until([&] { return queued_in_outbox(c, leader) >= static_cast<uint64_t>(sent); }, 30s,
                 100ms),
      leader << "'s outbox holds " << queued_in_outbox(c, leader) << " of " << sent << "\n"
             << c.logs());

  // The sending leader's disk is lost, and the frozen members return at
  // once. The sending group's entries are then on one awake replica only;
  // the other (y) missed them. The wiped member comes back under a new
  // raft id, not as the voter it was (docs/replication.md, "A member that
  // lost its data"), so its vote cannot elect y: the replica that holds
  // the entries leads, and the receiver's group elects too.
  c.wipe(leader);
  c.process(x).thaw();
  c.process(y).thaw();
  std::optional<int64_t> total;
  bool all = poll_until(
      [&] {
        for (const auto& via : ids) {
          total = query_total(c.clients(), via, pong);
          if (total) return *total >= sent;
        }
        return false;
      },
      60s, 200ms);
  CHECK_MESSAGE(all, "pong's total is " << (total ? std::to_string(*total) : "unknown") << " of "
                                        << sent << "\n"
                                        << c.logs());
  // Delivered again by the new leader where the old one had got as far as
  // the owner: taken once all the same.
  CHECK(total == sent);

  // The wiped member runs the group under an incarnation of its id, a
  // voter again once it caught up.
  // (0 until its groups run: it may still be waiting on an answer.)
  uint64_t incarnation = 0;
  REQUIRE(poll_until(
      [&] {
        const auto self = c.call(leader, "GET", "/v1/cluster");
        if (self.transport_ok && self.status == 200)
          incarnation = self.body.value("raft_id", uint64_t{0});
        return incarnation != 0;
      },
      30s, 100ms));
  CHECK(incarnation > 0xFFFF);
  CHECK(poll_until(
      [&] {
        const std::string now = ready_leader_among(c, gp, ids);
        if (now.empty()) return false;
        for (const auto& r : group_entry(c, now, gp).value("replicas", json::array()))
          if (r.value("member", "") == leader)
            return r.value("raft_id", uint64_t{0}) == incarnation && r.value("role", "") == "voter";
        return false;
      },
      30s, 100ms));
}
