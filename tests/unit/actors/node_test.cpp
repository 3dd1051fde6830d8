// The actor shell end to end, in process: a real node on a temp directory.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "actors/node.hpp"
#include "base/clock.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "support/replay_check.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace keel::actors;
using keel::test::future_value;

namespace {

config::node_config test_config(const std::string& dir, uint32_t idle_ms = 60'000) {
  config::node_config c;
  c.data_dir = dir;
  c.idle_ms = idle_ms;
  c.scheduler_threads = 2;
  c.block_cache_bytes = 8 << 20;
  return c;
}

// Every ledger a test leaves must replay strictly when it lets go of the node.
test::replay_checked_node start(const config::node_config& c) {
  auto n = node::start(c);
  REQUIRE_MESSAGE(n.is_ok(), n.error().to_string());
  return test::replay_checked(std::move(*n));
}

result<agent_view> spawn(node& n, const std::string& name, json input = nullptr) {
  future_value<result<agent_view>> f;
  n.spawn(name, "counter", std::move(input), [&](result<agent_view> v) { f.set(std::move(v)); });
  auto v = f.wait();
  REQUIRE(v.has_value());
  return *v;
}

struct sent {
  result<send_ack> ack = error(code::internal, "none");
  result<agent_reply> reply = error(code::internal, "none");
};

sent send(node& n, const std::string& name, json body, std::string id = {}) {
  // Shared: a refused message fails both callbacks, the second possibly
  // after this function has returned.
  auto a = std::make_shared<future_value<result<send_ack>>>();
  auto r = std::make_shared<future_value<result<agent_reply>>>();
  n.send(
      name, {std::move(id), "test", std::move(body)},
      [a](result<send_ack> x) { a->set(std::move(x)); },
      [r](result<agent_reply> x) { r->set(std::move(x)); });
  sent s;
  auto av = a->wait();
  REQUIRE(av.has_value());
  s.ack = *av;
  if (s.ack.is_ok()) {
    auto rv = r->wait();
    REQUIRE(rv.has_value());
    s.reply = *rv;
  }
  return s;
}

result<agent_view> get(node& n, const std::string& name) {
  future_value<result<agent_view>> f;
  n.get(name, [&](result<agent_view> v) { f.set(std::move(v)); });
  auto v = f.wait();
  REQUIRE(v.has_value());
  return *v;
}

int64_t total(node& n, const std::string& name) {
  auto v = get(n, name);
  REQUIRE_MESSAGE(v.is_ok(), v.error().to_string());
  return v->state.value("total", int64_t{-1});
}

}  // namespace

TEST_CASE("a spawned counter adds what it is sent and answers from durable state") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str()));
  auto v = spawn(*n, "acct/alice");
  REQUIRE(v.is_ok());
  CHECK(v->type == "counter");
  CHECK(v->last_seq == 1);

  auto s = send(*n, "acct/alice", {{"add", 5}});
  REQUIRE(s.ack.is_ok());
  CHECK(s.ack->seq == 1);
  CHECK_FALSE(s.ack->duplicate);
  REQUIRE(s.reply.is_ok());
  CHECK(s.reply->body == json{{"total", 5}});
  CHECK(total(*n, "acct/alice") == 5);

  SUBCASE("spawning the same name again is refused") {
    auto again = spawn(*n, "acct/alice");
    REQUIRE_FALSE(again.is_ok());
    CHECK(again.error().error_code() == code::already_exists);
  }
  SUBCASE("a bad message is recorded and answered with an error") {
    auto bad = send(*n, "acct/alice", {{"multiply", 2}});
    REQUIRE(bad.ack.is_ok());
    REQUIRE(bad.reply.is_ok());
    CHECK_FALSE(bad.reply->ok);
    CHECK(bad.reply->code == "invalid_message");
    auto ledger = n->ledger("acct/alice", 1, 100);
    REQUIRE(ledger.is_ok());
    CHECK(ledger->events.back().type == "message_rejected");
  }
  SUBCASE("messages to unknown agents and bad names are refused") {
    auto s2 = send(*n, "acct/nobody", {{"add", 1}});
    REQUIRE_FALSE(s2.ack.is_ok());
    CHECK(s2.ack.error().error_code() == code::not_found);
    auto s3 = send(*n, "Acct/Upper", {{"add", 1}});
    REQUIRE_FALSE(s3.ack.is_ok());
    CHECK(s3.ack.error().error_code() == code::invalid_argument);
  }
}

