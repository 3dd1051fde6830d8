// A cluster of real keeld processes on 127.0.0.1: clients talk to random
// members while members are SIGKILLed, frozen, refused and added. Every
// acknowledged message must take effect exactly once, on the one node that
// owns its agent. Membership changes: cluster_membership_test.cpp.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/agent_requests.hpp"
#include "cluster/test_cluster.hpp"

using namespace keel::test::cluster;
using namespace std::chrono_literals;

TEST_CASE("messages sent through random nodes survive SIGKILLs of random nodes exactly once") {
  constexpr int agent_count = 300;
  constexpr int message_count = 6000;
  constexpr int kill_count = 4;
  constexpr int kill_every = message_count / (kill_count + 1);
  // Messages sent while the victim is down, before it is restarted.
  constexpr int sent_while_down = 300;
  constexpr int client_count = 4;

  test_cluster c(3);
  const auto ids = c.ids();
  const auto cfg = c.write_config("cluster", ids);
  for (const auto& id : ids) c.start(id, cfg);
  c.wait_connected(ids);

  const unsigned seed = std::random_device{}();
  std::printf("exactly-once cluster test seed %u\n", seed);
  std::mt19937 rng(seed);
  auto name = [](int i) { return "exact/agent-" + std::to_string(i); };
  for (int i = 0; i < agent_count; ++i)
    spawn_counter(c.clients(), ids[rng() % ids.size()], name(i));

  std::vector<planned_message> plan;
  for (int i = 0; i < message_count; ++i)
    plan.push_back({"x-" + std::to_string(i), static_cast<int>(rng() % agent_count),
                    static_cast<int>(rng() % 9) + 1});

  std::vector<std::atomic<int>> outcomes(message_count);
  std::vector<std::atomic<bool>> up(ids.size());
  for (auto& u : up) u = true;
  std::atomic<int> next{0}, finished{0}, queued_acks{0}, refusals{0};
  std::atomic<bool> abort{false};
  std::mutex note_mu;
  std::string first_refusal;
  std::map<std::string, int> failures;  // why messages were not acknowledged

  auto client = [&](unsigned client_seed) {
    client_set http(c.http_ports(), 10s);
    std::mt19937 r(client_seed);
    for (int i = next++; i < message_count && !abort; i = next++) {
      const auto& m = plan[static_cast<std::size_t>(i)];
      // A random member the test believes is up (one may die meanwhile).
      std::size_t via = r() % ids.size();
      for (std::size_t k = 0; k < ids.size() && !up[via]; ++k) via = (via + 1) % ids.size();
      auto a = http.post(ids[via], agent_path(name(m.agent)) + "/messages",
                         {{"id", m.id}, {"body", {{"add", m.add}}}});
      if (a.transport_ok && a.status == 202) {
        outcomes[static_cast<std::size_t>(i)] = acked;
        if (a.body.is_object() && a.body.value("queued", false)) ++queued_acks;
      } else {
        outcomes[static_cast<std::size_t>(i)] = not_acked;
        {
          std::lock_guard lk(note_mu);
          ++failures[why_not(a)];
        }
        // A 4xx is a refusal, not a failure to reach the owner: a bug.
        if (a.transport_ok && a.status < 500 && refusals++ == 0) {
          std::lock_guard lk(note_mu);
          first_refusal = m.id + " via " + ids[via] + ": " + a.describe();
        }
      }
      ++finished;
    }
  };

  const auto started = std::chrono::steady_clock::now();
  std::vector<std::string> victims;
  {
    std::vector<std::thread> clients;
    // Stops and joins the clients when a REQUIRE below throws.
    struct joiner {
      std::vector<std::thread>& ts;
      std::atomic<bool>& abort;
      ~joiner() {
        abort = true;
        for (auto& t : ts)
          if (t.joinable()) t.join();
      }
    } join_all{clients, abort};
    for (int k = 0; k < client_count; ++k) clients.emplace_back(client, seed + 1 + k);

    for (int k = 1; k <= kill_count; ++k) {
      REQUIRE_MESSAGE(poll_until([&] { return finished >= k * kill_every; }, 120s),
                      "the clients stalled at " << finished << " messages\n"
                                                << c.logs());
      std::size_t v = rng() % ids.size();
      up[v] = false;
      c.kill9(ids[v]);
      victims.push_back(ids[v]);
      // The survivors take messages for the victim's agents meanwhile.
      REQUIRE_MESSAGE(
          poll_until(
              [&] { return finished >= std::min(message_count, k * kill_every + sent_while_down); },
              120s),
          "the clients stalled at " << finished << " messages with " << ids[v] << " down\n"
                                    << c.logs());
      c.restart(ids[v]);
      up[v] = true;
    }
    // The clients send the rest (each message once), then end.
    for (auto& t : clients) t.join();
  }
  const auto sent = std::chrono::steady_clock::now();
  CHECK_MESSAGE(refusals == 0, refusals << " messages were refused; the first: " << first_refusal);

  // Every message not acknowledged is sent again, same id and body, until it
  // is: the owner may already have it (then it answers duplicate).
  c.wait_connected(ids);
  int resent = 0;
  std::string last_failure;
  for (int i = 0; i < message_count; ++i) {
    auto& o = outcomes[static_cast<std::size_t>(i)];
    if (o == acked) continue;
    ++resent;
    const auto& m = plan[static_cast<std::size_t>(i)];
    bool ok = poll_until(
        [&] {
          auto a = c.post(ids[rng() % ids.size()], agent_path(name(m.agent)) + "/messages",
                          {{"id", m.id}, {"body", {{"add", m.add}}}});
          if (a.transport_ok && a.status == 202) return true;
          last_failure = m.id + ": " + a.describe();
          return false;
        },
        30s, 20ms);
    if (ok) o = acked;
  }
  int unacknowledged = 0;
  for (const auto& o : outcomes) unacknowledged += o == acked ? 0 : 1;
  REQUIRE_MESSAGE(unacknowledged == 0, unacknowledged << " messages were never acknowledged; last: "
                                                      << last_failure << "\n"
                                                      << c.logs());

  c.wait_outboxes_empty(90s);

  std::vector<int64_t> expected(agent_count, 0);
  std::vector<std::set<std::string>> expected_ids(agent_count);
  for (const auto& m : plan) {
    expected[static_cast<std::size_t>(m.agent)] += m.add;
    expected_ids[static_cast<std::size_t>(m.agent)].insert(m.id);
  }
  // Totals: a batch may still be on its way to its owner when the outboxes
  // read empty, so each agent gets a bounded wait.
  std::map<int, std::string> wrong;
  for (int i = 0; i < agent_count; ++i) wrong[i] = "";
  poll_until(
      [&] {
        for (auto it = wrong.begin(); it != wrong.end();) {
          auto t = query_total(c.clients(), ids[rng() % ids.size()], name(it->first));
          if (t && *t == expected[static_cast<std::size_t>(it->first)]) {
            it = wrong.erase(it);
            continue;
          }
          it->second = t ? std::to_string(*t) : std::string("unreadable");
          ++it;
        }
        return wrong.empty();
      },
      30s, 200ms);
  for (const auto& [i, got] : wrong)
    CHECK_MESSAGE(false, name(i) << ": total " << got << ", expected "
                                 << expected[static_cast<std::size_t>(i)]);

  // The ledgers: each acknowledged message id exactly once, no other.
  int duplicated = 0, missing = 0;
  for (int i = 0; i < agent_count; ++i) {
    auto events = read_ledger(c.clients(), ids[rng() % ids.size()], name(i));
    auto counts = message_ids(events);
    std::set<std::string> seen;
    for (const auto& [id, n] : counts) {
      seen.insert(id);
      if (n != 1) {
        ++duplicated;
        CHECK_MESSAGE(n == 1, name(i)
                                  << ": message " << id << " is in the ledger " << n << " times");
      }
    }
    if (seen != expected_ids[static_cast<std::size_t>(i)]) {
      ++missing;
      CHECK_MESSAGE(seen == expected_ids[static_cast<std::size_t>(i)],
                    name(i) << ": the ledger holds " << seen.size() << " message ids, expected "
                            << expected_ids[static_cast<std::size_t>(i)].size());
    }
  }
  // The outbox path was taken: some messages were queued for a dead owner.
  CHECK(queued_acks > 0);
  const auto done = std::chrono::steady_clock::now();
  std::string killed;
  for (const auto& v : victims) killed += v + " ";
  MESSAGE("sent " << message_count << " messages in "
                  << std::chrono::duration_cast<std::chrono::milliseconds>(sent - started).count()
                  << " ms with SIGKILLs of " << killed << "; " << queued_acks.load()
                  << " acknowledged as queued, " << resent << " sent again; checked in "
                  << std::chrono::duration_cast<std::chrono::milliseconds>(done - sent).count()
                  << " ms; " << duplicated << " ledgers with duplicates, " << missing
                  << " with other ids");
  for (const auto& [why, n] : failures) MESSAGE(n << " not acknowledged: " << why);
  CHECK(check_replays(c, ids[rng() % ids.size()]) == agent_count);
}

