// The write path under faults, in process: a real node whose journal writes
// through a sink that fails an fsync, finds the disk full or takes its time
// (support/faulty_sink.hpp). What each fault must do is in
// docs/operations.md, "Faults": never an acknowledgement for a write that
// did not become durable, nothing half applied in an agent's memory, and
// after a restart every acknowledged message there exactly once.

#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/node.hpp"
#include "support/faulty_sink.hpp"
#include "support/replay_check.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace keel::actors;
using keel::test::faulty_sink;
using keel::test::eventually;
using keel::test::future_value;
using fault = faulty_sink::fault;

namespace {

// A node on `dir` whose journal writes through a faulty sink.
struct faulty_node {
  test::temp_dir dir;
  faulty_sink* sink = nullptr;  // owned by the node's journal
  std::unique_ptr<node> n;

  faulty_node() { start(); }
  ~faulty_node() {
    if (n) test::check_strict_replays(*n);
  }

  void start() {
    config::node_config c;
    c.data_dir = dir.str();
    c.idle_ms = 60'000;
    c.scheduler_threads = 2;
    c.block_cache_bytes = 8 << 20;
    start_options o;
    o.wrap_journal_sink = [this](std::unique_ptr<persistence::journal_sink> inner) {
      auto s = std::make_unique<faulty_sink>(std::move(inner));
      sink = s.get();
      return s;
    };
    auto started = node::start(c, std::move(o));
    REQUIRE_MESSAGE(started.is_ok(), started.error().to_string());
    n = std::move(*started);
  }
  void restart() {
    n->stop();
    n.reset();
    sink = nullptr;
    start();
  }

  void spawn(const std::string& name) {
    future_value<result<agent_view>> f;
    n->spawn(name, "counter", nullptr, [&](result<agent_view> v) { f.set(std::move(v)); });
    auto v = f.wait();
    REQUIRE(v);
    REQUIRE_MESSAGE(v->is_ok(), v->error().to_string());
  }

  struct sending {
    std::shared_ptr<future_value<result<send_ack>>> ack =
        std::make_shared<future_value<result<send_ack>>>();
    std::shared_ptr<future_value<result<agent_reply>>> reply =
        std::make_shared<future_value<result<agent_reply>>>();
  };
  sending send_async(const std::string& name, const std::string& id, int64_t add) {
    sending s;
    n->send(
        name, {id, "test", {{"add", add}}},
        [a = s.ack](result<send_ack> x) { a->set(std::move(x)); },
        [r = s.reply](result<agent_reply> x) { r->set(std::move(x)); });
    return s;
  }
  // The acknowledgement of a message (ok, or why it was refused).
  result<send_ack> send(const std::string& name, const std::string& id, int64_t add) {
    auto s = send_async(name, id, add);
    auto a = s.ack->wait();
    REQUIRE(a);
    if (a->is_ok() && !(*a)->duplicate) REQUIRE(s.reply->wait());
    return *a;
  }

  agent_view view(const std::string& name) {
    future_value<result<agent_view>> f;
    n->get(name, [&](result<agent_view> v) { f.set(std::move(v)); });
    auto v = f.wait();
    REQUIRE(v);
    REQUIRE_MESSAGE(v->is_ok(), v->error().to_string());
    return **v;
  }