TEST_CASE("a repeated message id is acknowledged as a duplicate and not processed again") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str()));
  REQUIRE(spawn(*n, "d/1").is_ok());
  auto first = send(*n, "d/1", {{"add", 7}}, "msg-1");
  REQUIRE(first.ack.is_ok());
  auto second = send(*n, "d/1", {{"add", 7}}, "msg-1");
  REQUIRE(second.ack.is_ok());
  CHECK(second.ack->duplicate);
  CHECK(second.ack->seq == first.ack->seq);
  REQUIRE(second.reply.is_ok());
  CHECK(second.reply->body == first.reply->body);
  CHECK(total(*n, "d/1") == 7);
}

TEST_CASE("a signal repeated with the same dedupe key is applied once, also through the inbox") {
  test::temp_dir dir;
  auto c = test_config(dir.str());
  SUBCASE("processed directly") {}
  SUBCASE("spilled to the durable inbox") {
    c.max_unacked_per_agent = 0;
  }
  auto n = start(c);
  REQUIRE(spawn(*n, "d/2").is_ok());
  auto signal = [&](const std::string& key) {
    future_value<result<send_ack>> f;
    n->signal(
        "d/2", "reset", nullptr, [&](result<send_ack> a) { f.set(std::move(a)); }, nullptr, key);
    auto v = f.wait();
    REQUIRE(v.has_value());
    return *v;
  };
  auto first = signal("s-n1-41");
  REQUIRE(first.is_ok());
  CHECK_FALSE(first->duplicate);
  auto again = signal("s-n1-41");
  REQUIRE(again.is_ok());
  CHECK(again->duplicate);
  CHECK(again->seq == first->seq);
  auto other = signal("s-n1-42");
  REQUIRE(other.is_ok());
  CHECK_FALSE(other->duplicate);
  // Without a key, a signal is never a duplicate.
  auto plain = signal("");
  REQUIRE(plain.is_ok());
  CHECK_FALSE(plain->duplicate);
  REQUIRE(test::eventually([&] {
    auto l = n->ledger("d/2", 1, 100);
    return l.is_ok() &&
           std::count_if(l->events.begin(), l->events.end(),
                         [](const ledger_entry& e) { return e.type == "signal_received"; }) >= 3;
  }));
  auto ledger = n->ledger("d/2", 1, 100);
  REQUIRE(ledger.is_ok());
  CHECK(std::count_if(ledger->events.begin(), ledger->events.end(),
                      [](const ledger_entry& e) { return e.type == "signal_received"; }) == 3);
}

TEST_CASE("concurrent activations of a dormant agent are single-flight") {
  test::temp_dir dir;
  {
    auto n = start(test_config(dir.str()));
    REQUIRE(spawn(*n, "sf/agent", {{"total", 3}}).is_ok());
  }
  auto n = start(test_config(dir.str()));
  CHECK(n->live_agents() == 0);
  constexpr int k = 64;
  std::atomic<int> ok{0}, hibernated{0}, done{0};
  future_value<bool> all;
  for (int i = 0; i < k; ++i)
    n->get("sf/agent", [&](result<agent_view> v) {
      if (v.is_ok() && v->state.value("total", 0) == 3) ++ok;
      if (v.is_ok() && v->hibernated) ++hibernated;
      if (++done == k) all.set(true);
    });
  REQUIRE(all.wait().has_value());
  CHECK(ok.load() == k);
  CHECK(hibernated.load() == 1);  // only the request that woke it saw it dormant
  CHECK(n->live_agents() == 1);
  CHECK(n->metrics_text().find("keel_activations_total 1\n") != std::string::npos);
}

TEST_CASE("an idle agent hibernates and resumes with exactly the state it had") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str(), /*idle_ms=*/20));
  REQUIRE(spawn(*n, "h/1").is_ok());
  for (int i = 1; i <= 10; ++i) REQUIRE(send(*n, "h/1", {{"add", i}}).ack.is_ok());
  auto before = get(*n, "h/1");
  REQUIRE(before.is_ok());
  REQUIRE(test::eventually([&] { return n->live_agents() == 0; }));
  // At least one snapshot (more if a slow machine let it doze off between sends).
  CHECK(n->metrics_text().find("keel_snapshots_total 0\n") == std::string::npos);
  auto after = get(*n, "h/1");
  REQUIRE(after.is_ok());
  CHECK(after->hibernated);
  CHECK(after->state == before->state);
  CHECK(after->last_seq == before->last_seq);
  CHECK(after->state.value("total", 0) == 55);
  // And it keeps working after the resume.
  auto s = send(*n, "h/1", {{"add", 1}});
  REQUIRE(s.reply.is_ok());
  CHECK(s.reply->body == json{{"total", 56}});
}