TEST_CASE("agent-to-agent messages cross nodes by name and survive a kill of either side") {
  std::string side;
  SUBCASE("the receiver's node is killed") {
    side = "receiver";
  }
  SUBCASE("the sender's node is killed") {
    side = "sender";
  }
  constexpr int message_count = 40;
  constexpr int kill_at = 10;
  constexpr int restart_at = 25;

  test_cluster c(3);
  const auto ids = c.ids();
  const auto map = c.initial_map(ids);
  // ping lives on n1 and tells pong, which lives on n2, to add 1.
  const std::string ping = name_owned_by(map, "a2a/ping-", "n1");
  const std::string pong = name_owned_by(map, "a2a/pong-", "n2");
  const std::string agents = write_ping_type(c.root(), pong);
  const auto cfg = c.write_config("cluster", ids);
  for (const auto& id : ids) c.start(id, cfg, {"--agents", agents});
  c.wait_connected(ids);
  spawn_counter(c.clients(), "n3", pong);
  spawn(c.clients(), "n3", ping, "ping");

  const std::string victim = side == "receiver" ? "n2" : "n1";
  std::mt19937 rng(std::random_device{}());
  std::vector<bool> acknowledged(message_count, false);
  auto send = [&](int i, const std::string& via) {
    auto a = c.post(via, agent_path(ping) + "/messages",
                    {{"id", "a2a-" + std::to_string(i)}, {"body", "message " + std::to_string(i)}});
    if (a.transport_ok && a.status == 202) acknowledged[static_cast<std::size_t>(i)] = true;
  };
  for (int i = 0; i < message_count; ++i) {
    if (i == kill_at) c.kill9(victim);
    if (i == restart_at) {
      if (side == "receiver") {
        // ping has passed on every message so far while pong's node was
        // down: they wait in n1's outbox.
        auto turns = [&] { return loop_turns(c.clients(), "n3", ping); };
        REQUIRE_MESSAGE(poll_until([&] { return turns() >= restart_at; }, 60s),
                        "ping completed " << turns() << " turns\n"
                                          << c.logs());
      }
      c.restart(victim);
    }
    std::vector<std::string> running;
    for (const auto& id : ids)
      if (c.running(id)) running.push_back(id);
    send(i, running[rng() % running.size()]);
  }
  c.wait_connected(ids);
  for (int i = 0; i < message_count; ++i) {
    if (acknowledged[static_cast<std::size_t>(i)]) continue;
    bool ok = poll_until(
        [&] {
          send(i, ids[rng() % ids.size()]);
          return acknowledged[static_cast<std::size_t>(i)];
        },
        30s, 20ms);
    REQUIRE_MESSAGE(ok, "message a2a-" << i << " was never acknowledged\n" << c.logs());
  }

  auto turns = [&] { return loop_turns(c.clients(), "n3", ping); };
  REQUIRE_MESSAGE(poll_until([&] { return turns() >= message_count; }, 60s),
                  "ping completed " << turns() << " of " << message_count << " turns\n"
                                    << c.logs());
  c.wait_outboxes_empty();
  int64_t total = -1;
  bool exact = poll_until(
      [&] {
        total = query_total(c.clients(), "n3", pong).value_or(-1);
        return total == message_count;
      },
      30s, 50ms);
  CHECK_MESSAGE(exact, "pong's total is " << total << ", expected " << message_count);
  CHECK(turns() == message_count);

  // pong got each of ping's messages once, by name, from ping.
  auto pong_events = read_ledger(c.clients(), "n1", pong);
  auto received = of_type(pong_events, "message_received");
  std::set<std::string> ids_seen;
  for (const auto& d : received) {
    CHECK(d["from"] == ping);
    CHECK_MESSAGE(ids_seen.insert(d.value("id", "")).second,
                  "pong got message " << d.value("id", "") << " twice");
  }
  auto ping_events = read_ledger(c.clients(), "n2", ping);
  CHECK_MESSAGE(received.size() == message_count, "pong received:\n"
                                                      << summary(pong_events, "message_received")
                                                      << "ping's sends:\n"
                                                      << summary(ping_events, "effect_started")
                                                      << summary(ping_events, "effect_completed")
                                                      << summary(ping_events, "effect_failed"));
  // ping took each client message once.
  std::set<std::string> turn_ids;
  for (const auto& d : of_type(ping_events, "turn_started"))
    CHECK_MESSAGE(turn_ids.insert(d.value("id", "")).second,
                  "ping started a turn for " << d.value("id", "") << " twice");
  CHECK(turn_ids.size() == message_count);
  if (side == "receiver") {
    // Some of ping's messages waited in the outbox for pong's node.
    int queued = 0;
    for (const auto& d : of_type(ping_events, "effect_completed"))
      if (d["result"].is_object() && d["result"].value("queued", false)) ++queued;
    CHECK(queued > 0);
    MESSAGE(queued << " of ping's messages were queued while pong's node was down");
  }
  CHECK(check_replays(c, "n3") == 2);
}

