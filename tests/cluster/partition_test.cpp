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

#include "cluster/partitioned_cluster.hpp"

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
