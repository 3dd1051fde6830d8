// Replicated groups end to end (docs/replication.md): three keeld members
// with replication 3 on 127.0.0.1. The leader of an agent's group is
// SIGKILLed; another member takes the group over within the election
// timeout and serves the agent with its whole ledger, and the killed member
// catches up when it returns.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/agent_requests.hpp"
#include "cluster/replicated_cluster.hpp"
#include "cluster/test_cluster.hpp"
#include "config/cluster_config.hpp"
#include "support/cli_runner.hpp"
#include "support/fake_tool_server.hpp"

using namespace keel;
using namespace keel::test::cluster;
using namespace std::chrono_literals;

TEST_CASE("a replicated agent is served by another member after its leader is SIGKILLed") {
  test_cluster c(3, shards);
  start_replicated(c, 3);
  const auto ids = c.ids();

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
  {
    // keel cluster status on the leader: the group, led and ready here,
    // with each replica's lag.
    auto st = keel::test::cli::run_keel(c.member(leader).http_port, {"cluster", "status"});
    REQUIRE_MESSAGE(st.exit_code == 0, st.err);
    CHECK_MESSAGE(st.out.find("replication 3") != std::string::npos, st.out);
    CHECK_MESSAGE(st.out.find("GROUP") != std::string::npos, st.out);
    bool row = false;
    std::istringstream lines(st.out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind(std::to_string(g) + " ", 0) == 0 &&
          line.find("leader ") != std::string::npos && line.find(leader + "(") != std::string::npos)
        row = true;
    CHECK_MESSAGE(row, "no ready leader row for group " << g << ":\n" << st.out);
  }
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
                        REQUIRE_MESSAGE((!a.transport_ok || a.status == 503 || a.status == 504),
                                        a.describe());
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
  // Load spreads again: the group's preferred replica (first by placement)
  // leads it once it is back and caught up.
  const auto members = members_of(c);
  const std::string preferred = config::group_replicas(members, g, 3).front();
  CHECK_MESSAGE(
      poll_until([&] { return ready_leader(c, g) == preferred; }, 40s, 200ms),
      "group " << g << " is led by " << ready_leader(c, g) << ", not its preferred " << preferred);
  auto events = read_ledger(c.clients(), survivors[0], name);
  auto ids_seen = message_ids(events);
  CHECK(ids_seen.size() == 30);
  for (const auto& [id, n] : ids_seen) CHECK_MESSAGE(n == 1, id << " received " << n << " times");
  CHECK(query_total(c.clients(), leader, name) == sum);
}

