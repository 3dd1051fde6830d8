// Adding a member to a running cluster of real keeld processes: shards move
// to the new member with their agents, and every agent keeps its state and
// ledger and has exactly one owner afterwards, even when a member is
// SIGKILLed in the middle of the move.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/agent_requests.hpp"
#include "cluster/test_cluster.hpp"

using namespace keel;
using namespace keel::test::cluster;
using namespace std::chrono_literals;

namespace {

// Three members n1..n3 (their config names only them) with counters that
// have received messages, the totals and ledgers recorded; n4 is planned and
// has a config naming all four.
class growing_cluster {
 public:
  static constexpr int agent_count = 100;
  static constexpr int messages_per_agent = 3;

  growing_cluster() : rng_(std::random_device{}()) {
    cfg3_ = c.write_config("cluster3", first_);
    cfg4_ = c.write_config("cluster4", all_);
    for (const auto& id : first_) c.start(id, cfg3_);
    c.wait_connected(first_);
    for (int i = 0; i < agent_count; ++i) {
      names.push_back("move/agent-" + std::to_string(i));
      spawn_counter(c.clients(), any(first_), names.back());
    }
    for (int k = 0; k < messages_per_agent; ++k)
      for (const auto& n : names) {
        auto a = c.post(any(first_), agent_path(n) + "/messages",
                        {{"id", n + "/before-" + std::to_string(k)},
                         {"body", {{"add", static_cast<int>(rng_() % 9) + 1}}}});
        REQUIRE_MESSAGE((a.transport_ok && a.status == 202), n << ": " << a.describe());
      }
    c.wait_outboxes_empty();
    for (const auto& n : names) {
      auto t = query_total(c.clients(), "n1", n);
      REQUIRE_MESSAGE(t.has_value(), n << " does not answer");
      totals[n] = *t;
      ledgers[n] = read_ledger(c.clients(), "n1", n);
      REQUIRE(message_ids(ledgers[n]).size() == messages_per_agent);
    }
    before = c.initial_map(first_);
    after = before.with_member(c.member("n4"));
  }

  // Starts n4 with --join and the four-member config.
  void start_joiner() { c.start("n4", cfg4_, {"--join"}); }
  json joiner() const { return config::to_json(c.member("n4")); }
  std::string any(const std::vector<std::string>& of) { return of[rng_() % of.size()]; }

  // Waits until all four members are at epoch 2, with no change pending,
  // and see each other up.
  void wait_epoch2(std::chrono::milliseconds timeout) {
    std::string last;
    bool ok = poll_until(
        [&] {
          for (const auto& id : all_) {
            auto a = c.call(id, "GET", "/v1/cluster");
            if (!a.transport_ok || a.status != 200) {
              last = id + ": " + a.describe();
              return false;
            }
            if (a.body.value("epoch", 0) != 2 || a.body.contains("change")) {
              last = id + ": " + a.raw;
              return false;
            }
            for (const auto& m : a.body["members"])
              if (!m.value("up", false)) {
                last = id + " sees " + m.value("id", "") + " down";
                return false;
              }
          }
          return true;
        },
        timeout, 50ms);
    REQUIRE_MESSAGE(ok, "the cluster did not reach epoch 2: " << last << "\n" << c.logs());
  }

  // After the move: one map everywhere, each agent stored on exactly its
  // owner, every total and ledger unchanged through every member, and every
  // agent takes new messages.
  void check_moved() {
    for (const auto& id : all_) {
      json st = c.status(id);
      CHECK(st["epoch"] == 2);
      REQUIRE(st["members"].size() == 4);
      std::size_t sum = 0;
      for (const auto& m : st["members"]) {
        std::string mid = m.value("id", "");
        std::size_t shards = m.value("shards", std::size_t{0});
        CHECK_MESSAGE(shards == after.shards_of(mid).size(),
                      id << " says " << mid << " owns " << shards << " shards");
        sum += shards;
      }
      CHECK(sum == c.shards());
      CHECK(member_entry(st, "n4").value("shards", 0) > 0);
    }

    // Where each agent's data is: the members' own stores (?local=1).
    std::map<std::string, std::vector<std::string>> stored_on;
    for (const auto& id : all_) {
      auto a = c.call(id, "GET", "/v1/agents?local=1&prefix=move/&limit=1000");
      REQUIRE_MESSAGE((a.transport_ok && a.status == 200), id << ": " << a.describe());
      for (const auto& ag : a.body["agents"]) stored_on[ag.value("name", "")].push_back(id);
    }
    int moved = 0;
    for (const auto& n : names) {
      const std::string owner = after.owner_of(n);
      CHECK_MESSAGE(
          stored_on[n] == std::vector<std::string>{owner},
          n << " is stored on " << json(stored_on[n]).dump() << ", its owner is " << owner);
      if (before.owner_of(n) != owner) {
        ++moved;
        CHECK(owner == "n4");  // rendezvous: only the new member gains shards
      }
    }
    REQUIRE_MESSAGE(moved > 0, "no agent moved to n4; the test proves nothing");

    for (const auto& n : names)
      for (const auto& id : all_) {
        auto t = query_total(c.clients(), id, n);
        CHECK_MESSAGE(t == totals[n], n << " via " << id << ": total "
                                        << (t ? std::to_string(*t) : "unreadable") << ", expected "
                                        << totals[n]);
        auto events = read_ledger(c.clients(), id, n);
        CHECK_MESSAGE(events == ledgers[n], n << " via " << id
                                              << ": the ledger changed: " << events.size()
                                              << " events, had " << ledgers[n].size());
      }

    for (const auto& n : names) {
      auto a = c.post(any(all_), agent_path(n) + "/messages",
                      {{"id", n + "/after"}, {"body", {{"add", 1}}}});
      REQUIRE_MESSAGE((a.transport_ok && a.status == 202), n << ": " << a.describe());
      CHECK_FALSE(a.body.value("queued", false));
      ++totals[n];
    }
    for (const auto& n : names)
      for (const auto& id : all_) {
        std::optional<int64_t> t;
        bool ok = poll_until(
            [&] {
              t = query_total(c.clients(), id, n);
              return t == totals[n];
            },
            10s, 20ms);
        CHECK_MESSAGE(ok, n << " via " << id << ": total "
                            << (t ? std::to_string(*t) : "unreadable")
                            << " after one more, expected " << totals[n]);
      }
    MESSAGE(moved << " of " << names.size() << " agents moved to n4");
  }

