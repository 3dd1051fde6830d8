// A node whose shells write through a replicator (actors/replicator.hpp)
// instead of the journal, with a stand-in replicator in process: it
// applies accepted proposals through the node's journal (what a group of
// one does) and can refuse to lead or fence proposals. The real one is
// net/raft's; this pins what the shell does with each answer.

#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/node.hpp"
#include "actors/replicator.hpp"
#include "config/cluster_config.hpp"
#include "support/replay_check.hpp"
#include "support/stand_in_replicator.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace keel::actors;
using keel::test::eventually;
using keel::test::future_value;
using keel::test::stand_in_replicator;

namespace {

struct replicated_node {
  test::temp_dir dir;
  stand_in_replicator repl;
  std::unique_ptr<node> n;

  replicated_node() { start(); }
  ~replicated_node() {
    if (n) test::check_strict_replays(*n);
  }
  void start() {
    config::node_config c;
    c.data_dir = dir.str();
    c.idle_ms = 60'000;
    c.scheduler_threads = 2;
    c.block_cache_bytes = 8 << 20;
    start_options o;
    o.repl = &repl;
    auto started = node::start(c, std::move(o));
    REQUIRE_MESSAGE(started.is_ok(), started.error().to_string());
    n = std::move(*started);
    repl.n = n.get();
  }
  void restart() {
    n->stop();
    n.reset();
    start();
  }

  result<agent_view> spawn(const std::string& name) {
    future_value<result<agent_view>> f;
    n->spawn(name, "counter", nullptr, [&](result<agent_view> v) { f.set(std::move(v)); });
    auto v = f.wait();
    REQUIRE(v);
    return *v;
  }
  result<send_ack> send(const std::string& name, const std::string& id, int64_t add) {
    auto ack = std::make_shared<future_value<result<send_ack>>>();
    auto reply = std::make_shared<future_value<result<agent_reply>>>();
    n->send(
        name, {id, "test", {{"add", add}}}, [ack](result<send_ack> x) { ack->set(std::move(x)); },
        [reply](result<agent_reply> x) { reply->set(std::move(x)); });
    auto a = ack->wait();
    REQUIRE(a);
    if (a->is_ok() && !(*a)->duplicate) REQUIRE(reply->wait());
    return *a;
  }
  result<agent_view> get(const std::string& name) {
    future_value<result<agent_view>> f;
    n->get(name, [&](result<agent_view> v) { f.set(std::move(v)); });
    auto v = f.wait();
    REQUIRE(v);
    return *v;
  }
  std::map<std::string, int> received(const std::string& name) {
    auto page = n->ledger(name, 1, 100'000);
    REQUIRE_MESSAGE(page.is_ok(), page.error().to_string());
    std::map<std::string, int> ids;
    for (const auto& e : page->events)
      if (e.type == "message_received") ++ids[e.data.value("id", "")];
    return ids;
  }
};

}  // namespace

TEST_CASE("a replicated node's shells propose their writes stamped with their group and term") {
  replicated_node r;
  REQUIRE(r.spawn("rep/1").is_ok());
  for (int i = 1; i <= 3; ++i) REQUIRE(r.send("rep/1", "m-" + std::to_string(i), i).is_ok());
  auto seen = r.repl.seen();
  REQUIRE(seen.size() >= 4);  // the spawn and each message
  for (const auto& p : seen) {
    CHECK(p.group == r.repl.group_of("rep/1"));
    CHECK(p.term == 5);
    CHECK(p.ops > 0);
  }
  r.restart();
  auto v = r.get("rep/1");
  REQUIRE(v.is_ok());
  CHECK(v->state["total"] == 6);
  // Its id is the group's: the group's number in the top 16 bits.
  auto meta = r.n->storage().get_agent("rep/1");
  REQUIRE(meta.is_ok());
  REQUIRE(meta->has_value());
  const uint64_t group_tag = (**meta).id >> 48;
  CHECK(group_tag == r.repl.group_of("rep/1") + 1);
}

TEST_CASE("a node that does not lead an agent's group answers unavailable and proposes nothing") {
  replicated_node r;
  r.repl.lead = false;
  auto spawned = r.spawn("rep/2");
  REQUIRE_FALSE(spawned.is_ok());
  CHECK(spawned.error().error_code() == code::unavailable);
  CHECK(r.repl.seen().empty());
  // Once it leads, the same agent spawns and takes messages.
  r.repl.lead = true;
  REQUIRE(eventually([&] { return r.n->live_agents() == 0; }));
  REQUIRE(r.spawn("rep/2").is_ok());
  REQUIRE(r.send("rep/2", "a", 2).is_ok());
  // Leadership lost while the agent is live: its next activation is refused.
  r.repl.lead = false;
  r.restart();
  auto refused = r.get("rep/2");
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.error().error_code() == code::unavailable);
}

TEST_CASE("a fenced proposal is not acknowledged, and a retry under the new term lands once") {
  replicated_node r;
  REQUIRE(r.spawn("rep/3").is_ok());
  REQUIRE(r.send("rep/3", "m-1", 1).is_ok());
  // The group moved to a newer term: the proposal is refused, the shell
  // drops its memory, and its next activation takes the new term.
  r.repl.fence_next = 1;
  r.repl.term = 9;
  auto fenced = r.send("rep/3", "m-2", 10);
  REQUIRE_FALSE(fenced.is_ok());
  CHECK(fenced.error().error_code() == code::unavailable);
  REQUIRE(eventually([&] { return r.n->live_agents() == 0; }));
  REQUIRE(r.send("rep/3", "m-2", 10).is_ok());
  CHECK(r.repl.seen().back().term == 9);
  auto v = r.get("rep/3");
  REQUIRE(v.is_ok());
  CHECK(v->state["total"] == 11);
  CHECK(r.received("rep/3") == std::map<std::string, int>{{"m-1", 1}, {"m-2", 1}});
}