TEST_CASE("state survives a restart of the node") {
  test::temp_dir dir;
  {
    auto n = start(test_config(dir.str()));
    REQUIRE(spawn(*n, "r/1").is_ok());
    for (int i = 0; i < 100; ++i) REQUIRE(send(*n, "r/1", {{"add", 2}}).ack.is_ok());
  }
  auto n = start(test_config(dir.str()));
  CHECK(total(*n, "r/1") == 200);
  auto ledger = n->ledger("r/1", 1, 1000);
  REQUIRE(ledger.is_ok());
  CHECK(ledger->events.size() == 1 + 200);
  for (std::size_t i = 0; i < ledger->events.size(); ++i) CHECK(ledger->events[i].seq == i + 1);
}

TEST_CASE("messages beyond the in-memory limit go through the durable inbox exactly once") {
  test::temp_dir dir;
  auto c = test_config(dir.str());
  c.max_unacked_per_agent = 0;  // every message is spilled to the inbox first
  auto n = start(c);
  REQUIRE(spawn(*n, "in/1").is_ok());
  for (int i = 0; i < 20; ++i) {
    auto s = send(*n, "in/1", {{"add", 1}}, "m" + std::to_string(i));
    REQUIRE(s.ack.is_ok());
    REQUIRE(s.reply.is_ok());
  }
  CHECK(total(*n, "in/1") == 20);
  CHECK(n->metrics_text().find("keel_inbox_spills_total 20\n") != std::string::npos);
  auto dup = send(*n, "in/1", {{"add", 1}}, "m3");
  REQUIRE(dup.ack.is_ok());
  CHECK(dup.ack->duplicate);
  CHECK(total(*n, "in/1") == 20);
}

TEST_CASE("a node started over unconsumed inbox entries processes them") {
  test::temp_dir dir;
  uint64_t id = 0;
  {
    auto n = start(test_config(dir.str()));
    REQUIRE(spawn(*n, "rec/1").is_ok());
  }
  {
    // What a crash between "inbox append acknowledged" and "consumed" leaves.
    auto db = persistence::store::open({dir.str(), 8 << 20, false});
    REQUIRE(db.is_ok());
    auto meta = (*db)->get_agent("rec/1");
    REQUIRE(meta.is_ok());
    REQUIRE(meta->has_value());
    id = (**meta).id;
    persistence::write_set ops;
    for (uint64_t a = 1; a <= 3; ++a) {
      persistence::inbox_entry e{
          "rec/1",       a, persistence::inbox_kind::message, "x" + std::to_string(a), "t",
          {{"add", 10}}, ""};
      ops.push_back({persistence::family::inbox, false, persistence::agent_seq_key(id, a),
                     persistence::encode(e, 0)});
      ops.push_back({persistence::family::dedupe, false,
                     persistence::dedupe_key(id, "x" + std::to_string(a)),
                     persistence::encode(persistence::dedupe_entry{a, false, nullptr}, 0)});
    }
    REQUIRE((*db)->write(ops, true).is_ok());
  }
  auto n = start(test_config(dir.str()));
  // Recovery activates the agent by itself; no request is needed.
  REQUIRE(test::eventually([&] {
    return n->metrics_text().find("keel_events_appended_total 6\n") != std::string::npos;
  }));
  CHECK(total(*n, "rec/1") == 30);
  auto again = send(*n, "rec/1", {{"add", 10}}, "x2");
  REQUIRE(again.ack.is_ok());
  CHECK(again.ack->duplicate);
  CHECK(total(*n, "rec/1") == 30);
}

