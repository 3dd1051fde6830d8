#pragma once
// A real actors::node started in the test process (actors, store, journal on
// a temp directory) with in-process fakes of the outside world: the model
// provider "fake", answering from a function of the call, and an http tool
// runner that echoes its arguments. With builders of the tool specs and
// model replies these take. Uses doctest assertions: include it from test
// files only.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "actors/node.hpp"

namespace keel::test::in_process {

using json = nlohmann::json;

// Answers model calls from a function of the request and the call's index;
// counts them.
class fake_model final : public actors::model_provider {
 public:
  std::function<json(const json& request, uint64_t call_index)> reply;
  std::atomic<int> calls{0};
  actors::effect_outcome complete(const config::model_spec&, const json& request,
                                  const actors::model_call_context& ctx) override {
    ++calls;
    return actors::effect_outcome::success(reply(request, ctx.call_index));
  }
};

// Runs http tools in-process and echoes their arguments; `check`, when set,
// sees every call first.
class fake_tools final : public actors::tool_runner {
 public:
  std::function<void(const config::tool_spec&, const json&, const actors::tool_call_context&)>
      check;
  std::mutex mu;
  std::vector<json> seen;         // the arguments of every call
  std::vector<std::string> keys;  // the idempotency key of every call
  actors::effect_outcome run(const config::tool_spec& tool, const json& args,
                             const actors::tool_call_context& ctx) override {
    if (check) check(tool, args, ctx);
    {
      std::lock_guard lk(mu);
      seen.push_back(args);
      keys.push_back(ctx.idempotency_key);
    }
    return actors::effect_outcome::success({{"tool", tool.name}, {"echo", args}});
  }
  std::size_t count() {
    std::lock_guard lk(mu);
    return seen.size();
  }
};

// Starts a node on `cfg` that knows `types`, with `model` as the provider
// "fake" and `tools` running every http tool.
inline std::unique_ptr<actors::node> start_node(
    const config::node_config& cfg, std::vector<std::shared_ptr<const config::agent_spec>> types,
    std::shared_ptr<fake_model> model, std::shared_ptr<fake_tools> tools) {
  actors::start_options opts;
  opts.agent_types = std::move(types);
  opts.plugins.providers["fake"] = std::move(model);
  opts.plugins.runners[config::tool_kind::http] = std::move(tools);
  auto n = actors::node::start(cfg, opts);
  REQUIRE_MESSAGE(n, n.error().to_string());
  return std::move(*n);
}

// A tool of `kind`, idempotent, at an address nothing listens on (the fakes
// run it); worker tools take tasks from queue "q" with a one-minute lease.
inline config::tool_spec tool(std::string name, config::tool_kind kind) {
  config::tool_spec t;
  t.name = std::move(name);
  t.kind = kind;
  t.url = "http://127.0.0.1:1/unused";
  t.queue = "q";
  t.lease_ms = 60'000;
  t.idempotent = true;
  return t;
}

// A model reply that calls `name` with `args` (call id "c1").
inline json tool_call_reply(const std::string& name, json args) {
  return {{"content", nullptr},
          {"tool_calls", json::array({{{"id", "c1"}, {"name", name}, {"arguments", args}}})},
          {"usage", {{"prompt_tokens", 1}, {"completion_tokens", 1}}}};
}

// A model reply that answers `t`.
inline json text_reply(const std::string& t) {
  return {{"content", t}, {"tool_calls", json::array()}, {"usage", json::object()}};
}

}  // namespace keel::test::in_process