TEST_CASE(
    "replicated: messages through random members while group leaders are SIGKILLed, one of "
    "them also wiped, land once, and every replica holds the same ledgers") {
  constexpr int agent_count = 300;
  constexpr int message_count = 6000;
  constexpr int kill_count = 5;
  constexpr int kill_every = message_count / (kill_count + 1);
  constexpr int sent_while_down = 300;
  constexpr int wipe_round = 3;
  constexpr int client_count = 4;

  test_cluster c(3, shards);
  start_replicated(c, 3, 3000);
  const auto ids = c.ids();

  const unsigned seed = std::random_device{}();
  std::printf("replicated exactly-once test seed %u\n", seed);
  std::mt19937 rng(seed);
  auto name = [](int i) { return "rep/agent-" + std::to_string(i); };
  for (int i = 0; i < agent_count; ++i)
    spawn_counter(c.clients(), ids[rng() % ids.size()], name(i));

  std::vector<planned_message> plan;
  for (int i = 0; i < message_count; ++i)
    plan.push_back({"r-" + std::to_string(i), static_cast<int>(rng() % agent_count),
                    static_cast<int>(rng() % 9) + 1});
  std::vector<std::atomic<int>> outcomes(message_count);
  std::vector<std::atomic<bool>> up(ids.size());
  for (auto& u : up) u = true;
  std::atomic<int> next{0}, finished{0}, queued_acks{0}, refusals{0};
  std::atomic<bool> abort{false};
  std::mutex note_mu;
  std::string first_refusal;
  std::map<std::string, int> failures;

  auto client = [&](unsigned client_seed) {
    client_set http(c.http_ports(), 10s);
    std::mt19937 r(client_seed);
    for (int i = next++; i < message_count && !abort; i = next++) {
      const auto& m = plan[static_cast<std::size_t>(i)];
      std::size_t via = r() % ids.size();
      for (std::size_t k = 0; k < ids.size() && !up[via]; ++k) via = (via + 1) % ids.size();
      auto a = http.post(ids[via], agent_path(name(m.agent)) + "/messages",
                         {{"id", m.id}, {"body", {{"add", m.add}}}});
      if (a.transport_ok && a.status == 202) {
        outcomes[static_cast<std::size_t>(i)] = acked;
        if (a.body.is_object() && a.body.value("queued", false)) ++queued_acks;
      } else {
        outcomes[static_cast<std::size_t>(i)] = not_acked;
        std::lock_guard lk(note_mu);
        ++failures[why_not(a)];
        if (a.transport_ok && a.status < 500 && refusals++ == 0)
          first_refusal = m.id + " via " + ids[via] + ": " + a.describe();
      }
      ++finished;
    }
  };

  std::vector<std::string> victims;
  std::vector<long long> served_again_ms;
  {
    std::vector<std::thread> clients;
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
      REQUIRE_MESSAGE(poll_until([&] { return finished >= k * kill_every; }, 180s),
                      "the clients stalled at " << finished << " messages\n"
                                                << c.logs());
      // The leader of a random group.
      const auto g = static_cast<uint32_t>(rng() % groups);
      std::string victim;
      REQUIRE(poll_until([&] { return !(victim = ready_leader(c, g)).empty(); }, 30s, 50ms));
      const auto v =
          static_cast<std::size_t>(std::find(ids.begin(), ids.end(), victim) - ids.begin());
      up[v] = false;
      const auto killed_at = std::chrono::steady_clock::now();
      c.kill9(victim);
      victims.push_back(victim + " (group " + std::to_string(g) + ")");
      REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(c, g).empty(); }, 30s, 20ms),
                      "group " << g << " got no new leader after " << victim << " died\n"
                               << c.logs());
      served_again_ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::steady_clock::now() - killed_at)
                                    .count());
      REQUIRE_MESSAGE(
          poll_until(
              [&] { return finished >= std::min(message_count, k * kill_every + sent_while_down); },
              180s),
          "the clients stalled at " << finished << " messages with " << victim << " down\n"
                                    << c.logs());
      // Once, the member comes back without its data directory: it gets
      // every group it replicates streamed again.
      if (k == wipe_round) {
        c.wipe(victim);
        victims.back() += ", wiped";
      } else {
        c.restart(victim);
      }
      up[v] = true;
    }
    for (auto& t : clients) t.join();
  }
  CHECK_MESSAGE(refusals == 0, refusals << " messages were refused; the first: " << first_refusal);
  // Nothing is acknowledged as queued: only a group's leader acknowledges.
  CHECK(queued_acks == 0);

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

  std::vector<int64_t> expected(agent_count, 0);
  std::vector<std::set<std::string>> expected_ids(agent_count);
  for (const auto& m : plan) {
    expected[static_cast<std::size_t>(m.agent)] += m.add;
    expected_ids[static_cast<std::size_t>(m.agent)].insert(m.id);
  }
  // Acknowledged means applied by the leader: totals are right at once.
  for (int i = 0; i < agent_count; ++i) {
    auto t = query_total(c.clients(), ids[rng() % ids.size()], name(i));
    CHECK_MESSAGE(t == expected[static_cast<std::size_t>(i)],
                  name(i) << ": total " << (t ? std::to_string(*t) : "unreadable") << ", expected "
                          << expected[static_cast<std::size_t>(i)]);
  }
  int duplicated = 0, missing = 0;
  for (int i = 0; i < agent_count; ++i) {
    auto counts = message_ids(read_ledger(c.clients(), ids[rng() % ids.size()], name(i)));
    std::set<std::string> seen;
    for (const auto& [id, n] : counts) {
      seen.insert(id);
      if (n != 1) ++duplicated;
      CHECK_MESSAGE(n == 1, name(i) << ": message " << id << " is in the ledger " << n << " times");
    }
    if (seen != expected_ids[static_cast<std::size_t>(i)]) ++missing;
    CHECK_MESSAGE(seen == expected_ids[static_cast<std::size_t>(i)],
                  name(i) << ": the ledger holds " << seen.size() << " message ids, expected "
                          << expected_ids[static_cast<std::size_t>(i)].size());
  }
  for (uint32_t g = 0; g < groups; ++g) check_replicas_agree(c, g);

  std::string killed, times;
  for (const auto& v : victims) killed += v + " ";
  for (auto ms : served_again_ms) times += std::to_string(ms) + " ";
  MESSAGE("sent " << message_count << " messages with SIGKILLs of " << killed
                  << "; a new leader ready after (ms) " << times << "; " << resent
                  << " sent again; " << duplicated << " duplicated ids, " << missing
                  << " ledgers with other ids");
  for (const auto& [why, n] : failures) MESSAGE(n << " not acknowledged: " << why);
  CHECK(check_replays(c, ids[rng() % ids.size()]) == agent_count);
}

