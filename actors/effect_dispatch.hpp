#pragma once
// Internal to actors/: starts an agent loop's effects once the write that
// asks for them is durable, and hands every outcome back to the agent as an
// typed effect_result request through runtime::route (so an agent that left is
// activated again). Blocking calls (models, http and exec tools) go to the
// effect pool, registered in runtime::calls with an abort signal of their
// own (node::abort_effects) until they return; built-ins (send_message, spawn_agent) are requests
// to other agents; worker tools join their queue. CAF-free.

#include <cstdint>
#include <string>

#include "actors/runtime.hpp"
#include "agent/loop.hpp"

namespace keel::actors {

// The agent an effect belongs to. `loop` may be null (then nothing starts).
struct effect_target {
  runtime* rt = nullptr;
  std::string agent;
  uint64_t agent_id = 0;
  const agent::loop_type* loop = nullptr;
  // Replicated (rt->repl set): the agent's group and the term its shell
  // was activated in. A blocking call starts only while this node still
  // leads the group in that term (and holds its lease).
  uint32_t group = 0;
  uint64_t term = 0;
};

// The idempotency key of an effect: "<agent>#<effect id>", the same for
// every attempt and after a crash.
std::string effect_key(const std::string& agent, uint64_t effect);

// The agent's input for outcome `o` of attempt `attempt` of `effect`:
// every field as the effect produced it.
agent::effect_result_input result_input(uint64_t effect, uint32_t attempt, effect_outcome o);

// Hands an effect's outcome back to its agent as an effect_result request
// carrying that input (activating the agent if it left).
void post_result(runtime* rt, const std::string& agent, uint64_t effect, uint32_t attempt,
                 effect_outcome o);

// Each returns true when a result will come back for (effect, attempt): the
// agent must stay live until it does. Worker tasks, sleeps and human waits
// return false (the agent may hibernate meanwhile).
bool dispatch_model(const effect_target& t, const agent::agent_state& st,
                    const agent::model_call_effect& m);
bool dispatch_tool(const effect_target& t, const agent::tool_call_effect& call);

}  // namespace keel::actors
