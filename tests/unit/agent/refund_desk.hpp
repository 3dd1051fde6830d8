#pragma once
// The refund desk that the pure agent-loop tests drive by hand (no node, no
// model, no tools): its spec, with a tool of every kind, a deny rule and an
// approval rule, and the model replies the tests feed it as effect results.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/agent_spec.hpp"

namespace keel::test::pure_loop {

using json = nlohmann::json;

// The clock of a test's first step.
inline constexpr int64_t t0 = 1'700'000'000'000;

inline config::tool_spec tool(std::string name, config::tool_kind kind, bool idempotent = false,
                              std::string compensate = {}) {
  config::tool_spec t;
  t.name = std::move(name);
  t.kind = kind;
  t.url = "http://127.0.0.1:1/" + t.name;
  t.idempotent = idempotent;
  t.compensate = std::move(compensate);
  t.retry.attempts = 3;
  t.retry.backoff_ms = 100;
  return t;
}

// refund is undone by refund_undo and reserve by release; sql refuses DROP
// and TRUNCATE; refunds over 100 need a human. The model's retry is spelled
// out (the defaults) because the cases count its attempts and timers.
inline std::shared_ptr<config::agent_spec> refund_desk() {
  auto s = std::make_shared<config::agent_spec>();
  s->name = "refund-desk";
  s->instructions = "You handle refunds.";
  s->model.provider = "scripted";
  s->model.retry.attempts = 3;
  s->model.retry.backoff_ms = 200;
  s->tools.push_back(tool("lookup", config::tool_kind::http, true));
  s->tools.push_back(tool("refund", config::tool_kind::http, false, "refund_undo"));
  s->tools.push_back(tool("refund_undo", config::tool_kind::http, true));
  s->tools.push_back(tool("reserve", config::tool_kind::http, true, "release"));
  s->tools.push_back(tool("release", config::tool_kind::http, true));
  s->tools.push_back(tool("sql", config::tool_kind::http, true));
  s->tools.push_back(tool("nap", config::tool_kind::sleep));
  s->tools.push_back(tool("ask", config::tool_kind::ask_human));
  config::arg_rule no_drop;
  no_drop.name = "no-drop";
  no_drop.tool = "sql";
  no_drop.pointer = "/query";
  no_drop.pattern = "(?i)\\b(drop|truncate)\\b";
  no_drop.reason = "destructive SQL is not allowed";
  s->guardrails.rules.push_back(no_drop);
  config::arg_rule big;
  big.name = "big-refund";
  big.tool = "refund";
  big.pointer = "/amount";
  big.above = 100;
  big.action = config::arg_rule::action_kind::require_approval;
  big.reason = "refunds over 100 need a human";
  s->guardrails.rules.push_back(big);
  s->max_steps_per_turn = 8;
  return s;
}

// A model's text answer, as a model effect's result (no finish_reason).
inline json reply(std::string content) {
  return {{"content", std::move(content)},
          {"tool_calls", json::array()},
          {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 5}}}};
}

// A model's tool calls, ids "c0", "c1"... in order (no finish_reason).
inline json calls(std::vector<std::pair<std::string, json>> cs) {
  json tc = json::array();
  int i = 0;
  for (auto& [name, args] : cs)
    tc.push_back({{"id", "c" + std::to_string(i++)}, {"name", name}, {"arguments", args}});
  return {{"content", nullptr},
          {"tool_calls", tc},
          {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 5}}}};
}

}  // namespace keel::test::pure_loop
