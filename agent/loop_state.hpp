#pragma once
// The agent loop's control state (turn, queue, usage, last) as types. An
// agent_state of a loop holds it decoded (agent_state::loop); it becomes
// JSON only at the edge, as the "ctl" member of the type's data in a
// snapshot or a spawned event, in exactly the layout the loop has always
// written (docs/formats.md): decode then encode gives the same bytes.
//
// Fields that some states carry and others do not (what a wait holds
// depends on what it waits on; usage.model_requests appears with the
// first model call) are std::optional, so an absent key stays absent.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/event.hpp"
#include "base/status.hpp"

namespace keel::agent {

// What a turn waits on. On disk: the wait's "on".
enum class wait_on : uint8_t {
  model,         // a model call runs
  tool,          // a tool call runs (http, exec, send_message, spawn_agent)
  worker,        // a worker task is queued or running
  sleep,         // a sleep tool's durable timer
  human,         // ask_human: the "answer" signal
  approval,      // a call that needs approval: "approve" or "reject"
  in_doubt,      // an effect that may have been applied: "resolve"
  retry,         // the backoff timer before the next attempt
  compensation,  // a compensating tool call runs
};
std::string_view to_string(wait_on on);
std::optional<wait_on> wait_on_from_string(std::string_view s);

// Where a proposed tool call stands. On disk: the call's "state".
enum class call_state : uint8_t { proposed, refused, running, done, failed };
std::string_view to_string(call_state s);
std::optional<call_state> call_state_from_string(std::string_view s);

// What a turn waits for. Which fields are set depends on `on`:
//   model: effect, attempt, call_index
//   tool, worker, sleep, human: effect, attempt, call, tool, kind (+ since
//     for human)
//   approval: call, since
//   compensation: effect, attempt, for_effect, tool, kind
//   retry: prev, timer; in_doubt: prev, since
struct loop_wait {
  wait_on on = wait_on::model;
  std::optional<uint64_t> effect;
  std::optional<uint64_t> attempt;
  std::optional<uint64_t> call_index;
  std::optional<uint64_t> call;        // index into loop_turn::calls
  std::optional<uint64_t> for_effect;  // on disk "for": the effect compensated
  std::optional<uint64_t> timer;
  std::optional<std::string> tool;
  std::optional<std::string> kind;  // the tool's kind as its effect_started named it
  std::optional<int64_t> since;     // a wait for people: when it began
  // retry and in_doubt: the wait they are about (at most one element; a
  // vector so that the type can hold itself).
  std::vector<loop_wait> prev;

  uint64_t effect_id() const { return effect.value_or(0); }
  uint64_t attempt_no() const { return attempt.value_or(0); }
  uint64_t call_no() const { return call.value_or(0); }
  const std::string& tool_name() const;
  // The wait a retry or a doubt is about; nullptr when none.
  const loop_wait* about() const { return prev.empty() ? nullptr : &prev.front(); }

  friend bool operator==(const loop_wait&, const loop_wait&) = default;
};

// A tool call the model proposed in the turn's last reply.
struct loop_call {
  std::string id;
  std::string name;
  json arguments;
  call_state state = call_state::proposed;

  friend bool operator==(const loop_call&, const loop_call&) = default;
};

// A completed call that has a compensating tool, kept until compensated.
struct loop_done {
  uint64_t effect = 0;
  std::string tool;
  std::string compensate;
  json arguments;
  json result;

  friend bool operator==(const loop_done&, const loop_done&) = default;
};

// Why a turn is ending once its compensations have run.
struct turn_failing {
  std::string status;  // "failed" | "cancelled"
  std::string reason;

  friend bool operator==(const turn_failing&, const turn_failing&) = default;
};

struct loop_turn {
  uint64_t n = 0;
  std::string id;  // the input's id: a message id or signal_input_id()
  std::string from;
  int64_t started_ms = 0;
  uint64_t steps = 0;
  uint64_t model_calls = 0;
  uint64_t tool_calls = 0;
  uint64_t tokens = 0;
  std::vector<loop_call> calls;
  uint64_t next = 0;  // the next call to decide
  std::optional<loop_wait> wait;
  std::vector<loop_done> done;
  std::optional<turn_failing> failing;
  bool final = false;                 // the last reply had no tool calls
  json answer;                        // the last reply's content
  std::optional<uint64_t> waited_ms;  // time spent waiting for people

  friend bool operator==(const loop_turn&, const loop_turn&) = default;
};

// An input waiting for its turn.
struct queued_input {
  std::string id;
  std::string from;
  std::string input;
  std::optional<uint64_t> retry_of;  // a retry: the failed turn's number

  friend bool operator==(const queued_input&, const queued_input&) = default;
};

struct loop_usage {
  uint64_t model_calls = 0;  // attempts
  uint64_t tokens = 0;
  uint64_t tool_calls = 0;
  uint64_t wall_ms = 0;
  std::optional<uint64_t> model_requests;  // calls, not attempts

  friend bool operator==(const loop_usage&, const loop_usage&) = default;
};

// How the last turn ended (its turn_completed).
struct last_turn {
  uint64_t turn = 0;
  std::string status;  // "completed" | "failed" | "cancelled" | "stopped"
  std::optional<json> answer;
  std::optional<json> reason;

  friend bool operator==(const last_turn&, const last_turn&) = default;
};

struct loop_state {
  std::vector<queued_input> queue;
  std::optional<loop_turn> turn;
  uint64_t turns = 0;
  loop_usage usage;
  std::optional<last_turn> last;
  std::optional<std::string> spec_hash;  // the version it was spawned with

  friend bool operator==(const loop_state&, const loop_state&) = default;
};

// The "ctl" member of a loop's data, and its parts as they appear there.
json to_json(const loop_state& s);
json to_json(const loop_wait& w);
json to_json(const loop_usage& u);
json to_json(const last_turn& l);
// Errors: corruption naming the field that has no place or the wrong type
// in the layout above (`what` names the record).
result<loop_state> loop_state_from_json(const json& ctl, std::string_view what);

}  // namespace keel::agent