TEST_CASE("a durable timer wakes a hibernated agent, also across a restart") {
  test::temp_dir dir;
  auto c = test_config(dir.str(), /*idle_ms=*/10);
  SUBCASE("while the node runs") {
    auto n = start(c);
    REQUIRE(spawn(*n, "t/1").is_ok());
    auto s = send(*n, "t/1", {{"add", 4}, {"delay_ms", 100}});
    REQUIRE(s.reply.is_ok());
    CHECK(s.reply->body.contains("timer"));
    REQUIRE(test::eventually([&] { return n->live_agents() == 0; }));
    REQUIRE(test::eventually([&] {
      return n->metrics_text().find("keel_timers_fired_total 1\n") != std::string::npos;
    }));
    REQUIRE(test::eventually([&] { return total(*n, "t/1") == 4; }));
  }
  SUBCASE("after a restart") {
    {
      auto n = start(c);
      REQUIRE(spawn(*n, "t/2").is_ok());
      REQUIRE(send(*n, "t/2", {{"add", 6}, {"delay_ms", 150}}).reply.is_ok());
    }
    auto n = start(c);
    REQUIRE(test::eventually([&] { return total(*n, "t/2") == 6; }));
    auto ledger = n->ledger("t/2", 1, 100);
    REQUIRE(ledger.is_ok());
    std::multiset<std::string> types;
    for (auto& e : ledger->events) types.insert(e.type);
    CHECK(types.count("timer_fired") == 1);
  }
}

TEST_CASE("a terminated agent keeps its ledger and refuses new messages") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str()));
  REQUIRE(spawn(*n, "x/1").is_ok());
  REQUIRE(send(*n, "x/1", {{"add", 1}}).ack.is_ok());
  future_value<result<agent_view>> f;
  n->terminate("x/1", "test", [&](result<agent_view> v) { f.set(std::move(v)); });
  auto v = f.wait();
  REQUIRE(v.has_value());
  REQUIRE(v->is_ok());
  CHECK((*v)->status == "terminated");
  auto s = send(*n, "x/1", {{"add", 1}});
  REQUIRE_FALSE(s.ack.is_ok());
  CHECK(s.ack.error().error_code() == code::conflict);
  auto ledger = n->ledger("x/1", 1, 100);
  REQUIRE(ledger.is_ok());
  CHECK(ledger->events.back().type == "terminated");
  // Terminated agents leave the listing unless it asks for all.
  auto shown = n->list("x/", "", 10);
  REQUIRE(shown.is_ok());
  CHECK(shown->agents.empty());
  auto listed = n->list("x/", "", 10, {{}, true});
  REQUIRE(listed.is_ok());
  REQUIRE(listed->agents.size() == 1);
  CHECK(listed->agents[0].status == "terminated");
  CHECK(listed->agents[0].phase == "terminated");
}

TEST_CASE("concurrent senders to many agents lose nothing and duplicate nothing") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str(), /*idle_ms=*/5));
  constexpr int agents = 20, per_thread = 200, threads = 4;
  for (int a = 0; a < agents; ++a) REQUIRE(spawn(*n, "c/" + std::to_string(a)).is_ok());
  std::vector<std::thread> ts;
  std::atomic<int> acked{0};
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        std::string name = "c/" + std::to_string((t * per_thread + i) % agents);
        future_value<bool> f;
        n->send(
            name, {"t" + std::to_string(t) + "-" + std::to_string(i), "", {{"add", 1}}},
            [&](result<send_ack> a) { f.set(a.is_ok()); }, nullptr);
        auto r = f.wait();
        if (r && *r) ++acked;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(acked.load() == threads * per_thread);
  int64_t sum = 0;
  for (int a = 0; a < agents; ++a) sum += total(*n, "c/" + std::to_string(a));
  CHECK(sum == threads * per_thread);
}

TEST_CASE("writes after a clean hibernation are not hidden by the clean snapshot") {
  test::temp_dir dir;
  {
    auto n = start(test_config(dir.str(), /*idle_ms=*/20));
    REQUIRE(spawn(*n, "cl/1").is_ok());
    REQUIRE(send(*n, "cl/1", {{"add", 5}}).ack.is_ok());
    REQUIRE(test::eventually([&] { return n->live_agents() == 0; }));  // clean snapshot at 3
  }
  {
    // Wake it, write more, stop before it can hibernate again.
    auto n = start(test_config(dir.str()));
    auto s = send(*n, "cl/1", {{"add", 7}});
    REQUIRE(s.reply.is_ok());
    CHECK(s.reply->body == json{{"total", 12}});
    auto m = send(*n, "cl/1", {{"add", 1}, {"delay_ms", 3'600'000}});
    REQUIRE(m.reply.is_ok());
  }
  auto n = start(test_config(dir.str()));
  auto v = get(*n, "cl/1");
  REQUIRE(v.is_ok());
  CHECK(v->state.value("total", 0) == 12);
  CHECK(v->last_seq == 3 + 2 + 2);
  auto ledger = n->ledger("cl/1", 1, 100);
  REQUIRE(ledger.is_ok());
  CHECK(ledger->events.size() == v->last_seq);
}

