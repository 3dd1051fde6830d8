// node::abort_effects inside a real node (actors, store, journal) with an
// in-process model and a tool runner that blocks until its call is aborted
// or released: only the picked agents' calls are aborted, running ones see
// their signal, queued ones never start, and every outcome reaches its
// agent.

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/node.hpp"
#include "support/in_process_node.hpp"
#include "support/replay_check.hpp"
#include "support/stand_in_replicator.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using json = nlohmann::json;
using keel::test::eventually;
using keel::test::future_value;
using namespace keel::test::in_process;
using namespace std::chrono_literals;

namespace {

// Runs http tools by blocking until the call's abort signal is raised or
// the test releases every call. Answers "aborted" (retryable, maybe
// applied) or success.
class blocking_tools final : public actors::tool_runner {
 public:
  actors::effect_outcome run(const config::tool_spec&, const json&,
                             const actors::tool_call_context& ctx) override {
    if (!ctx.abort)
      return actors::effect_outcome::failure("the runtime gave no abort signal", false);
    // Registered before the lock is taken: on a raised signal it runs here.
    auto wake = ctx.abort->on_raise([this] {
      std::lock_guard lk(mu_);
      cv_.notify_all();
    });
    std::unique_lock lk(mu_);
    started_.push_back(ctx.agent);
    cv_.notify_all();
    cv_.wait_for(lk, 60s, [&] { return ctx.abort->raised() || released_; });
    if (ctx.abort->raised()) {
      aborted_.push_back({ctx.agent, std::chrono::steady_clock::now()});
      cv_.notify_all();
      return actors::effect_outcome::unknown("blocking tool was aborted", true);
    }
    return actors::effect_outcome::success({{"agent", ctx.agent}});
  }

