// Agent loops inside a real node (actors, store, journal), with in-process
// model and tool fakes: the write-ahead order of effects, worker queues
// across a restart, and the built-in tools.

#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "actors/node.hpp"
#include "support/in_process_node.hpp"
#include "support/replay_check.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using json = nlohmann::json;
using keel::test::eventually;
using keel::test::future_value;
using namespace keel::test::in_process;

namespace {

std::shared_ptr<const config::agent_spec> spec_with(std::vector<config::tool_spec> tools) {
  auto s = std::make_shared<config::agent_spec>();
  s->name = "assistant";
  s->model.provider = "fake";
  s->tools = std::move(tools);
  return s;
}

struct loop_node {
  keel::test::temp_dir dir;
  std::shared_ptr<fake_model> model = std::make_shared<fake_model>();
  std::shared_ptr<fake_tools> tools = std::make_shared<fake_tools>();
  std::shared_ptr<const config::agent_spec> spec;
  std::unique_ptr<actors::node> node;

  explicit loop_node(std::shared_ptr<const config::agent_spec> s) : spec(std::move(s)) { start(); }
  // Every ledger the test leaves must replay strictly.
  ~loop_node() {
    if (node) keel::test::check_strict_replays(*node);
  }
  loop_node(const loop_node&) = delete;
  loop_node& operator=(const loop_node&) = delete;

  void start() {
    config::node_config cfg;
    cfg.data_dir = dir.str();
    cfg.http_port = 0;
    node = start_node(cfg, {spec}, model, tools);
  }

