#pragma once
// The deterministic agent core: decide(state, input) -> events + effects,
// apply(state, event) -> state. No I/O, no clocks, no randomness: time
// arrives in the input. Recovery folds the ledger through apply(); the
// shell (actors/) persists decide()'s events before acting on its effects.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/event.hpp"
#include "agent/loop_state.hpp"
#include "base/agent_status.hpp"
#include "base/status.hpp"

namespace keel::agent {

struct pending_timer {
  int64_t due_ms = 0;
  json payload;

  friend bool operator==(const pending_timer&, const pending_timer&) = default;
};

// A fork made of this agent: `name` shares this ledger up to seq `at`.
struct fork_ref {
  std::string name;
  uint64_t at = 0;

  friend bool operator==(const fork_ref&, const fork_ref&) = default;
};

struct agent_state {
  std::string type;
  // The version of the type the agent runs (a spec's hash; "" for the
  // built-in types): set by `spawned`, changed only by `upgraded`. Whoever
  // decides for the agent, the node or a replay, uses this version.
  std::string version;
  agent_status status = agent_status::active;
  // Paused by an operator: the shell feeds no new input but operator
  // signals and starts no effect until resumed (see decide()).
  bool paused = false;
  std::vector<fork_ref> forks;
  uint64_t last_seq = 0;      // seq of the last applied event (= events applied)
  uint64_t last_arrival = 0;  // highest mailbox arrival consumed
  uint64_t next_timer_id = 1;
  std::map<uint64_t, pending_timer> timers;
  json data = json::object();  // the type's own fields (but "ctl", see loop)
  // An agent loop's control state, decoded once when the data is loaded
  // (spawned, a snapshot) and encoded only when a snapshot is written: the
  // "ctl" member of the data as stored, which `data` then lacks. Empty for
  // other types. See agent/README.md.
  std::optional<loop_state> loop;