  // Waits until calls of these agents have started; false after 10 s.
  bool wait_started(const std::vector<std::string>& agents) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, 10s, [&] {
      return std::all_of(agents.begin(), agents.end(), [&](const std::string& a) {
        return std::count(started_.begin(), started_.end(), a) > 0;
      });
    });
  }
  // When the call of `agent` saw its abort; nullopt when it did not within
  // 10 s.
  std::optional<std::chrono::steady_clock::time_point> wait_aborted(const std::string& agent) {
    std::unique_lock lk(mu_);
    std::optional<std::chrono::steady_clock::time_point> at;
    cv_.wait_for(lk, 10s, [&] {
      for (const auto& [a, t] : aborted_)
        if (a == agent) at = t;
      return at.has_value();
    });
    return at;
  }
  std::size_t started(const std::string& agent) {
    std::lock_guard lk(mu_);
    return static_cast<std::size_t>(std::count(started_.begin(), started_.end(), agent));
  }
  std::size_t aborted() {
    std::lock_guard lk(mu_);
    return aborted_.size();
  }
  void release() {
    std::lock_guard lk(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> started_;
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> aborted_;
  bool released_ = false;
};

// The model "fake": its first reply in a turn calls the tool "work", the
// next one answers. Records which agents' calls ran.
class recording_model final : public actors::model_provider {
 public:
  actors::effect_outcome complete(const config::model_spec&, const json&,
                                  const actors::model_call_context& ctx) override {
    {
      std::lock_guard lk(mu_);
      agents_.push_back(ctx.agent);
    }
    return actors::effect_outcome::success(ctx.call_index == 0 ? tool_call_reply("work", {{"n", 1}})
                                                               : text_reply("done"));
  }
  std::size_t calls(const std::string& agent) {
    std::lock_guard lk(mu_);
    return static_cast<std::size_t>(std::count(agents_.begin(), agents_.end(), agent));
  }

 private:
  std::mutex mu_;
  std::vector<std::string> agents_;
};

// An assistant that calls the http tool "work" once per turn. One attempt
// per call: an aborted call is not retried.
std::shared_ptr<const config::agent_spec> assistant() {
  auto s = std::make_shared<config::agent_spec>();
  s->name = "assistant";
  s->model.provider = "fake";
  s->model.retry.attempts = 1;
  auto work = tool("work", config::tool_kind::http);
  work.retry.attempts = 1;
  s->tools = {work};
  return s;
}

struct abort_node {
  keel::test::temp_dir dir;
  std::shared_ptr<recording_model> model = std::make_shared<recording_model>();
  std::shared_ptr<blocking_tools> tools = std::make_shared<blocking_tools>();
  std::unique_ptr<actors::node> node;

  // `repl`: the node's shells write through it (a replicated node).
  explicit abort_node(uint32_t effect_threads, actors::replicator* repl = nullptr) {
    config::node_config cfg;
    cfg.data_dir = dir.str();
    cfg.http_port = 0;
    actors::start_options opts;
    opts.agent_types = {assistant()};
    opts.plugins.providers["fake"] = model;
    opts.plugins.runners[config::tool_kind::http] = tools;
    opts.effect_threads = effect_threads;
    opts.repl = repl;
    auto n = actors::node::start(cfg, opts);
    REQUIRE_MESSAGE(n, n.error().to_string());
    node = std::move(*n);
  }
  ~abort_node() {
    tools->release();  // nothing the test left blocked holds up the stop
    if (node) keel::test::check_strict_replays(*node);
  }
  abort_node(const abort_node&) = delete;
  abort_node& operator=(const abort_node&) = delete;

  void spawn(const std::string& name) {
    future_value<result<actors::agent_view>> v;
    node->spawn(name, "assistant", nullptr,
                [&v](result<actors::agent_view> r) { v.set(std::move(r)); });
    auto r = v.wait();
    REQUIRE(r);
    REQUIRE_MESSAGE(*r, r->error().to_string());
  }
  void send(const std::string& name, const std::string& text) {
    future_value<result<actors::send_ack>> a;
    node->send(
        name, {"", "client", text}, [&a](result<actors::send_ack> r) { a.set(std::move(r)); },
        nullptr);
    auto r = a.wait();
    REQUIRE(r);
    REQUIRE_MESSAGE(*r, r->error().to_string());
  }
  // The error of the first final effect_failed; "" while there is none.
  std::string final_failure(const std::string& name) {
    auto l = node->ledger(name, 1, 10'000);
    REQUIRE(l);
    for (const auto& e : l->events)
      if (e.type == "effect_failed" && e.data.value("final", false))
        return e.data.value("error", "");
    return "";
  }
  bool tool_succeeded(const std::string& name) {
    auto l = node->ledger(name, 1, 10'000);
    REQUIRE(l);
    for (const auto& e : l->events)
      if (e.type == "effect_completed" && e.data.value("tool", "") == "work") return true;
    return false;
  }
  bool metric(const std::string& line) {
    return node->metrics_text().find("\n" + line + "\n") != std::string::npos;
  }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool in_group_a(std::string_view agent) {
  return agent.starts_with("a/");
}

}  // namespace

TEST_CASE(
    "abort_effects aborts the picked agents' running calls and keeps queued ones from starting") {
  // Two effect threads, taken by the tool calls of a/1 and b/1: a/2's
  // model call waits in the queue.
  abort_node n(2);
  for (const char* name : {"a/1", "a/2", "b/1"}) n.spawn(name);
  n.send("a/1", "go");
  n.send("b/1", "go");
  REQUIRE(n.tools->wait_started({"a/1", "b/1"}));
  n.send("a/2", "go");
  REQUIRE(eventually([&] { return n.metric("keel_effect_calls_in_flight 3"); }));
  CHECK(n.model->calls("a/2") == 0);

  auto raised_at = std::chrono::steady_clock::now();
  CHECK(n.node->abort_effects(in_group_a) == 2);  // a/1 running, a/2 queued; not b/1
  auto seen = n.tools->wait_aborted("a/1");
  REQUIRE(seen.has_value());
  MESSAGE("the running call saw its abort "
          << std::chrono::duration_cast<std::chrono::microseconds>(*seen - raised_at).count()
          << " us after abort_effects");
  CHECK(*seen - raised_at < 2s);

  // a/1's outcome reaches it as the runner gave it; a/2's queued call ends
  // without ever reaching the model, once a thread is free for it.
  std::string a1, a2;
  REQUIRE(eventually([&] { return !(a1 = n.final_failure("a/1")).empty(); }));
  CHECK(contains(a1, "blocking tool was aborted"));
  REQUIRE(eventually([&] { return !(a2 = n.final_failure("a/2")).empty(); }));
  CHECK(contains(a2, "aborted before it started"));
  CHECK(n.model->calls("a/2") == 0);
  CHECK(n.tools->started("a/2") == 0);
  CHECK(n.tools->aborted() == 1);

  // b/1 was not picked: still running, it finishes when released.
  CHECK(n.final_failure("b/1").empty());
  n.tools->release();
  REQUIRE(eventually([&] { return n.tool_succeeded("b/1"); }));
  CHECK(n.final_failure("b/1").empty());
  CHECK(n.tools->aborted() == 1);

  CHECK(eventually([&] { return n.metric("keel_effect_calls_in_flight 0"); }));
  CHECK(n.metric("keel_effect_calls_aborted_total 2"));
  // Nothing left to abort: the calls that ended left the registry.
  CHECK(n.node->abort_effects(in_group_a) == 0);
}

TEST_CASE("abort_effects with nothing in flight, or a pick that selects nobody, raises nothing") {
  abort_node n(1);
  n.spawn("a/1");
  CHECK(n.node->abort_effects([](std::string_view) { return true; }) == 0);
  n.send("a/1", "go");
  REQUIRE(n.tools->wait_started({"a/1"}));
  CHECK(n.node->abort_effects([](std::string_view a) { return a == "a/2"; }) == 0);
  CHECK(n.tools->aborted() == 0);
  n.tools->release();
  CHECK(eventually([&] { return n.tool_succeeded("a/1"); }));
}

TEST_CASE(
    "a replicated node starts no queued call once it no longer leads the agent's group in the "
    "shell's term") {
  keel::test::stand_in_replicator repl;
  // One effect thread: b/1's tool call holds it while a/1's model call
  // waits in the queue.
  abort_node n(1, &repl);
  repl.n = n.node.get();
  n.spawn("b/1");
  n.spawn("a/1");
  n.send("b/1", "go");
  REQUIRE(n.tools->wait_started({"b/1"}));
  n.send("a/1", "go");
  // a/1's model call is queued behind b/1's tool call (the model would
  // answer at once: it has not been asked).
  CHECK(n.model->calls("a/1") == 0);
  // The node stops leading (a lapsed lease, a new term) before the queued
  // call gets a thread.
  repl.lead = false;
  n.tools->release();
  REQUIRE(eventually([&] { return !n.final_failure("a/1").empty(); }, 10s));
  CHECK(n.final_failure("a/1").find("no longer leads") != std::string::npos);
  CHECK(n.model->calls("a/1") == 0);
}