  void spawn(const std::string& name, const std::string& type = "assistant") {
    future_value<result<actors::agent_view>> v;
    node->spawn(name, type, nullptr, [&v](result<actors::agent_view> r) { v.set(std::move(r)); });
    auto r = v.wait();
    REQUIRE(r);
    REQUIRE_MESSAGE(*r, r->error().to_string());
  }
  void send(const std::string& name, json body) {
    future_value<result<actors::send_ack>> a;
    node->send(
        name, {"", "client", std::move(body)},
        [&a](result<actors::send_ack> r) { a.set(std::move(r)); }, nullptr);
    auto r = a.wait();
    REQUIRE(r);
    REQUIRE_MESSAGE(*r, r->error().to_string());
  }
  actors::agent_view view(const std::string& name) {
    future_value<result<actors::agent_view>> v;
    node->get(name, [&v](result<actors::agent_view> r) { v.set(std::move(r)); });
    auto r = v.wait();
    REQUIRE(r);
    REQUIRE(*r);
    return **r;
  }
  std::string phase(const std::string& name) { return view(name).phase; }
  std::vector<actors::ledger_entry> ledger(const std::string& name) {
    auto l = node->ledger(name, 1, 10'000);
    REQUIRE(l);
    return l->events;
  }
  int count(const std::string& name, const std::string& type) {
    int n = 0;
    for (const auto& e : ledger(name)) n += e.type == type;
    return n;
  }
};

}  // namespace

TEST_CASE("a tool is called only once its effect_started is durable, with a stable key") {
  loop_node n(spec_with({tool("lookup", config::tool_kind::http)}));
  n.model->reply = [](const json& req, uint64_t i) {
    if (i == 0) return tool_call_reply("lookup", {{"order", 9}});
    // The second request carries the tool's result as the last message.
    const json& last = req["messages"].back();
    return text_reply(last["role"] == "tool" ? "saw " + last["content"].get<std::string>()
                                             : "no result");
  };
  std::atomic<bool> started_was_durable{false};
  n.tools->check = [&](const config::tool_spec&, const json&,
                       const actors::tool_call_context& ctx) {
    // The key is "<agent>#<effect id>": that seq must already be in the ledger.
    const uint64_t effect =
        std::stoull(ctx.idempotency_key.substr(ctx.idempotency_key.find('#') + 1));
    auto l = n.node->ledger("t/1", effect, 1);
    started_was_durable = l && l->events.size() == 1 && l->events[0].type == "effect_started";
  };
  n.spawn("t/1");
  n.send("t/1", "where is order 9?");
  REQUIRE(eventually([&] { return n.phase("t/1") == "idle"; }));
  CHECK(started_was_durable);
  auto v = n.view("t/1");
  const std::string answer = v.state["last"]["answer"];
  CHECK(answer.find("\"order\":9") != std::string::npos);
  REQUIRE(n.tools->keys.size() == 1);
  CHECK(n.tools->keys[0].rfind("t/1#", 0) == 0);
  CHECK(n.count("t/1", "effect_completed") == 1);
  CHECK(n.count("t/1", "turn_completed") == 1);
}

TEST_CASE("a worker task survives a restart of the node and is recorded once") {
  loop_node n(spec_with({tool("charge", config::tool_kind::worker)}));
  n.model->reply = [](const json&, uint64_t i) {
    return i == 0 ? tool_call_reply("charge", {{"amount", 5}}) : text_reply("charged");
  };
  n.spawn("t/w");
  n.send("t/w", "charge it");
  REQUIRE(eventually([&] { return n.phase("t/w") == "waiting_worker"; }));
  auto leased = n.node->poll_task("q", "w1");
  REQUIRE(leased);
  CHECK(leased->agent == "t/w");
  CHECK(leased->arguments == json{{"amount", 5}});
  CHECK_FALSE(n.node->poll_task("q", "w2"));  // leased to w1

  // The node restarts: the task comes back from its marker, still leased for
  // one lease, so w1 (which may still be working on it) can finish it and
  // nobody else gets it meanwhile.
  n.node->stop();
  n.start();
  CHECK_FALSE(n.node->poll_task("q", "w2"));
  auto again = n.node->task_stats();
  CHECK(again["queues"]["q"]["leased"] == 1);
  future_value<result<json>> done;
  n.node->complete_task(leased->id, "w1", {true, {{"charged", 5}}, "", false},
                        [&done](result<json> r) { done.set(std::move(r)); });
  auto r = done.wait();
  REQUIRE(r);
  REQUIRE(*r);
  REQUIRE(eventually([&] { return n.phase("t/w") == "idle"; }));
  // A second result for the same task is refused.
  future_value<result<json>> twice;
  n.node->complete_task(leased->id, "w1", {true, nullptr, "", false},
                        [&twice](result<json> res) { twice.set(std::move(res)); });
  auto t = twice.wait();
  REQUIRE(t);
  REQUIRE_FALSE(*t);
  CHECK(t->error().error_code() == code::not_found);
  CHECK(n.count("t/w", "effect_completed") == 1);
  CHECK_FALSE(n.node->poll_task("q", "w3"));
}

TEST_CASE("a lease that runs out hands the task to the next worker") {
  auto s =
      std::make_shared<config::agent_spec>(*spec_with({tool("charge", config::tool_kind::worker)}));
  s->tools[0].lease_ms = 1;
  loop_node n(s);
  n.model->reply = [](const json&, uint64_t i) {
    return i == 0 ? tool_call_reply("charge", {{"amount", 1}}) : text_reply("ok");
  };
  n.spawn("t/l");
  n.send("t/l", "go");
  std::optional<actors::task_view> first;
  REQUIRE(eventually([&] { return (first = n.node->poll_task("q", "w1")).has_value(); }));
  std::optional<actors::task_view> second;
  REQUIRE(eventually([&] { return (second = n.node->poll_task("q", "w2")).has_value(); }));
  CHECK(second->id == first->id);
  CHECK(n.node->task_stats()["requeued"].get<uint64_t>() >= 1);
}

TEST_CASE("send_message and spawn_agent reach other agents by name") {
  auto s = spec_with({tool("spawn", config::tool_kind::spawn_agent),
                      tool("tell", config::tool_kind::send_message)});
  loop_node n(s);
  n.model->reply = [](const json&, uint64_t i) {
    if (i == 0) return tool_call_reply("spawn", {{"name", "acct/x"}, {"type", "counter"}});
    if (i == 1) return tool_call_reply("tell", {{"to", "acct/x"}, {"message", {{"add", 2}}}});
    return text_reply("done");
  };
  n.spawn("t/s");
  n.send("t/s", "set up acct/x with 2");
  REQUIRE(eventually([&] { return n.phase("t/s") == "idle"; }));
  CHECK(n.view("t/s").state["last"]["status"] == "completed");
  REQUIRE(eventually([&] { return n.view("acct/x").state.value("total", 0) == 2; }));
  // The message went with the effect's key as its id: a redelivery is a duplicate.
  bool found = false;
  for (const auto& e : n.ledger("acct/x"))
    if (e.type == "message_received") found = e.data["id"].get<std::string>().rfind("t/s#", 0) == 0;
  CHECK(found);
}

TEST_CASE("sleep waits on a durable timer and the turn goes on after it") {
  loop_node n(spec_with({tool("nap", config::tool_kind::sleep)}));
  n.model->reply = [](const json&, uint64_t i) {
    return i == 0 ? tool_call_reply("nap", {{"ms", 30}}) : text_reply("rested");
  };
  n.spawn("t/z");
  n.send("t/z", "rest a bit");
  REQUIRE(eventually([&] { return n.phase("t/z") == "idle"; }));
  CHECK(n.view("t/z").state["last"]["answer"] == "rested");
  CHECK(n.count("t/z", "timer_fired") == 1);
}

TEST_CASE("whoever waits on a message hears the answer of the turn it started") {
  loop_node n(spec_with({tool("lookup", config::tool_kind::http)}));
  n.model->reply = [](const json&, uint64_t i) {
    return i == 0 ? tool_call_reply("lookup", {{"order", 1}}) : text_reply("order 1 shipped");
  };
  n.spawn("t/a");
  future_value<result<actors::agent_reply>> answer;
  n.node->send(
      "t/a", {"q-1", "client", "where is order 1?"}, [](result<actors::send_ack>) {},
      [&answer](result<actors::agent_reply> r) { answer.set(std::move(r)); });
  auto r = answer.wait();
  REQUIRE(r);
  REQUIRE(*r);
  CHECK((*r)->ok);
  CHECK((*r)->body["status"] == "completed");
  CHECK((*r)->body["answer"] == "order 1 shipped");
}

TEST_CASE("a worker's failure reaches the agent with every field the worker reported") {
  config::tool_spec charge = tool("charge", config::tool_kind::worker);
  charge.idempotent = false;
  loop_node n(spec_with({charge}));
  n.model->reply = [](const json&, uint64_t i) {
    return i == 0 ? tool_call_reply("charge", {{"amount", 5}}) : text_reply("charged");
  };
  n.spawn("t/f");
  n.send("t/f", "charge it");
  REQUIRE(eventually([&] { return n.phase("t/f") == "waiting_worker"; }));
  auto leased = n.node->poll_task("q", "w1");
  REQUIRE(leased);
  // Not idempotent and maybe applied: the call is put in doubt, with the
  // worker's error and retryability as it reported them.
  future_value<result<json>> done;
  n.node->complete_task(leased->id, "w1", {false, nullptr, "card network timed out", true, true},
                        [&done](result<json> r) { done.set(std::move(r)); });
  auto r = done.wait();
  REQUIRE(r);
  REQUIRE(*r);
  CHECK(**r == json{{"recorded", true}});
  std::vector<actors::ledger_entry> doubts;
  for (auto& e : n.ledger("t/f"))
    if (e.type == "effect_in_doubt") doubts.push_back(e);
  REQUIRE(doubts.size() == 1);
  CHECK(doubts[0].data["error"] == "card network timed out");
  CHECK(doubts[0].data["retryable"] == true);
  CHECK(doubts[0].data["attempt"] == 1);
  CHECK(doubts[0].data["tool"] == "charge");
  CHECK(n.phase("t/f") == "in_doubt");
}