TEST_CASE("messages spilled to the inbox are recorded before a terminate queued behind them") {
  test::temp_dir dir;
  auto c = test_config(dir.str());
  c.max_unacked_per_agent = 1;
  auto n = start(c);
  REQUIRE(spawn(*n, "sp/1").is_ok());
  constexpr int k = 60;
  std::mutex mu;
  std::set<std::string> acked;
  std::atomic<int> answered{0};
  for (int i = 0; i < k; ++i) {
    std::string id = "s" + std::to_string(i);
    n->send(
        "sp/1", {id, "", {{"add", 1}}},
        [&, id](result<send_ack> a) {
          if (a.is_ok()) {
            std::lock_guard lk(mu);
            acked.insert(id);
          }
          ++answered;
        },
        nullptr);
  }
  future_value<result<agent_view>> t;
  n->terminate("sp/1", "test", [&](result<agent_view> v) { t.set(std::move(v)); });
  REQUIRE(t.wait().has_value());
  REQUIRE(test::eventually([&] { return answered.load() == k; }));
  auto ledger = n->ledger("sp/1", 1, 1000);
  REQUIRE(ledger.is_ok());
  std::set<std::string> recorded;
  for (auto& e : ledger->events)
    if (e.type == "message_received") recorded.insert(e.data["id"].get<std::string>());
  std::lock_guard lk(mu);
  CHECK(acked.size() == static_cast<std::size_t>(k));  // all were queued before the terminate
  for (auto& id : acked)
    CHECK_MESSAGE(recorded.count(id) == 1, "acknowledged but not recorded: " << id);
}

TEST_CASE("a retry of a spilled message waits for and gets the first reply") {
  test::temp_dir dir;
  auto c = test_config(dir.str());
  c.max_unacked_per_agent = 0;
  auto n = start(c);
  REQUIRE(spawn(*n, "rt/1").is_ok());
  auto first = std::make_shared<future_value<result<agent_reply>>>();
  auto second = std::make_shared<future_value<result<agent_reply>>>();
  n->send(
      "rt/1", {"x", "", {{"add", 4}}}, [](result<send_ack>) {},
      [first](result<agent_reply> r) { first->set(std::move(r)); });
  n->send(
      "rt/1", {"x", "", {{"add", 4}}}, [](result<send_ack>) {},
      [second](result<agent_reply> r) { second->set(std::move(r)); });
  auto a = first->wait(), b = second->wait();
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  REQUIRE_MESSAGE(a->is_ok(), a->error().to_string());
  REQUIRE_MESSAGE(b->is_ok(), b->error().to_string());
  CHECK((*a)->body == json{{"total", 4}});
  CHECK((*b)->body == json{{"total", 4}});
  CHECK(total(*n, "rt/1") == 4);
}

TEST_CASE("a malformed query is refused without stopping the agent") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str()));
  REQUIRE(spawn(*n, "q/1", {{"total", 9}}).is_ok());
  for (json q : {json{{"get", 1}}, json{{"get", "x"}}, json{{"what", true}}}) {
    future_value<result<json>> f;
    n->query("q/1", q, [&](result<json> r) { f.set(std::move(r)); });
    auto r = f.wait();
    REQUIRE(r.has_value());
    REQUIRE_FALSE(r->is_ok());
    CHECK(r->error().error_code() == code::invalid_argument);
  }
  CHECK(total(*n, "q/1") == 9);
  CHECK(n->metrics_text().find("keel_activations_total 1\n") != std::string::npos);
  CHECK(n->metrics_text().find("keel_agent_failures_total 0\n") != std::string::npos);
}

TEST_CASE("client message ids may not use the prefix of generated ids") {
  test::temp_dir dir;
  auto n = start(test_config(dir.str()));
  REQUIRE(spawn(*n, "id/1").is_ok());
  auto plain = send(*n, "id/1", {{"add", 1}});
  REQUIRE(plain.ack.is_ok());
  CHECK(plain.ack->id.rfind("auto-", 0) == 0);
  auto taken = send(*n, "id/1", {{"add", 100}}, plain.ack->id);
  REQUIRE_FALSE(taken.ack.is_ok());
  CHECK(taken.ack.error().error_code() == code::invalid_argument);
  CHECK(total(*n, "id/1") == 1);
}