  test_cluster c{4};
  std::vector<std::string> names;
  std::map<std::string, int64_t> totals;
  std::map<std::string, std::vector<json>> ledgers;
  config::shard_map before, after;

 private:
  std::vector<std::string> first_{"n1", "n2", "n3"};
  std::vector<std::string> all_{"n1", "n2", "n3", "n4"};
  std::string cfg3_, cfg4_;
  std::mt19937 rng_;
};

}  // namespace

TEST_CASE("adding a fourth node moves shards and every agent keeps its state and ledger") {
  growing_cluster g;
  g.start_joiner();
  // A joiner serves nothing until it is added.
  CHECK(g.c.status("n4")["epoch"] == 0);

  client_set slow(g.c.http_ports(), 120s);
  auto a = slow.post("n1", "/v1/cluster/members", g.joiner());
  REQUIRE_MESSAGE(a.transport_ok, a.describe());
  CHECK_MESSAGE((a.status == 200 || a.status == 202), a.describe());
  CHECK(a.body.value("epoch", 0) == 2);
  CHECK(a.body.value("moved", 0) > 0);
  MESSAGE("add-node answered " << a.describe());
  g.wait_epoch2(90s);
  g.check_moved();
  // Adding it twice is refused.
  auto again = g.c.post("n2", "/v1/cluster/members", g.joiner());
  CHECK_MESSAGE(again.status == 409, again.describe());

  // n3 restarts with its old three-member config: the stored map wins.
  g.c.restart("n3");
  g.wait_epoch2(30s);
  json st = g.c.status("n3");
  CHECK(st["members"].size() == 4);
  CHECK(member_entry(st, "n4").value("shards", 0) > 0);
  for (const auto& n : g.names) {
    auto t = query_total(g.c.clients(), "n3", n);
    CHECK_MESSAGE(t == g.totals[n],
                  n << " via the restarted n3: " << (t ? std::to_string(*t) : "unreadable")
                    << ", expected " << g.totals[n]);
  }
  CHECK(check_replays(g.c, "n3") == growing_cluster::agent_count);
}

TEST_CASE("a SIGKILL during the move leaves every shard with one owner and no data lost") {
  // Who dies, and when: once `watched` shows the change with handoffs in
  // the state `ready` asks for.
  std::string victim, watched;
  bool halfway = false;  // some of watched's handoffs done, some not
  SUBCASE("the joiner is killed once it has stored the change") {
    victim = watched = "n4";
  }
  SUBCASE("the joiner is killed while a source streams shards to it") {
    victim = "n4";
    watched = "n2";
    halfway = true;
  }
  SUBCASE("a source is killed once it has stored the change") {
    victim = watched = "n2";
  }
  SUBCASE("a source is killed halfway through its handoffs") {
    victim = watched = "n2";
    halfway = true;
  }

  growing_cluster g;
  g.start_joiner();
  // add-node answers when the move is done (or after a minute): asked on
  // its own thread while this one kills.
  test::cluster::answer added;
  std::thread adder([&, ports = g.c.http_ports(), member = g.joiner()] {
    client_set slow(ports, 120s);
    added = slow.post("n1", "/v1/cluster/members", member);
  });
  struct joiner {
    std::thread& t;
    ~joiner() {
      if (t.joinable()) t.join();
    }
  } join_adder{adder};

  json seen;
  bool ready = poll_until(
      [&] {
        auto a = g.c.call(watched, "GET", "/v1/cluster");
        if (!a.transport_ok || a.status != 200 || !a.body.contains("change")) return false;
        const json& ch = a.body["change"];
        uint64_t left = ch.value("handoffs_left", uint64_t{0});
        if (halfway && !(left > 0 && left < ch.value("handoffs", uint64_t{0}))) return false;
        seen = ch;
        return true;
      },
      30s, 1ms);
  REQUIRE_MESSAGE(ready, watched << " never showed the change "
                                 << (halfway ? "halfway through its handoffs" : "in progress")
                                 << "\n"
                                 << g.c.logs());
  g.c.kill9(victim);
  MESSAGE("killed " << victim << " when " << watched << " showed the change " << seen.dump());
  g.c.restart(victim);

  g.wait_epoch2(90s);
  adder.join();
  REQUIRE_MESSAGE(added.transport_ok, added.describe());
  CHECK_MESSAGE((added.status == 200 || added.status == 202), added.describe());
  g.check_moved();
  CHECK(check_replays(g.c, g.any({"n1", "n2", "n3", "n4"})) == growing_cluster::agent_count);
}
