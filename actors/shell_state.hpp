#pragma once
// Internal to the agent shell: the state of one agent's actor and the steps
// its request handlers share. The actor is in agent_shell.cpp; everything
// declared here is CAF-free (shell_steps.cpp, shell_requests.cpp,
// shell_inbound.cpp, shell_ledger.cpp, shell_standing.cpp). Only CAF's
// actor handle is needed here, not its runtime.

#include <caf/actor.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "actors/runtime.hpp"
#include "agent/core.hpp"
#include "agent/loop.hpp"
#include "ledger/codec.hpp"

namespace keel::actors::shell_detail {

using persistence::family;
using persistence::write_op;

struct inbox_item {
  persistence::inbox_entry entry;
  std::vector<request_ptr> waiters;  // want the reply
};

// One write set under construction and what to do once it is durable.
struct batch {
  persistence::write_set ops;
  std::vector<std::function<void()>> done;  // run in order once durable
  std::vector<request_ptr> reqs;            // failed if the write fails
};

struct shell_state {
  runtime* rt = nullptr;
  caf::actor supervisor;
  std::string name;
  // Effects this incarnation handed to the effect pool or another agent and
  // whose results have not come back: the shell does not hibernate while
  // there are any. (effect, attempt)
  std::set<std::pair<uint64_t, uint32_t>> running;
  bool recover_due = false;  // feed recover_input before anything else
  // Fed before anything else: the version the agent ran is not on this
  // node, and the latest takes it over (pin_version).
  std::optional<agent::upgrade_input> adopt;
  // Node crashes in a row each running effect went through (its marker's
  // count), read when recovery is due; kept on the markers of restarts.
  std::map<uint64_t, uint32_t> node_crashes;
  // Requests waiting for the answer of a message whose turn has not ended
  // (agent loops answer when the turn does), by message id.
  std::unordered_map<std::string, std::vector<request_ptr>> answer_waiters;
  int64_t idle_ns = 0;
  status broken;  // a load or write failure: the shell only leaves
  bool exists = false;
  bool view_pending_hibernated = false;  // next view reports "was dormant"
  persistence::agent_meta meta;
  const agent::agent_type* type = nullptr;
  agent::agent_state st;
  uint64_t next_arrival = 1;
  // Vectors, not deques: an empty std::deque allocates ~600 B, and every
  // live agent has these.
  std::vector<request_ptr> queue;
  std::vector<inbox_item> inbox;
  // Stamped on every request and write; the supervisor's idle sweep reads it.
  std::shared_ptr<std::atomic<int64_t>> last_active;
  std::unordered_set<std::string> writing_ids;  // message ids in the write in flight
  bool writing = false;
  batch in_flight;
  bool leaving = false;
  // Replicated: the agent's group and the term this node leads it in, taken
  // at activation; every write is proposed stamped with it.
  uint32_t group = 0;
  uint64_t term = 0;
  // The hash of the last ledger record, read on the first append of an
  // activation (most activations only read).
  std::optional<chain_hash> head;
  // Effects decided while the agent is paused: durable (their markers are
  // written) but not started until it is resumed.
  std::vector<agent::effect> held;
  bool timers_held = false;  // a timer came while paused
  // What the census counts for this agent: its directory entry as stored
  // (nullopt while it has none), and this actor's part in the live count.
  std::optional<census_entry> counted;
  live_mark live;
};

inline const agent::loop_type* loop_of(const shell_state& s) {
  return dynamic_cast<const agent::loop_type*>(s.type);
}

// shell_standing.cpp: where the agent stands, as requests, its directory
// entry and waiting senders are told.
//
// The agent as requests see it.
agent_view make_view(shell_state& s);
// Sets the listing fields of `m` (phase, paused, status) to where the
// agent stands; true when that changed them.
bool refresh_listing(const shell_state& s, persistence::agent_meta& m);
// Once directory entry `m` of the agent is durable: the census follows.
void count_as(shell_state& s, const persistence::agent_meta& m);
// The directory entry follows where the agent stands: a batch that changes
// its listing fields or writes the entry anyway carries it once, as it is
// after the batch; the census moves once that is durable. A batch that
// writes nothing writes no entry (a read never writes).
void sync_meta(shell_state& s, batch& b, int64_t now);
// What those waiting for a turn's answer hear while it waits instead:
// {"status": "waiting", "phase", "wait"?, "paused"?}.
agent_reply waiting_reply(const shell_state& s);
// When the turn now waits for a person, whoever waits for its answer hears
// waiting_reply() once the batch is durable.
void tell_parked(shell_state& s, batch& b);
// Hands `reply` to `r`, a message or signal request, if it still waits.
void deliver_reply(const request_ptr& r, const agent_reply& reply);

// shell_steps.cpp: loading, deciding, effects.
//
// Loads the agent (directory entry, snapshot, ledger tail, inbox) and pins
// the version it runs; leaves `exists` false when it is not on disk.
status load(shell_state& s);
// The crash counts on the agent's effect markers (read when recovery is due).
status load_crash_counts(shell_state& s);
// Whether the agent holds new input and effects: paused, and still active.
bool holding(const shell_state& s);
// Starts a model or tool call whose marker is durable; a paused agent
// holds it until resumed.
void start_effect(shell_state& s, const agent::effect& fx);
// The timers family's side of a set_timer or cancel_timer effect.
void timer_ops(shell_state& s, const agent::effect& fx, batch& b);
// Runs decide() and appends the events (applied to the state) to the batch.
// Returns the decision's reply, if it has one.
std::optional<agent::reply_effect> decide_into(shell_state& s, const agent::input& in, int64_t now,
                                               batch& b);
// A cancel while paused: the calls held since the pause end as failed.
void fail_held_calls(shell_state& s, int64_t now, batch& b);
// Before a message starts a turn of an idle agent whose type's latest
// version asks to be followed: the agent moves to it first.
void follow_latest(shell_state& s, int64_t now, batch& b);
// The agent comes into being (spawn, import): an id of its own and a
// directory entry to write. False after failing `r` when no id is had.
bool create(shell_state& s, const request_ptr& r, const agent::agent_type* t, agent_status status,
            int64_t now);

// shell_requests.cpp: handles one request (dispatching on its kind); false
// when it must wait for the write in flight. `direct` counts the messages
// this batch consumes directly (the rest spill to the inbox).
bool handle(shell_state& s, const request_ptr& r, int64_t now, batch& b, uint32_t& direct);

// shell_inbound.cpp: messages and signals.
//
// A message or signal as the inbound path handles both; refers into the
// request's call, whose body and sender move into the agent's input once
// the request is taken (never when it waits for the write in flight).
struct inbound_input {
  explicit inbound_input(message_call& m)
      : id(m.id), key(m.id), body(m.body), calls(m), from(&m.from) {}
  explicit inbound_input(signal_call& c) : id(c.signal), key(c.dedupe), body(c.payload), calls(c) {}
  bool is_message() const { return from != nullptr; }
  const std::string& id;   // message id ("" = generate one); signal name
  const std::string& key;  // dedupe key: the message id; the signal's own ("" = none)
  json& body;              // message body; signal payload
  inbound_calls& calls;
  std::string* from = nullptr;  // message sender; null for a signal
  std::string take_from() { return from ? std::move(*from) : std::string(); }
};
// Returns false when the request must wait for the write in flight (its id
// is being written right now).
bool handle_inbound(shell_state& s, const request_ptr& r, inbound_input in, int64_t now, batch& b,
                    uint32_t& direct);
// Consumes an entry of the durable inbox: decided, deleted and answered in
// this batch.
void consume_inbox_item(shell_state& s, inbox_item& item, int64_t now, batch& b);

// shell_ledger.cpp: an agent created from an exported ledger (import,
// fork), and a compaction prepared by ledger_ops::compact.
void handle_import(shell_state& s, const request_ptr& r, const import_call& c, int64_t now,
                   batch& b);
void handle_compact(shell_state& s, const request_ptr& r, const compact_call& c, int64_t now,
                    batch& b);

}  // namespace keel::actors::shell_detail
