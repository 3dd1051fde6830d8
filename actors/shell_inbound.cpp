// The agent shell's messages and signals (CAF-free): deduplication by id,
// the durable inbox a message spills to, deciding the input, and the reply
// that answers the sender now, later (when the turn ends) and on a retry.

#include "actors/shell_state.hpp"
#include "base/clock.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors::shell_detail {

namespace {

// What the sender of a message or signal hears once its input is decided:
// the decision's reply; for one an agent loop answers when the turn ends,
// that it was accepted (what a retry of its id hears until then); else an
// empty answer.
agent_reply answer_now(std::optional<agent::reply_effect> reply, bool later) {
  if (reply) return reply_of(std::move(*reply));
  if (later) return agent_reply{true, json{{"accepted", true}}, {}, {}};
  return agent_reply{true, nullptr, {}, {}};
}

// Until when a message id (or signal dedupe key) processed at `now` answers
// retries with its reply: the type's dedupe window, else the node's.
int64_t processed_expiry(const shell_state& s, int64_t now) {
  uint64_t window = s.rt->cfg.dedupe_window_ms;
  if (const auto* loop = loop_of(s); loop && loop->spec().dedupe_window_ms)
    window = *loop->spec().dedupe_window_ms;
  return window == 0 || window > static_cast<uint64_t>(INT64_MAX - now)
             ? INT64_MAX
             : now + static_cast<int64_t>(window);
}

}  // namespace

void consume_inbox_item(shell_state& s, inbox_item& item, int64_t now, batch& b) {
  auto& e = item.entry;
  if (e.kind == persistence::inbox_kind::message &&
      s.meta.origin != persistence::agent_origin::imported)
    follow_latest(s, now, b);
  // The item is consumed here: its body moves into the input.
  agent::input in;
  if (e.kind == persistence::inbox_kind::signal)
    in = agent::signal_input{e.arrival, e.id, std::move(e.body)};
  else
    in = agent::message_input{e.arrival, e.id, std::move(e.from), std::move(e.body)};
  auto reply = decide_into(s, in, now, b);
  if (e.kind == persistence::inbox_kind::signal && e.id == "cancel" && holding(s))
    fail_held_calls(s, now, b);
  // An agent loop answers a message, and a signal that starts a turn
  // without a reply of its own (retry), when the turn ends.
  const bool later = !reply && loop_of(s);
  const std::string answer_id =
      e.kind == persistence::inbox_kind::message ? e.id : agent::signal_input_id(e.arrival);
  agent_reply rj = answer_now(std::move(reply), later);
  ledger::batch_builder(b.ops).remove_from_inbox(s.meta.id, e.arrival);
  // A retry of this id waits for this write, then finds the reply.
  const std::string& key = e.kind == persistence::inbox_kind::message ? e.id : e.dedupe;
  if (!key.empty() && !(e.kind == persistence::inbox_kind::message && is_generated_id(key))) {
    s.writing_ids.insert(key);
    ledger::batch_builder(b.ops).mark_seen_with_reply(s.meta.id, key, e.arrival, reply_record(rj),
                                                      processed_expiry(s, now), now);
  }
  for (auto& w : item.waiters) {
    if (later) {
      s.answer_waiters[answer_id].push_back(w);
      continue;
    }
    b.reqs.push_back(w);
    b.done.push_back([w, rj] { deliver_reply(w, rj); });
  }
}