TEST_CASE("a timer fires even behind thousands of due timers nobody consumes") {
  test::temp_dir dir;
  {
    auto db = persistence::store::open({dir.str(), 8 << 20, true});
    REQUIRE(db.is_ok());
    persistence::write_set ops;
    for (uint64_t t = 1; t <= 4200; ++t)
      ops.push_back({persistence::family::timers, false, persistence::timer_key(1, 999'999, t),
                     persistence::encode(persistence::timer_entry{"ghost/agent", nullptr}, 0)});
    REQUIRE((*db)->write(ops, true).is_ok());
  }
  auto n = start(test_config(dir.str()));
  REQUIRE(spawn(*n, "tm/1").is_ok());
  REQUIRE(send(*n, "tm/1", {{"add", 3}, {"delay_ms", 50}}).reply.is_ok());
  CHECK(test::eventually([&] { return total(*n, "tm/1") == 3; }));
}

namespace {

// The value of one gauge line ("NAME VALUE") of the metrics text; -1 when absent.
int64_t gauge(const std::string& text, const std::string& line_start) {
  auto at = text.find("\n" + line_start + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + line_start.size() + 2));
}

}  // namespace

TEST_CASE("the agent gauges count exactly, from the directory, across hibernation and restarts") {
  test::temp_dir dir;
  constexpr int agents = 12;
  {
    auto n = start(test_config(dir.str(), /*idle_ms=*/20));
    for (int i = 0; i < agents; ++i) {
      const std::string name = "g/" + std::to_string(i);
      REQUIRE(spawn(*n, name).is_ok());
      REQUIRE(send(*n, name, {{"add", i}}).ack.is_ok());
    }
    future_value<result<agent_view>> t;
    n->terminate("g/0", "test", [&](result<agent_view> v) { t.set(std::move(v)); });
    REQUIRE(t.wait().value().is_ok());
    // Every one wrote its directory entry more than once (spawn, message,
    // hibernation): an estimate of the keys would count them twice.
    REQUIRE(test::eventually([&] { return n->live_agents() == 0; }));
    const std::string text = n->metrics_text();
    CHECK(gauge(text, "keel_agents_live") == 0);
    CHECK(gauge(text, "keel_agents_hibernated") == agents - 1);
    CHECK(gauge(text, "keel_agents{phase=\"idle\"}") == agents - 1);
    CHECK(gauge(text, "keel_agents{phase=\"terminated\"}") == 1);

    // A listing reads the entries: it wakes nobody.
    auto listed = n->list("g/", "", 100);
    REQUIRE(listed.is_ok());
    CHECK(listed->agents.size() == agents - 1);  // not the terminated one
    for (const auto& a : listed->agents) {
      CHECK(a.phase == "idle");
      CHECK_FALSE(a.live);
    }
    CHECK(n->live_agents() == 0);
    CHECK(gauge(n->metrics_text(), "keel_activations_total") ==
          gauge(text, "keel_activations_total"));

    // A woken agent is live, not hibernated.
    REQUIRE(get(*n, "g/1").is_ok());
    const std::string woken = n->metrics_text();
    if (gauge(woken, "keel_agents_live") == 1)  // it may have dozed off again
      CHECK(gauge(woken, "keel_agents_hibernated") == agents - 2);
  }
  // After a restart the gauges come from one read of the directory.
  auto n = start(test_config(dir.str()));
  const std::string text = n->metrics_text();
  CHECK(gauge(text, "keel_agents_hibernated") == agents - 1);
  CHECK(gauge(text, "keel_agents{phase=\"idle\"}") == agents - 1);
  CHECK(gauge(text, "keel_agents{phase=\"terminated\"}") == 1);
  auto page = n->list("g/", "", 5, {{"terminated"}, false});
  REQUIRE(page.is_ok());
  REQUIRE(page->agents.size() == 1);
  CHECK(page->agents[0].name == "g/0");
  CHECK(page->next_after.empty());
  // Pages of the filtered listing go on where the last one ended.
  auto first = n->list("g/", "", 5);
  REQUIRE(first.is_ok());
  CHECK(first->agents.size() == 5);
  CHECK(first->next_after == first->agents.back().name);
}