TEST_CASE(
    "replicated: an agent waiting for approval survives the loss of its leader's disk and its "
    "tool runs once on approval") {
  test_cluster c(3, shards);
  start_replicated(c, 3, 5000, {"--agents", std::string(KEEL_SOURCE_DIR) + "/examples/agents"});
  const auto ids = c.ids();
  const std::string name = "ticket/9";
  const uint32_t g = group_of(name);

  // The refund desk looks the order up, then wants to refund 120: above
  // 100, it waits for a human.
  auto spawned = c.post(ids[0], "/v1/agents", {{"name", name}, {"type", "refund-desk"}});
  REQUIRE_MESSAGE((spawned.transport_ok && spawned.status == 201), spawned.describe());
  send_acked(c, {ids[1]}, name, "ask-1", 0);
  auto waiting = [&](const std::string& via) {
    auto a = c.call(via, "GET", agent_path(name));
    if (!a.transport_ok || a.status != 200 || !a.body.is_object()) return false;
    const json wait = a.body.value("state", json::object())
                          .value("turn", json::object())
                          .value("wait", json::object());
    return wait.value("on", "") == "approval";
  };
  REQUIRE_MESSAGE(poll_until([&] { return waiting(ids[2]); }, 30s, 100ms),
                  "the refund did not wait for approval: "
                      << c.call(ids[2], "GET", agent_path(name)).raw << "\n"
                      << c.logs());

  // Its leader's disk is lost while it waits.
  const std::string leader = ready_leader(c, g);
  REQUIRE_FALSE(leader.empty());
  c.wipe(leader);
  std::string via;
  for (const auto& id : ids)
    if (id != leader) via = id;
  REQUIRE_MESSAGE(poll_until([&] { return waiting(via); }, 30s, 100ms),
                  "after " << leader << " lost its disk, " << name
                           << " is not waiting for approval through " << via << "\n"
                           << c.logs());

  auto approved =
      c.post(via, agent_path(name) + "/signals/approve", {{"payload", {{"by", "maria"}}}});
  REQUIRE_MESSAGE((approved.transport_ok && approved.status == 202), approved.describe());
  std::vector<json> events;
  REQUIRE_MESSAGE(poll_until(
                      [&] {
                        events = read_ledger(c.clients(), via, name);
                        return !of_type(events, "turn_completed").empty();
                      },
                      30s, 100ms),
                  "the turn did not complete after the approval:\n"
                      << summary(events, "effect_started") << c.logs());
  int refunds_started = 0, refunds_done = 0;
  std::set<uint64_t> refund_effects;
  for (const auto& d : of_type(events, "effect_started"))
    if (d.value("tool", "") == "refund") {
      ++refunds_started;
      refund_effects.insert(d.value("effect", uint64_t{0}));
    }
  for (const auto& d : of_type(events, "effect_completed"))
    if (refund_effects.count(d.value("effect", uint64_t{0}))) ++refunds_done;
  CHECK_MESSAGE(refunds_started == 1, summary(events, "effect_started"));
  CHECK(refunds_done == 1);
  CHECK(of_type(events, "effect_in_doubt").empty());
  CHECK(of_type(events, "turn_completed")[0].value("status", "") == "completed");

  // The wiped member holds the same ledger again once it has caught up.
  check_replicas_agree(c, g);
}

namespace {

json view_of(test_cluster& c, const std::string& via, const std::string& name) {
  auto a = c.call(via, "GET", agent_path(name));
  return a.transport_ok && a.status == 200 ? a.body : json();
}

// Sends the agent its one message and waits until its call is held at the
// tool server; then SIGKILLs the leader of its group and waits for another.
// Returns a surviving member. The killed member is started again.
std::string call_then_kill_leader(test_cluster& c, test::fake_tool_server& tools,
                                  const std::string& name, unsigned held_before) {
  const auto ids = c.ids();
  send_acked(c, ids, name, "go", 0);
  REQUIRE_MESSAGE(tools.wait_for_held(held_before + 1, 30s),
                  name << "'s call never reached the tool server\n"
                       << c.logs());
  const uint32_t g = group_of(name);
  const std::string leader = ready_leader(c, g);
  REQUIRE_FALSE(leader.empty());
  c.kill9(leader);
  REQUIRE_MESSAGE(poll_until([&] { return !ready_leader(c, g).empty(); }, 30s, 50ms),
                  "no new leader for group " << g << "\n"
                                             << c.logs());
  std::string via = ready_leader(c, g);
  c.restart(leader);
  return via;
}

}  // namespace