TEST_CASE("a frozen node is marked down within the connection timeout and recovers after SIGCONT") {
  test_cluster c(3);
  const auto ids = c.ids();
  const auto cfg = c.write_config("cluster", ids);
  for (const auto& id : ids) c.start(id, cfg);
  c.wait_connected(ids);
  const std::string agent = name_owned_by(c.initial_map(ids), "frozen/agent-", "n2");
  spawn_counter(c.clients(), "n1", agent);
  auto before =
      c.post("n1", agent_path(agent) + "/messages", {{"id", "before"}, {"body", {{"add", 7}}}});
  REQUIRE_MESSAGE((before.transport_ok && before.status == 202), before.describe());
  CHECK_FALSE(before.body.value("queued", false));

  auto n2_up = [&] { return member_entry(c.status("n1"), "n2").value("up", false); };
  c.process("n2").freeze();
  const auto frozen = std::chrono::steady_clock::now();
  REQUIRE_MESSAGE(poll_until([&] { return !n2_up(); }, 10s, 5ms),
                  "n1 still shows the frozen n2 up: " << c.status("n1").dump());
  const auto noticed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - frozen);
  MESSAGE("n1 marked the frozen n2 down after " << noticed.count() << " ms (timeout "
                                                << connection_timeout_ms << " ms)");
  // A liveness bound, not a benchmark.
  CHECK(noticed.count() < 3 * connection_timeout_ms);

  const auto asked = std::chrono::steady_clock::now();
  auto queued = c.post("n1", agent_path(agent) + "/messages",
                       {{"id", "while-frozen"}, {"body", {{"add", 5}}}});
  REQUIRE_MESSAGE((queued.transport_ok && queued.status == 202), queued.describe());
  CHECK(queued.body.value("queued", false));
  MESSAGE("n1 answered queued after " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::steady_clock::now() - asked)
                                             .count()
                                      << " ms");
  auto read = c.post("n1", agent_path(agent) + "/query", {{"get", true}});
  CHECK_MESSAGE(read.status == 503, read.describe());
  CHECK_MESSAGE((read.body.is_object() && read.body["error"].value("owner", "") == "n2"),
                read.describe());
  CHECK(c.status("n1")["outbox"]["by_node"].value("n2", 0) == 1);

  c.process("n2").thaw();
  REQUIRE_MESSAGE(poll_until(n2_up, 15s), "n1 does not see n2 again: " << c.status("n1").dump()
                                                                       << "\n"
                                                                       << c.logs());
  int64_t total = -1;
  bool delivered = poll_until(
      [&] {
        total = query_total(c.clients(), "n1", agent).value_or(-1);
        return total == 12;
      },
      15s, 20ms);
  CHECK_MESSAGE(delivered, "the total is " << total << " after n2 thawed, expected 12");
  c.wait_outboxes_empty();
  // n3 lost n2 too and reconnects on its own backoff: read through it once
  // it sees n2 again (until then it rightly answers 503).
  c.wait_connected(ids);
  auto counts = message_ids(read_ledger(c.clients(), "n3", agent));
  CHECK(counts == std::map<std::string, int>{{"before", 1}, {"while-frozen", 1}});
  CHECK(check_replays(c, "n1") == 1);
}