  friend bool operator==(const agent_state&, const agent_state&) = default;
};

// The type's data as stored (in a snapshot, in a spawned event): `data`,
// with the loop's control state as its "ctl".
json type_data(const agent_state& s);
// Loads the type's data as stored into `s`: a "ctl" member is decoded into
// s.loop. Errors: corruption (naming `what`) when "ctl" is not an agent
// loop's control state; `s` is then unchanged.
status load_type_data(agent_state& s, json data, std::string_view what);

// Snapshots are the state as JSON, stored as a record of this type.
inline constexpr uint16_t snapshot_record_type = 0xE001;
json state_to_json(const agent_state& s);
result<agent_state> state_from_json(const json& j, std::string_view what);

// --- inputs: what can happen to an agent -----------------------------------
struct message_input {
  uint64_t arrival = 0;  // position in the agent's mailbox
  std::string id;        // dedupe key
  std::string from;
  json body;
};
struct signal_input {
  uint64_t arrival = 0;
  std::string name;
  json payload;
};
// Signals every type shares, decided by the core before the type sees any
// signal: "pause" and "resume" ({"by"}), "forked" ({"as", "at", "by"},
// sent to the parent of a new fork) and "salvaged" (what a salvage of the
// node's store dropped for this agent); config::node_signals. A type never
// receives them.
bool is_operator_signal(std::string_view name);
// The id a signal's input goes by when it starts a turn ("auto-signal-N",
// N its arrival): the turn's answer names it (reply_effect::to).
std::string signal_input_id(uint64_t arrival);
// What a paused agent still takes: the operator signals, and cancel and
// resolve (an operator may end or settle what it holds).
bool passes_pause(std::string_view signal);
struct timer_input {
  uint64_t timer_id = 0;
};
struct spawn_input {
  std::string type;
  json input;
  std::string version{};  // the type's version() (recorded in `spawned` when not "")
};
// Run version `to` of the agent's type from the next step on (an operator's
// keel upgrade, or the node when it no longer has the agent's version).
// Whoever feeds it has checked that `to` exists and can take the agent
// over where it is (agent_type::can_take_over).
struct upgrade_input {
  std::string to;
  std::string by;
  std::string reason;  // "" for an operator's upgrade
};
struct terminate_input {
  std::string by;
};
// What one attempt of an effect (model call, tool call) came to; `attempt`
// must match the attempt the agent waits for, else the result is stale
// (an attempt abandoned by a crash) and ignored.
struct effect_result_input {
  uint64_t effect = 0;
  uint32_t attempt = 1;
  bool ok = false;
  json result;
  std::string error;
  bool retryable = false;
  // The failed call may have been applied: a non-idempotent tool's call
  // then ends in doubt instead of being retried or failed.
  bool maybe_applied = false;
};
// Fed once after activation when needs_recovery(): effects the previous
// incarnation started and never saw finish are retried or put in doubt.
// `node_crashes` counts, per effect, the node's crashes in a row that the
// effect was running through; one that reached `max_crashes` (0: no
// limit) is not started again but fails, as a call the tool refused would
// (recorded as effect_failed, so replay feeds that failure): a call that
// takes the node down must not do so on every restart.
struct recover_input {
  std::map<uint64_t, uint32_t> node_crashes;
  uint32_t max_crashes = 0;
};
// A fork goes on from the history it copied (recorded as fork_started).
struct fork_input {
  std::string parent;
  uint64_t at = 0;
  std::string by;
  int64_t gap_ms = 0;  // time since the last copied event
};
using input = std::variant<message_input, signal_input, timer_input, spawn_input, terminate_input,
                           effect_result_input, recover_input, fork_input, upgrade_input>;

// --- effects: what the shell must do once the events are durable ----------
struct reply_effect {
  bool ok = true;
  json body;         // the reply when ok
  std::string code;  // error code when !ok ("invalid_message", "conflict")
  std::string message;
  // Empty: the reply to the input being decided. Else the id of an earlier
  // message whose answer this is (an agent loop answers when its turn ends);
  // such a message got no reply of its own.
  std::string to;
};
struct set_timer_effect {
  uint64_t timer_id = 0;
  int64_t due_ms = 0;
  json payload;
};
struct cancel_timer_effect {
  uint64_t timer_id = 0;
  int64_t due_ms = 0;
};
// Call the model with the request built from the state once the decision's
// events are applied (agent_type::model_request).
struct model_call_effect {
  uint64_t effect = 0;
  uint32_t attempt = 1;
  uint64_t call_index = 0;  // model calls the agent made before this one
};
// Run one tool of the agent's spec (http, exec, worker, send_message,
// spawn_agent) with these arguments.
struct tool_call_effect {
  uint64_t effect = 0;
  uint32_t attempt = 1;
  std::string tool;
  json arguments;
};
// The effect is over (finished, failed, in doubt or abandoned): the shell
// drops its running marker and any queued worker task.
struct end_effect {
  uint64_t effect = 0;
};
using effect = std::variant<reply_effect, set_timer_effect, cancel_timer_effect, model_call_effect,
                            tool_call_effect, end_effect>;

struct decision {
  std::vector<event> events;
  std::vector<effect> effects;
};

// The behaviour of one kind of agent. Implementations are stateless and
// deterministic; each hook appends to `out` after the generic event.
class agent_type {
 public:
  virtual ~agent_type() = default;
  virtual std::string_view name() const = 0;
  // Which version of the type this is: the hash of its spec for an agent
  // loop, "" for a built-in type (which has one version).
  virtual std::string_view version() const { return {}; }
  // Whether this version can run an agent found in `s` (written by another
  // version): ok, or why not (conflict: it waits in a call of a tool this
  // version does not have).
  virtual status can_take_over(const agent_state&) const { return status::ok(); }
  // The signals this type takes besides the node's (config::node_signals),
  // in the order a refusal lists them. The node refuses any other signal
  // before recording it (check_signal_name).
  virtual std::vector<std::string> signals() const { return {}; }
  // Whether `sig` (one of signals()) applies to an agent in `s` now: ok;
  // conflict with the reason when deciding it could only refuse it
  // (approve with nothing awaiting approval); invalid_argument for a
  // payload it cannot take. Pure, like decide(), which keeps the same
  // check for signals that waited behind other input.
  virtual status signal_applies(const agent_state&, const signal_input&) const {
    return status::ok();
  }
  // Validates a spawn input and returns the initial `data`.
  virtual result<json> initial_data(const json& input) const = 0;
  virtual void on_message(const agent_state& s, const message_input& m, int64_t now_ms,
                          decision& out) const = 0;
  virtual void on_signal(const agent_state& s, const signal_input& sig, int64_t now_ms,
                         decision& out) const = 0;
  virtual void on_timer(const agent_state& s, const pending_timer& t, int64_t now_ms,
                        decision& out) const = 0;
  // Applies a type-specific event (state_changed, message_rejected) to data.
  virtual void apply(agent_state& s, const event& e) const = 0;
  // Answers a read-only query from state; never changes it.
  virtual result<json> query(const agent_state& s, const json& q) const = 0;