TEST_CASE(
    "replicated: across a failover an idempotent http call is made again with its key, and a "
    "non-idempotent one ends in doubt, never made twice") {
  test::fake_tool_server tools;
  test::tool_behaviour held;
  held.hold = true;
  tools.set_behaviour("charge", held);
  tools.set_behaviour("notify", held);

  test_cluster c(3, shards);
  const auto agents = c.root() / "agents";
  std::filesystem::create_directories(agents);
  for (const auto& [file, spec] :
       {std::pair{"payer.json",
                  one_http_call_type("payer", "charge", tools.url("charge"), true, 20'000)},
        std::pair{"notifier.json",
                  one_http_call_type("notifier", "notify", tools.url("notify"), false, 20'000)}}) {
    std::ofstream out(agents / file);
    out << spec.dump(2);
    REQUIRE(out.good());
  }
  start_replicated(c, 3, 5000, {"--agents", agents.string()});
  const auto ids = c.ids();

  SUBCASE("idempotent: called again with the same Idempotency-Key, applied once") {
    const std::string name = "pay/1";
    auto s = c.post(ids[0], "/v1/agents", {{"name", name}, {"type", "payer"}});
    REQUIRE_MESSAGE((s.transport_ok && s.status == 201), s.describe());
    const std::string via = call_then_kill_leader(c, tools, name, 0);
    const std::string key = tools.last_call("charge").idempotency_key;
    REQUIRE_FALSE(key.empty());
    // The new leader makes the call again; the server answers it from the
    // first (held) call's result once released.
    REQUIRE(poll_until([&] { return tools.calls_for_key(key) >= 2; }, 30s, 50ms));
    tools.release();
    REQUIRE_MESSAGE(poll_until(
                        [&] {
                          return view_of(c, via, name)
                                     .value("state", json::object())
                                     .value("last", json::object())
                                     .value("status", "") == "completed";
                        },
                        30s, 100ms),
                    view_of(c, via, name).dump() << "\n"
                                                 << c.logs());
    CHECK(tools.applied("charge") == 1);
    CHECK(tools.calls_for_key(key) == 2);
    auto events = read_ledger(c.clients(), via, name);
    CHECK(of_type(events, "effect_started").size() == 2);
    CHECK(of_type(events, "effect_started")[1].value("recovered", false));
    CHECK(of_type(events, "effect_in_doubt").empty());
  }

  SUBCASE("not idempotent: in doubt on the new leader, never called again") {
    const std::string name = "note/1";
    auto s = c.post(ids[0], "/v1/agents", {{"name", name}, {"type", "notifier"}});
    REQUIRE_MESSAGE((s.transport_ok && s.status == 201), s.describe());
    const std::string via = call_then_kill_leader(c, tools, name, 0);
    REQUIRE_MESSAGE(
        poll_until([&] { return view_of(c, via, name).value("phase", "") == "in_doubt"; }, 30s,
                   100ms),
        view_of(c, via, name).dump() << "\n"
                                     << c.logs());
    tools.release();
    auto events = read_ledger(c.clients(), via, name);
    CHECK(of_type(events, "effect_started").size() == 1);
    CHECK(of_type(events, "effect_in_doubt").size() == 1);
    CHECK(tools.calls("notify") == 1);
  }
}

TEST_CASE(
    "replicated: a member without a copy of an agent's group forwards its calls to the leader") {
  test_cluster c(3, shards);
  start_replicated(c, 1);
  const auto ids = c.ids();
  const auto members = members_of(c);
  const std::string name = "solo/1";
  const uint32_t g = group_of(name);
  const auto replicas = config::group_replicas(members, g, 1);
  REQUIRE(replicas.size() == 1);
  REQUIRE(poll_until([&] { return ready_leader(c, g) == replicas[0]; }, 30s, 100ms));
  std::vector<std::string> others;
  for (const auto& id : ids)
    if (id != replicas[0]) others.push_back(id);

  auto s = c.post(others[0], "/v1/agents", {{"name", name}, {"type", "counter"}});
  REQUIRE_MESSAGE((s.transport_ok && s.status == 201), s.describe());
  send_acked(c, {others[1]}, name, "a", 4);
  send_acked(c, {others[0]}, name, "b", 5);
  CHECK(query_total(c.clients(), others[1], name) == 9);
  auto v = c.call(others[0], "GET", agent_path(name));
  REQUIRE(v.transport_ok);
  CHECK(v.body.value("node", "") == replicas[0]);
}