TEST_CASE("a node with the wrong secret cannot join") {
  test_cluster c(3);
  const auto ids = c.ids();
  const auto good = c.write_config("cluster", ids);
  const auto bad = c.write_config("impostor", ids, "not-the-cluster-secret-0123456789");
  c.start("n1", good);
  c.start("n2", good);
  c.start("n3", bad);
  c.wait_connected({"n1", "n2"});

  // Each side refuses the other (n3 cannot prove the secret, and cannot
  // check n1's and n2's proofs): down, with the refusal as the detail.
  auto refused = [&](const std::string& viewer, const std::string& peer) {
    json m = member_entry(c.status(viewer), peer);
    return !m.value("up", true) && m.value("detail", "").find("refused") != std::string::npos;
  };
  bool all_refused = poll_until(
      [&] {
        return refused("n1", "n3") && refused("n2", "n3") && refused("n3", "n1") &&
               refused("n3", "n2");
      },
      15s, 20ms);
  REQUIRE_MESSAGE(all_refused, "n1: " << c.status("n1")["members"].dump()
                                      << "\nn2: " << c.status("n2")["members"].dump()
                                      << "\nn3: " << c.status("n3")["members"].dump());

  MESSAGE("n1 sees n3: " << member_entry(c.status("n1"), "n3").value("detail", "")
                         << "; n3 sees n1: "
                         << member_entry(c.status("n3"), "n1").value("detail", ""));
  // And it stays so, over twenty heartbeat periods.
  auto never_up = [&] {
    return !member_entry(c.status("n1"), "n3").value("up", true) &&
           !member_entry(c.status("n2"), "n3").value("up", true) &&
           !member_entry(c.status("n3"), "n1").value("up", true) &&
           !member_entry(c.status("n3"), "n2").value("up", true);
  };
  CHECK(holds_for(never_up, std::chrono::milliseconds(20 * heartbeat_ms)));

  // A message the impostor takes for an agent of n1 waits in its outbox and
  // never reaches n1.
  const std::string agent = name_owned_by(c.initial_map(ids), "guarded/agent-", "n1");
  spawn_counter(c.clients(), "n1", agent);
  auto a = c.post("n3", agent_path(agent) + "/messages",
                  {{"id", "from-impostor"}, {"body", {{"add", 5}}}});
  REQUIRE_MESSAGE((a.transport_ok && a.status == 202), a.describe());
  CHECK(a.body.value("queued", false));
  auto unchanged = [&] { return query_total(c.clients(), "n1", agent) == int64_t{0}; };
  CHECK(holds_for(unchanged, std::chrono::milliseconds(10 * heartbeat_ms)));
  CHECK(c.status("n3")["outbox"]["by_node"].value("n1", 0) == 1);
  CHECK(message_ids(read_ledger(c.clients(), "n1", agent)).empty());
  // Nor can it read n1's agents.
  auto read = c.call("n3", "GET", agent_path(agent));
  CHECK_MESSAGE(read.status == 503, read.describe());
  // n1 cannot list n3's agents: each member of the cluster replays its own.
  CHECK(check_replays(c, "n1", true) == 1);
  CHECK(check_replays(c, "n2", true) == 0);
}
