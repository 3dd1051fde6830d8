#pragma once
// Internal to actors/: one API call on its way to an agent shell. A request
// names the agent and carries exactly one call: one struct per kind, each
// with only its own fields and its own completion callback(s), so the
// compiler checks which fields a handler may read. CAF-free.
//
// Contract: every callback runs at most once (call_once); a request
// destroyed with callbacks still pending (its actor died, the node stopped)
// fails them with code::unavailable, so no caller ever waits forever.

#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "actors/node.hpp"
#include "agent/core.hpp"
#include "base/call_once.hpp"

namespace keel::actors {

struct ledger_import;
struct compaction_plan;

// Create an agent of `type` with `input`.
struct spawn_call {
  std::string type;
  json input;
  callback<agent_view> viewed;
  void fail(const status& s) { call_once(viewed, s); }
};

// What a message and a signal both answer with: the acknowledgement once
// durable, and the reply (optional: only a caller that waits sets it).
struct inbound_calls {
  callback<send_ack> accepted;
  callback<agent_reply> replied;
  void fail(const status& s) {
    call_once(accepted, s);
    call_once(replied, s);
  }
};

// A message; `id` is its dedupe key ("" = the node generates one).
struct message_call : inbound_calls {
  std::string id;
  std::string from;
  json body;
  bool here_only = false;  // inbound_message::here_only
};

// A human or operator signal; `dedupe` is the sender's key ("" = none).
struct signal_call : inbound_calls {
  std::string signal;
  json payload;
  std::string dedupe;
};

// A read-only question to the agent's type.
struct query_call {
  json question;
  callback<json> answered;
  void fail(const status& s) { call_once(answered, s); }
};

// The agent as it stands.
struct get_call {
  callback<agent_view> viewed;
  void fail(const status& s) { call_once(viewed, s); }
};

struct terminate_call {
  std::string by;
  callback<agent_view> viewed;
  void fail(const status& s) { call_once(viewed, s); }
};

// A durable timer came due.
struct timer_call {
  uint64_t timer_id = 0;
  void fail(const status&) {}
};

// Activates the agent (recovery, a held inbox) and does nothing else.
struct wake_call {
  void fail(const status&) {}
};

// An effect's outcome, as the agent takes it.
struct effect_result_call {
  agent::effect_result_input outcome;
  callback<json> answered;  // optional: a worker waits to hear it recorded
  void fail(const status& s) { call_once(answered, s); }
};

// Create the agent from an exported ledger (import, fork).
struct import_call {
  std::shared_ptr<const ledger_import> ledger;
  callback<agent_view> viewed;
  void fail(const status& s) { call_once(viewed, s); }
};

// Apply a compaction_plan.
struct compact_call {
  std::shared_ptr<const compaction_plan> plan;
  callback<json> answered;
  void fail(const status& s) { call_once(answered, s); }
};

// Run another version of the agent's type: `to` is a hash, a unique
// prefix of one, or "" for the latest.
struct upgrade_call {
  std::string to;
  std::string by;
  callback<json> answered;
  void fail(const status& s) { call_once(answered, s); }
};

using call = std::variant<spawn_call, message_call, signal_call, query_call, get_call,
                          terminate_call, timer_call, wake_call, effect_result_call, import_call,
                          compact_call, upgrade_call>;

struct request {
  request(std::string agent, call c) : name(std::move(agent)), what(std::move(c)) {}
  request(const request&) = delete;
  request& operator=(const request&) = delete;
  // Fails the callbacks still pending with code::unavailable.
  ~request();

  std::string name;
  int64_t received_ns = 0;  // set by the node on intake
  call what;
};
using request_ptr = std::shared_ptr<request>;

template <class Call>
request_ptr make_request(std::string name, Call c) {
  return std::make_shared<request>(std::move(name), call(std::move(c)));
}

// The call of `r`, which must be of kind Call (a handler's own request).
template <class Call>
Call& call_of(const request_ptr& r) {
  return std::get<Call>(r->what);
}

// Fails every callback of `r` that has not run yet with `s`.
void fail(request& r, const status& s);

// The acknowledgement and reply callbacks of a message or signal request;
// null for any other kind.
inbound_calls* inbound_of(request& r);

// The reply of a decision, as the sender of a message or signal hears it:
// made once, then handed as it is to every waiter and to the HTTP edge.
agent_reply reply_of(agent::reply_effect r);
// The record form of a reply, as a message id's dedupe entry keeps it for
// retries (docs/formats.md): {"ok": true, "body"} or {"ok": false, "code",
// "message"}. Written once per processed message or signal.
json reply_record(const agent_reply& r);
// A recorded reply (a retry finds it in the dedupe entry) as the sender
// hears it: the same reply the first sender heard.
agent_reply reply_from_record(json record);

// Visitor of a call variant from a set of lambdas.
template <class... F>
struct overload : F... {
  using F::operator()...;
};
template <class... F>
overload(F...) -> overload<F...>;

}  // namespace keel::actors