  // The agent loop's hooks; the defaults suit types without effects.
  virtual void on_effect_result(const agent_state&, const effect_result_input&, int64_t,
                                decision&) const {}
  virtual void on_recover(const agent_state&, const recover_input&, int64_t, decision&) const {}
  // True when the state says an effect was running in-process: after an
  // activation that means its process died, and recover_input is due.
  virtual bool needs_recovery(const agent_state&) const { return false; }
  // What GET /v1/agents/{name} shows as "state".
  virtual json view(const agent_state& s) const { return s.data; }
  // "" for types without phases; else e.g. "idle", "waiting_approval".
  virtual std::string phase(const agent_state&) const { return {}; }
  // Effects with a marker (running or queued) that the state waits on; a
  // terminated or failed agent abandons them.
  virtual std::vector<uint64_t> open_effects(const agent_state&) const { return {}; }
};

// The built-in types by name; nullptr when unknown.
const agent_type* find_builtin_type(std::string_view name);

// The versions of one agent type that a replay may meet: the ledger names
// the version of each step (agent_state::version), and a replay decides
// each step with that version, so a ledger replays after any number of
// edits of its type.
class type_versions {
 public:
  virtual ~type_versions() = default;
  // nullptr when this version is unknown.
  virtual const agent_type* find(std::string_view version) const = 0;
};
// One type answering for every version: built-in types, and tests.
class one_version final : public type_versions {
 public:
  explicit one_version(const agent_type& t) : t_(t) {}
  const agent_type* find(std::string_view) const override { return &t_; }

 private:
  const agent_type& t_;
};

// The version the decision beginning with `first` runs on `st`: a spawn
// names its own, anything else runs the state's. Ledgers written before
// versions were recorded name theirs only in the loop's initial data
// (ctl.spec_hash), which this falls back on.
std::string version_of(const agent_state& st, const event& first);
// The version a state written before agent_state::version existed runs.
std::string legacy_version(const json& type_data);

// Whether an agent `agent` of type `t` takes a signal called `name` at
// all: the node's signals and t.signals(). Errors: invalid_argument naming
// the signals it takes, and the nearest one to a typo.
status check_signal_name(const agent_type& t, std::string_view name, std::string_view agent);
// Whether `sig` applies to agent `agent` in `s` now (pause of a paused
// agent, t.signal_applies): the node refuses a signal that would only be
// refused when decided, before recording it. REQUIRES: check_signal_name
// passed. Errors: conflict (naming the agent's phase), invalid_argument.
status check_signal_now(const agent_type& t, const agent_state& s, const signal_input& sig,
                        std::string_view agent);
// Where an agent stands for listings and metrics: its status once it is
// no longer active, else its type's phase ("idle" for types without).
std::string listed_phase(const agent_type& t, const agent_state& s);
// Whether an agent in `phase` waits for a person (an approval, an answer
// to ask_human, an effect in doubt to resolve): waiting_approval,
// waiting_human, in_doubt.
bool waits_for_human(std::string_view phase);
// Every phase listed_phase() gives for the built-in types and agent loops,
// and "unknown" (a listing's word for an entry an earlier version wrote):
// what a listing's phase filter takes.
const std::vector<std::string>& known_phases();

decision decide(const agent_type& t, const agent_state& s, const input& in, int64_t now_ms);
// decide() as the node runs it (and replay re-runs it): an exception thrown
// by a type becomes a `failed` event, an "internal" error reply and the end
// of every effect the state waited on, so a bug in a type stops that agent
// and nothing else.
decision decide_guarded(const agent_type& t, const agent_state& s, const input& in, int64_t now_ms);
void apply(const agent_type& t, agent_state& s, const event& e);

// Helpers for types.
reply_effect reply_ok(json body);
reply_effect reply_error(std::string code, std::string message);

}  // namespace keel::agent