  // How many times each message id was received, read from the ledger on disk.
  std::map<std::string, int> received(const std::string& name) {
    auto page = n->ledger(name, 1, 100'000);
    REQUIRE_MESSAGE(page.is_ok(), page.error().to_string());
    std::map<std::string, int> ids;
    for (const auto& e : page->events)
      if (e.type == "message_received") ++ids[e.data.value("id", "")];
    return ids;
  }
  uint64_t last_seq_on_disk(const std::string& name) {
    auto page = n->ledger(name, 1, 100'000);
    REQUIRE_MESSAGE(page.is_ok(), page.error().to_string());
    return page->events.empty() ? 0 : page->events.back().seq;
  }

  // The agent's memory agrees with its ledger on disk: what a fresh
  // activation would load.
  void check_view_matches_disk(const std::string& name) {
    const agent_view v = view(name);
    CHECK(v.last_seq == last_seq_on_disk(name));
    int64_t sum = 0;
    auto page = n->ledger(name, 1, 100'000);
    REQUIRE(page.is_ok());
    for (const auto& e : page->events)
      if (e.type == "message_received") sum += e.data["body"].value("add", int64_t{0});
    CHECK(v.state.value("total", int64_t{-1}) == sum);
  }
};

}  // namespace

TEST_CASE("a message whose write fails is refused, and a retry with its id lands exactly once") {
  fault kind = fault::no_space;
  code refused = code::no_space;
  SUBCASE("the disk is full (ENOSPC)") {}
  SUBCASE("the fsync fails") {
    kind = fault::fsync_failed;
    refused = code::unavailable;
  }
  CAPTURE(static_cast<int>(kind));
  faulty_node f;
  f.spawn("f/1");
  REQUIRE(f.send("f/1", "m-1", 1).is_ok());

  f.sink->fail(kind, 1);
  auto failed = f.send("f/1", "m-2", 10);
  REQUIRE_FALSE(failed.is_ok());
  CHECK(failed.error().error_code() == refused);
  // The shell that had the refused write in memory leaves; the next request
  // activates the agent from what is on disk.
  REQUIRE(eventually([&] { return f.n->live_agents() == 0; }));
  f.check_view_matches_disk("f/1");

  // Refused is not proof of absent (an fsync that fails may leave the
  // write on disk): the sender retries with the same id, which lands once.
  auto retried = f.send("f/1", "m-2", 10);
  REQUIRE_MESSAGE(retried.is_ok(), retried.error().to_string());
  REQUIRE(f.send("f/1", "m-3", 100).is_ok());
  CHECK(f.view("f/1").state["total"] == 111);
  f.check_view_matches_disk("f/1");

  f.restart();
  CHECK(f.view("f/1").state["total"] == 111);
  CHECK(f.received("f/1") == std::map<std::string, int>{{"m-1", 1}, {"m-2", 1}, {"m-3", 1}});
}

TEST_CASE("a slow write delays the acknowledgement and loses nothing") {
  faulty_node f;
  f.spawn("s/1");
  f.sink->hold();
  auto pending = f.send_async("s/1", "slow-1", 5);
  REQUIRE(f.sink->wait_held());
  // The write is still in the sink: nothing may be acknowledged yet.
  CHECK_FALSE(pending.ack->wait(std::chrono::milliseconds(0)));
  CHECK_FALSE(pending.reply->wait(std::chrono::milliseconds(0)));
  // Meanwhile another message queues behind it.
  auto behind = f.send_async("s/1", "slow-2", 7);
  f.sink->release();
  auto a1 = pending.ack->wait(), a2 = behind.ack->wait();
  REQUIRE(a1);
  REQUIRE(a2);
  REQUIRE_MESSAGE(a1->is_ok(), a1->error().to_string());
  REQUIRE_MESSAGE(a2->is_ok(), a2->error().to_string());
  REQUIRE(behind.reply->wait());
  CHECK(f.view("s/1").state["total"] == 12);

  f.restart();
  CHECK(f.view("s/1").state["total"] == 12);
  CHECK(f.received("s/1") == std::map<std::string, int>{{"slow-1", 1}, {"slow-2", 1}});
}

TEST_CASE(
    "while writes fail now and then, every acknowledged message is there once after a "
    "restart") {
  fault kind = fault::fsync_failed;
  SUBCASE("fsyncs fail") {}
  SUBCASE("the disk is full") {
    kind = fault::no_space;
  }
  CAPTURE(static_cast<int>(kind));
  faulty_node f;
  for (const char* name : {"w/1", "w/2"}) f.spawn(name);
  // Every third write fails, whichever agents it carries.
  auto writes = std::make_shared<std::atomic<int>>(0);
  f.sink->fail_when(kind, [writes](const persistence::write_set&) { return ++*writes % 3 == 0; });
  std::vector<std::pair<std::string, std::string>> acked;  // (agent, id)
  int refused = 0;
  for (int i = 0; i < 30; ++i) {
    const std::string name = i % 2 ? "w/2" : "w/1";
    const std::string id = "m-" + std::to_string(i);
    auto a = f.send(name, id, 1);
    if (a.is_ok()) {
      acked.emplace_back(name, id);
    } else {
      ++refused;
      const code c = a.error().error_code();
      CHECK((c == code::unavailable || c == code::no_space));
    }
  }
  CHECK(refused > 0);
  CHECK_FALSE(acked.empty());
  f.sink->clear();

  f.restart();
  for (const char* name : {"w/1", "w/2"}) {
    const auto ids = f.received(name);
    for (const auto& [id, count] : ids)
      CHECK_MESSAGE(count == 1, name << " received " << id << " " << count << " times");
    f.check_view_matches_disk(name);
  }
  for (const auto& [name, id] : acked)
    CHECK_MESSAGE(f.received(name).count(id) == 1, name << " lost " << id);
}