// Message or signal. Returns false when the request must wait for the write
// in flight (its id is being written right now).
bool handle_inbound(shell_state& s, const request_ptr& r, inbound_input in, int64_t now, batch& b,
                    uint32_t& direct) {
  const bool is_message = in.is_message();
  // Messages dedupe by their id; signals only by a key their sender gave.
  const std::string& key = in.key;
  if (!key.empty()) {
    if (s.writing_ids.count(key)) return false;
    auto seen = s.rt->db->find_message(s.meta.id, key, s.name);
    if (!seen) {
      fail(*r, seen.error());
      return true;
    }
    // Past its window a processed id is forgotten: the retry is new.
    if (*seen && (*seen)->live(now)) {
      s.rt->metrics.duplicates.fetch_add(1, std::memory_order_relaxed);
      auto& d = **seen;
      call_once(in.calls.accepted, send_ack{in.id, d.arrival, true});
      if (d.processed) {
        // The first answer exactly as it was recorded.
        call_once(in.calls.replied, reply_from_record(std::move(d.reply)));
      } else {
        for (auto& item : s.inbox)
          if ((is_message
                   ? item.entry.kind == persistence::inbox_kind::message && item.entry.id == key
                   : item.entry.kind == persistence::inbox_kind::signal &&
                         item.entry.dedupe == key))
            item.waiters.push_back(r);
      }
      return true;
    }
  }
  // A terminated parent still records that it was forked: its history
  // names every agent that shares it.
  const bool forked = !is_message && in.id == "forked";
  if (s.st.status != agent_status::active && !forked) {
    fail(*r,
         error(code::conflict, "agent " + s.name + " is " + std::string(to_string(s.st.status))));
    return true;
  }
  if (s.meta.origin == persistence::agent_origin::imported) {
    fail(*r,
         error(code::conflict, "agent " + s.name + " is an imported ledger: it takes no input"));
    return true;
  }
  // A paused agent holds everything but operator controls in its inbox;
  // once resumed, what it held is consumed before anything newer.
  const bool control = !is_message && agent::passes_pause(in.id);
  const bool hold = holding(s) ? !control : !s.inbox.empty();
  const bool spill = hold || direct >= s.rt->cfg.max_unacked_per_agent;
  // Built here, checked (a signal) and then decided: the payload is moved
  // along, never copied.
  agent::signal_input signal;
  if (!is_message) {
    signal = agent::signal_input{0, in.id, std::move(in.body)};
    // A signal its type does not take, or one that would only be refused
    // where the agent stands, is refused before anything is recorded. One
    // that waits behind other input is checked when it is decided.
    status ok = agent::check_signal_name(*s.type, in.id, s.name);
    if (ok && !spill) ok = agent::check_signal_now(*s.type, s.st, signal, s.name);
    if (!ok) {
      s.rt->metrics.signals_refused.fetch_add(1, std::memory_order_relaxed);
      fail(*r, ok);
      return true;
    }
  }
  uint64_t arrival = s.next_arrival++;
  std::string id = in.id;
  // A message without an id gets one for the reply, but no dedupe entry:
  // nobody can retry it, and the reserved prefix keeps it from colliding
  // with a client's id.
  const bool dedupe = !key.empty();
  if (is_message && id.empty()) id = std::string(generated_id_prefix) + std::to_string(arrival);
  const std::string dkey = key;
  if (dedupe) s.writing_ids.insert(dkey);
  (is_message ? s.rt->metrics.messages : s.rt->metrics.signals)
      .fetch_add(1, std::memory_order_relaxed);
  send_ack ack{id, arrival, false};
  int64_t received = r->received_ns;
  runtime* rt = s.rt;
  const bool wants_reply = static_cast<bool>(in.calls.replied);
  b.reqs.push_back(r);
  if (spill) {
    // Spill: durable in the inbox now, consumed by the next write.
    persistence::inbox_entry e{
        s.name,
        arrival,
        is_message ? persistence::inbox_kind::message : persistence::inbox_kind::signal,
        id,
        in.take_from(),
        is_message ? std::move(in.body) : std::move(signal.payload),
        is_message ? std::string() : dkey};
    ledger::batch_builder w(b.ops);
    w.spill_to_inbox(s.meta.id, e, now);
    if (dedupe) w.mark_seen(s.meta.id, dkey, arrival, now);
    s.inbox.push_back({std::move(e), {}});
    if (wants_reply) s.inbox.back().waiters.push_back(r);
    s.rt->metrics.inbox_spills.fetch_add(1, std::memory_order_relaxed);
    b.done.push_back([r, ack, received, rt] {
      rt->metrics.accept_ns.record(static_cast<uint64_t>(mono_ns() - received));
      call_once(inbound_of(*r)->accepted, ack);
    });
    return true;
  }
  ++direct;
  if (is_message) follow_latest(s, now, b);
  std::optional<agent::reply_effect> reply;
  if (is_message) {
    reply = decide_into(s, agent::message_input{arrival, id, in.take_from(), std::move(in.body)},
                        now, b);
  } else {
    signal.arrival = arrival;
    reply = decide_into(s, std::move(signal), now, b);
  }
  if (!is_message && in.id == "cancel" && holding(s)) fail_held_calls(s, now, b);
  const bool later = !reply && loop_of(s);
  agent_reply rj = answer_now(std::move(reply), later);
  if (later && wants_reply)
    s.answer_waiters[is_message ? id : agent::signal_input_id(arrival)].push_back(r);
  if (dedupe)
    ledger::batch_builder(b.ops).mark_seen_with_reply(s.meta.id, dkey, arrival, reply_record(rj),
                                                      processed_expiry(s, now), now);
  b.done.push_back([r, ack, rj = std::move(rj), received, rt, later] {
    rt->metrics.accept_ns.record(static_cast<uint64_t>(mono_ns() - received));
    inbound_calls& calls = *inbound_of(*r);
    call_once(calls.accepted, ack);
    if (!later) call_once(calls.replied, rj);
  });
  return true;
}

}  // namespace keel::actors::shell_detail
