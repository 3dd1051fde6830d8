#pragma once
// Replay: re-run an agent from its ledger through the same decide() the
// node runs, with no side effects ever. Nothing here can reach a model or a
// tool: effects are answered from the recorded ledger, from overrides, or
// from a script, and otherwise the run stops.
//
// Strict replay rebuilds each input from the first event of each recorded
// decision (spawned, message_received, signal_received, timer_fired,
// terminated, a model or tool result, a recovery after a crash), feeds it
// to decide_guarded() with the recorded time, and checks that the events
// it decides are the recorded ones, field for field. The first difference
// is reported with its seq, what was recorded and what was decided.
//   - A result's attempt is not recorded: it is the attempt the state
//     waits for (a stale result decides nothing, so it is never recorded).
//   - Any other event begins a decision only as a recovery: recover_input
//     when the type's needs_recovery() says an effect was running.
//   - A recorded `failed` that begins a decision (a type threw) is applied
//     as recorded: decide_guarded() kept nothing of the input that caused it.
//   - An outcome that begins a decision is the input itself: a changed
//     result shows only where later events repeat it.
//
// A what-if run replays strictly up to the first overridden seq, answers
// that effect with the replacement instead, and from there on simulates
// the agent: model calls and tool calls are answered by the mock policy,
// the recorded messages and signals that came later are fed in their
// order whenever the agent has nothing running, and due timers fire in due
// order. While paused the agent hears only operator signals, as on a node.
// Nothing crashes in a simulation: recorded recoveries are not repeated.
// Each step takes the time it took in the original where there is one (a
// recorded answer, a recorded input, the same timer), so an override with
// the recorded answer reproduces the original ledger when the original fed
// its inputs while nothing ran.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/core.hpp"

namespace keel::agent {

struct recorded_event {
  uint64_t seq = 0;
  event ev;
};

// The first point where a replay left the recorded ledger.
struct divergence {
  uint64_t seq = 0;    // the recorded seq that differs (last recorded + 1: an extra event)
  std::string reason;  // a sentence: "decided effect_failed where the ledger has model_replied",
                       // "effect_started differs in \"arguments\": the ledger has ..."
  json recorded;       // {"seq","type","time","data"} or null (the ledger had no more)
  json replayed;       // the same shape, or null (decide produced fewer events, or a
                       // recorded event no input explains, or a gap in seqs)
};

struct strict_result {
  bool identical = false;  // for a what-if's prefix: identical up to the first override
  uint64_t events = 0;     // recorded events checked
  uint64_t decisions = 0;  // decide() calls made
  std::optional<divergence> diverged;
  agent_state state;  // after the last event that matched
};

// Replays `events` (seqs base.last_seq + 1, + 2, ... in order) starting
// from `base`: a default agent_state for a whole ledger, or the snapshot a
// compaction left. Each decision runs the version of the type that the
// ledger says the agent ran then (spawned, upgraded); a version `vs` does
// not have, like a gap in seqs, is a divergence.
strict_result replay_strict(const type_versions& vs, agent_state base,
                            const std::vector<recorded_event>& events);
inline strict_result replay_strict(const agent_type& t, agent_state base,
                                   const std::vector<recorded_event>& events) {
  return replay_strict(one_version(t), std::move(base), events);
}

// The seqs of `events` where a step (one decision) begins, in order, as far
// as they replay strictly: where a ledger may be cut (compaction, forks).
std::vector<uint64_t> step_starts(const type_versions& vs, agent_state base,
                                  const std::vector<recorded_event>& events);

// How model and tool calls are answered after the first override.
enum class mock_policy {
  // The recorded answer where the request is unchanged: the first unused
  // original call with an equal model request, or the same tool and
  // arguments (so retries get their recorded attempts in order); else stop.
  recorded,
  scripted,  // like recorded, then the script's next answer; stop when it runs out
  stop,      // stop at the first call that no override answers
};
std::optional<mock_policy> mock_policy_from_string(std::string_view s);
std::string_view to_string(mock_policy p);

struct what_if_options {
  // seq -> replacement. The seq must hold the outcome of an effect: a
  // model_replied, effect_completed, effect_failed or compensation_completed
  // that began its decision. A model's replacement is a reply as a model
  // provider returns it ({"content", "tool_calls": [{"id"?, "name",
  // "arguments"?}], "usage"?, "finish_reason"?}; missing ids become
  // "call_<effect>_<i>") or {"error", "retryable"?}; a tool's is
  // {"result": ...} or {"error", "retryable"?}. Unknown fields are errors.
  // The first override answers the call waiting at its seq; a later one
  // replaces the recorded answer of the original call answered at its seq,
  // and is used when the what-if run makes that call again (the same
  // model request, or the same tool and arguments), under every policy.
  std::map<uint64_t, json> overrides;
  mock_policy policy = mock_policy::recorded;
  // For mock_policy::scripted: {"model": [reply...], "tools": {"NAME":
  // [{"result"} | {"error"}...]}}, each list used in order.
  json script = json::object();
  // A run that has not settled after this many decisions stops.
  uint32_t max_decisions = 10'000;
};

// One line of what an agent did, for people: the tool-call chain and the
// answers. Both runs of a what-if are described the same way, so they can
// be shown side by side.
struct trace_step {
  uint64_t seq = 0;
  std::string kind;  // "message", "model", "guardrail", "approval", "tool", "tool_failed",
                     // "in_doubt", "compensation", "answer", "turn_failed", "signal",
                     // "paused", "resumed", "forked", "failed", "terminated", "stopped"
  std::string text;  // "refund({\"amount\":120,\"order\":9}) -> {\"ok\":true}"
  json detail;       // the event's data (null for "stopped")
};
std::vector<trace_step> trace_of(const std::vector<recorded_event>& events);

struct what_if_result {
  // Replay up to the first override; a divergence there ends the run.
  strict_result prefix;
  std::vector<recorded_event> events;  // the what-if ledger, seq 1 (or base + 1) on
  std::vector<trace_step> original;    // trace of the recorded ledger
  std::vector<trace_step> replayed;    // trace of `events`
  // "" when the agent settled (nothing running, every recorded input fed);
  // else why the run ended, e.g. "model call 4 at seq 18 has no answer
  // (policy stop)" (the agent's 4th model call), or how the recorded
  // ledger diverged before the first override. `replayed` then ends with a
  // "stopped" step saying the same.
  std::string stopped;
  uint32_t answered_recorded = 0;  // calls answered from the recorded ledger
  uint32_t answered_scripted = 0;
};

// Errors: invalid_argument (no override; an override names a seq that is
// not an effect's outcome beginning its decision, or not in the ledger; a
// malformed replacement or script). A ledger that diverges before the
// first override is no error: the result says so in `stopped`.
// The simulation runs the version the agent ran at the first override.
result<what_if_result> replay_what_if(const type_versions& vs, agent_state base,
                                      const std::vector<recorded_event>& events,
                                      const what_if_options& opts);
inline result<what_if_result> replay_what_if(const agent_type& t, agent_state base,
                                             const std::vector<recorded_event>& events,
                                             const what_if_options& opts) {
  return replay_what_if(one_version(t), std::move(base), events, opts);
}

// The input that answers the effect `st` waits for with `replacement` (as
// in what_if_options::overrides), for a fork that continues live from the
// state before `at`. `at` is the recorded event being replaced. Errors:
// invalid_argument (the state waits for no effect, or `at` is no outcome).
result<effect_result_input> override_input(const agent_type& t, const agent_state& st,
                                           const event& at, const json& replacement);

}  // namespace keel::agent
