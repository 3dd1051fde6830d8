// The agent shell: one actor per live agent, the imperative shell around
// the pure core. It feeds requests to agent::decide, hands the resulting
// events to the journal writer and acts (acknowledges, replies, arms timers)
// only once they are durable.
//
// Batching: while one write is in flight, new requests queue; when it is
// durable the whole queue is decided in one go and written as one write
// set, which the journal then merges with other agents' writes. A message
// is consumed in the same write as the events it produced, so it is
// processed exactly once across crashes. Beyond max_unacked_per_agent
// messages in one write, further ones are only appended to the durable
// inbox (and acknowledged from there); they are consumed by the next write.
//
// Reads (agent directory, snapshot, ledger tail, dedupe lookups) run inline:
// they are memtable / block-cache hits of a few microseconds. Nothing here
// fsyncs on a scheduler thread.

#include "actors/caf_types.hpp"
#include "actors/effect_dispatch.hpp"
#include "actors/event_log.hpp"
#include "actors/salvage.hpp"
#include "actors/shell_state.hpp"
#include "actors/timer_service.hpp"
#include "base/clock.hpp"
#include "ledger/audit.hpp"
#include "ledger/type_catalog.hpp"
#include "persistence/keys.hpp"

namespace keel::actors {

namespace shell_detail {

using shell_actor = caf::stateful_actor<shell_state>;

// What a message the agent answers later is told until then (and what a
// retry of its id hears).
const json accepted_reply = {{"ok", true}, {"body", {{"accepted", true}}}};

json reply_json(const agent::reply_effect& r) {
  if (r.ok) return {{"ok", true}, {"body", r.body}};
  return {{"ok", false}, {"code", r.code}, {"message", r.message}};
}

// Loads meta, snapshot, ledger tail and inbox. Leaves `exists` false when
// the agent is not on disk (a spawn may create it). Folds with the type's
// latest version (folding does not depend on the version); pin_version()
// then picks the one the agent runs.
status load_state(shell_state& s) {
  auto meta = s.rt->db->get_agent(s.name);
  if (!meta) return meta.error();
  if (!*meta) return status::ok();
  s.exists = true;
  s.view_pending_hibernated = true;
  s.meta = std::move(**meta);
  s.type = s.rt->catalog->for_folding(s.meta.type);
  if (!s.type) return type_not_loaded(s.name, s.meta.type);
  // The directory entry names the newest snapshot: it is written in the
  // same batch as the snapshot, so this is a point lookup, never a scan.
  if (const uint64_t seq = s.meta.snapshot_seq; seq > 0) {
    auto snap = s.rt->db->read_snapshot(s.meta.id, seq, s.name);
    if (!snap) return snap.error();
    if (!*snap)
      return error(code::corruption,
                   "snapshot of " + s.name + " at seq " + std::to_string(seq) + " is missing");
    auto st = snapshot_from_record(**snap, "snapshot of " + s.name, store_blobs(*s.rt->db));
    if (!st) return st.error();
    s.st = std::move(*st);
    if (s.st.last_seq != seq)
      return error(code::corruption, "snapshot of " + s.name + " at seq " + std::to_string(seq) +
                                         " disagrees with its key");
  }
  if (s.meta.clean) {
    // Hibernated cleanly: the snapshot is the whole story; no scans.
    s.next_arrival = s.st.last_arrival + 1;
    return status::ok();
  }
  // Fold the ledger tail in chunks.
  for (;;) {
    auto tail = s.rt->db->read_ledger(s.meta.id, s.st.last_seq + 1, 1024, s.name);
    if (!tail) return tail.error();
    for (auto& [seq, rec] : *tail) {
      if (seq != s.st.last_seq + 1)
        return error(code::corruption,
                     "ledger of " + s.name + " has a gap before seq " + std::to_string(seq));
      std::string what = "ledger of " + s.name + " seq " + std::to_string(seq);
      auto ev = event_from_record(rec, what, store_blobs(*s.rt->db));
      if (!ev) return ev.error();
      agent::apply(*s.type, s.st, *ev);
    }
    if (tail->size() < 1024) break;
  }
  auto inbox = s.rt->db->read_inbox(s.meta.id, s.name);
  if (!inbox) return inbox.error();
  s.next_arrival = s.st.last_arrival + 1;
  for (auto& e : *inbox) {
    s.next_arrival = std::max(s.next_arrival, e.arrival + 1);
    s.inbox.push_back({std::move(e), {}});
  }
  return status::ok();
}

// The version the agent runs decides for it. One this node does not have
// (a spec edited before versions were stored, a stored version that no
// longer loads) is left for the latest, recorded as an upgrade by "keel"
// before anything else, when the latest can take the agent over where it
// is; else the agent stays down with the reason.
status pin_version(shell_state& s) {
  if (const agent::agent_type* t = s.rt->catalog->find(s.meta.type, s.st.version)) {
    s.type = t;
    return status::ok();
  }
  // Read-only or finished agents decide nothing more: the latest shows them.
  if (s.meta.origin == "import" || s.st.status != agent_status::active) return status::ok();
  const std::string why =
      "version " + s.st.version + " of agent type " + s.meta.type + " is not on this node";
  if (status ok = s.type->can_take_over(s.st); !ok)
    return error(code::conflict, "agent " + s.name + " cannot run: " + why +
                                     ", and the latest version cannot take it over (" +
                                     ok.message() + "); register version " + s.st.version +
                                     " again (PUT /v1/types/" + s.meta.type + ") to let it go on");
  s.adopt = agent::upgrade_input{std::string(s.type->version()), "keel", why};
  return status::ok();
}

status load(shell_state& s) {
  KEEL_TRY(load_state(s));
  return s.exists ? pin_version(s) : status::ok();
}

void timer_ops(shell_state& s, const agent::effect& fx, batch& b) {
  if (auto* t = std::get_if<agent::set_timer_effect>(&fx)) {
    b.ops.push_back({family::timers, false,
                     persistence::timer_key(t->due_ms, s.meta.id, t->timer_id),
                     persistence::encode(persistence::timer_entry{s.name, t->payload}, wall_ms())});
    int64_t due = t->due_ms;
    timer_service* ts = s.rt->timers;
    b.done.push_back([ts, due] {
      if (ts) ts->notify(due);
    });
  } else if (auto* c = std::get_if<agent::cancel_timer_effect>(&fx)) {
    b.ops.push_back(
        {family::timers, true, persistence::timer_key(c->due_ms, s.meta.id, c->timer_id), {}});
  }
}

// --- effects -------------------------------------------------------------------

effect_target target_of(const shell_state& s) {
  return {s.rt, s.name, s.meta.id, loop_of(s)};
}

// Whether the agent holds new input and effects: paused, and still active
// (a terminated agent takes nothing, and what it held is refused).
bool holding(const shell_state& s) {
  return s.st.paused && s.st.status == agent_status::active;
}

// Starts a model or tool call whose marker is durable; a paused agent
// holds it until resumed.
void start_effect(shell_state& s, const agent::effect& fx) {
  if (holding(s)) {
    s.held.push_back(fx);
    return;
  }
  if (auto* m = std::get_if<agent::model_call_effect>(&fx)) {
    if (dispatch_model(target_of(s), s.st, *m)) s.running.insert({m->effect, m->attempt});
  } else if (auto* t = std::get_if<agent::tool_call_effect>(&fx)) {
    if (dispatch_tool(target_of(s), *t)) s.running.insert({t->effect, t->attempt});
  }
}

uint32_t crashes_of(const shell_state& s, uint64_t effect) {
  auto it = s.node_crashes.find(effect);
  return it == s.node_crashes.end() ? 0 : it->second;
}

// The crash counts on this agent's effect markers (read only when recovery
// is due: an activation after the node stopped with an effect running).
status load_crash_counts(shell_state& s) {
  auto marks = s.rt->db->scan(family::effects, persistence::agent_prefix(s.meta.id), {}, 1024);
  if (!marks) return marks.error();
  for (const auto& [k, v] : *marks) {
    auto m = persistence::decode_effect_marker(v, "effect marker of " + s.name);
    if (!m) return m.error();
    if (m->node_crashes > 0 && k.size() == 16)
      s.node_crashes[persistence::key_seq(k)] = m->node_crashes;
  }
  return status::ok();
}

// The write-ahead part of an effect: its marker goes into the batch with the
// event that starts it; the call itself is made once the batch is durable.
void effect_ops(shell_state& s, const agent::effect& fx, batch& b, int64_t now) {
  shell_state* sp = &s;
  if (auto* m = std::get_if<agent::model_call_effect>(&fx)) {
    persistence::effect_marker mk{
        s.name, "model", "", m->attempt, "", 0, nullptr, crashes_of(s, m->effect), true};
    b.ops.push_back({family::effects, false, persistence::agent_seq_key(s.meta.id, m->effect),
                     persistence::encode(mk, now)});
    b.done.push_back([sp, fx] { start_effect(*sp, fx); });
  } else if (auto* t = std::get_if<agent::tool_call_effect>(&fx)) {
    const agent::loop_type* loop = loop_of(s);
    const config::tool_spec* ts = loop ? loop->spec().find_tool(t->tool) : nullptr;
    persistence::effect_marker mk{s.name,
                                  ts ? config::to_string(ts->kind) : "unknown",
                                  t->tool,
                                  t->attempt,
                                  ts ? ts->queue : "",
                                  ts ? ts->lease_ms : 0,
                                  t->arguments,
                                  crashes_of(s, t->effect),
                                  ts && ts->idempotent};
    b.ops.push_back({family::effects, false, persistence::agent_seq_key(s.meta.id, t->effect),
                     persistence::encode(mk, now)});
    b.done.push_back([sp, fx] { start_effect(*sp, fx); });
  } else if (auto* e = std::get_if<agent::end_effect>(&fx)) {
    b.ops.push_back({family::effects, true, persistence::agent_seq_key(s.meta.id, e->effect), {}});
    runtime* rt = s.rt;
    b.done.push_back([rt, name = s.name, eff = e->effect] { rt->tasks.remove(name, eff); });
  }
}

// Runs decide() and appends the events (applied to the state) to the batch.
// Returns the decision's reply, if it has one.
std::optional<agent::reply_effect> decide_into(shell_state& s, const agent::input& in, int64_t now,
                                               batch& b) {
  agent::decision d = agent::decide_guarded(*s.type, s.st, in, now);
  if (!d.events.empty() && d.events.front().type == agent::event_type::failed)
    s.rt->metrics.agent_failures.fetch_add(1, std::memory_order_relaxed);
  if (!d.events.empty() && !s.head) {
    auto head = chain_head_at(*s.rt->db, s.meta.id, s.st.last_seq, s.name);
    // An unreadable head leaves the chain broken at the next record, which
    // audit verify reports; refusing the write would stop the agent for a
    // problem only the audit can describe.
    s.head = head ? *head : chain_hash{};
  }
  blob_list blobs;
  for (auto& e : d.events) {
    agent::apply(*s.type, s.st, e);
    b.ops.push_back(
        {family::ledger, false, persistence::agent_seq_key(s.meta.id, s.st.last_seq),
         persistence::encode_record(chained_record(e, s.st.last_seq, *s.head, &blobs))});
    // Logged once durable, like everything else the event causes.
    if (auto record = event_log_record(s.name, s.st.last_seq, e))
      b.done.push_back(std::move(record));
  }
  blob_ops(blobs, b.ops);
  s.rt->metrics.events.fetch_add(d.events.size(), std::memory_order_relaxed);
  std::optional<agent::reply_effect> reply;
  for (auto& fx : d.effects) {
    if (auto* r = std::get_if<agent::reply_effect>(&fx); r && !r->to.empty()) {
      // The answer to an earlier message: its waiters hear it once durable.
      shell_state* sp = &s;
      b.done.push_back([sp, to = r->to, rj = reply_json(*r)] {
        auto it = sp->answer_waiters.find(to);
        if (it == sp->answer_waiters.end()) return;
        for (auto& w : it->second) deliver_reply(w, rj);
        sp->answer_waiters.erase(it);
      });
    } else if (r) {
      reply = std::move(*r);
    } else if (std::holds_alternative<agent::set_timer_effect>(fx) ||
               std::holds_alternative<agent::cancel_timer_effect>(fx))
      timer_ops(s, fx, b);
    else
      effect_ops(s, fx, b, now);
  }
  return reply;
}

// A cancel while paused: the calls held since the pause never started, so
// they end as failed (recorded, like any outcome) and never run; the turn
// then compensates what did run, once resumed.
void fail_held_calls(shell_state& s, int64_t now, batch& b) {
  std::vector<agent::effect> held;
  held.swap(s.held);
  for (const auto& fx : held) {
    agent::effect_result_input in;
    if (const auto* m = std::get_if<agent::model_call_effect>(&fx)) {
      in.effect = m->effect;
      in.attempt = m->attempt;
    } else if (const auto* t = std::get_if<agent::tool_call_effect>(&fx)) {
      in.effect = t->effect;
      in.attempt = t->attempt;
    } else {
      continue;
    }
    in.error = "cancelled while paused: never started";
    decide_into(s, in, now, b);
  }
}

// A message is about to start a turn of an idle agent whose type's latest
// version asks to be followed: the agent moves to it first.
void follow_latest(shell_state& s, int64_t now, batch& b) {
  if (!s.rt->types->any_follows()) return;
  const auto* latest = dynamic_cast<const agent::loop_type*>(s.rt->types->find(s.meta.type));
  if (!latest || !latest->spec().follow_latest || latest == s.type) return;
  if (s.st.status != agent_status::active || s.type->phase(s.st) != "idle" ||
      !latest->can_take_over(s.st))
    return;
  decide_into(s, agent::upgrade_input{std::string(latest->version()), "keel", "follow_latest"}, now,
              b);
  if (s.st.version == latest->version()) s.type = latest;
}

// The processed entry of a message id (or signal dedupe key): it answers
// retries with `reply` until the type's dedupe window has passed.
std::string processed_entry(const shell_state& s, uint64_t arrival, const json& reply,
                            int64_t now) {
  uint64_t window = s.rt->cfg.dedupe_window_ms;
  if (const auto* loop = loop_of(s); loop && loop->spec().dedupe_window_ms)
    window = *loop->spec().dedupe_window_ms;
  const int64_t expires = window == 0 || window > static_cast<uint64_t>(INT64_MAX - now)
                              ? INT64_MAX
                              : now + static_cast<int64_t>(window);
  return persistence::encode(persistence::dedupe_entry{arrival, true, reply, expires}, now);
}

void consume_inbox_item(shell_state& s, inbox_item& item, int64_t now, batch& b) {
  const auto& e = item.entry;
  if (e.kind == "message" && s.meta.origin != "import") follow_latest(s, now, b);
  agent::input in;
  if (e.kind == "signal")
    in = agent::signal_input{e.arrival, e.id, e.body};
  else
    in = agent::message_input{e.arrival, e.id, e.from, e.body};
  auto reply = decide_into(s, in, now, b);
  if (e.kind == "signal" && e.id == "cancel" && holding(s)) fail_held_calls(s, now, b);
  // An agent loop answers a message, and a signal that starts a turn
  // without a reply of its own (retry), when the turn ends.
  const bool later = !reply && loop_of(s);
  const std::string answer_id = e.kind == "message" ? e.id : agent::signal_input_id(e.arrival);
  json rj = reply   ? reply_json(*reply)
            : later ? accepted_reply
                    : json{{"ok", true}, {"body", nullptr}};
  b.ops.push_back({family::inbox, true, persistence::agent_seq_key(s.meta.id, e.arrival), {}});
  // A retry of this id waits for this write, then finds the reply.
  const std::string& key = e.kind == "message" ? e.id : e.dedupe;
  if (!key.empty() && !(e.kind == "message" && is_generated_id(key))) {
    s.writing_ids.insert(key);
    b.ops.push_back({family::dedupe, false, persistence::dedupe_key(s.meta.id, key),
                     processed_entry(s, e.arrival, rj, now)});
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

// The agent comes into being (spawn, import): an id of its own and a
// directory entry to write. False after failing `r` when no id is had.
bool create(shell_state& s, const request_ptr& r, const agent::agent_type* t, agent_status status,
            int64_t now) {
  // A name whose agent a salvage lost is never handed out again: its
  // history is in the report, and whoever knew the agent must not find a
  // stranger under its name.
  auto lost = s.rt->db->get(family::meta, lost_name_key(s.name));
  if (!lost) {
    fail(*r, lost.error());
    return false;
  }
  if (*lost) {
    json why = json::parse(**lost, nullptr, false);
    fail(*r, error(code::conflict, "agent " + s.name + " was lost in the salvage of " +
                                       (why.is_object() ? why.value("salvage", "?") : "?") +
                                       " (report " +
                                       (why.is_object() ? why.value("report", "?") : "?") +
                                       "): its name is not handed out again"));
    return false;
  }
  auto id = s.rt->db->allocate_agent_id();
  if (!id) {
    fail(*r, id.error());
    return false;
  }
  s.exists = true;
  s.type = t;
  if (const auto* loop = loop_of(s); loop && loop->spec().idle_ms)
    s.idle_ns = int64_t{*loop->spec().idle_ms} * 1'000'000;
  s.meta = {};
  s.meta.id = *id;
  s.meta.type = std::string(t->name());
  s.meta.status = status;
  s.meta.created_ms = now;
  return true;
}

void handle_spawn(shell_state& s, const request_ptr& r, int64_t now, batch& b) {
  if (s.exists) {
    fail(*r, error(code::already_exists, "agent " + s.name + " already exists"));
    return;
  }
  const agent::agent_type* t = s.rt->types->find(r->type);
  if (!t) {
    fail(*r, error(code::invalid_argument, "unknown agent type '" + r->type + "'"));
    return;
  }
  // Validate the input before anything is allocated or written.
  auto data = t->initial_data(r->body);
  if (!data) {
    fail(*r, data.error());
    return;
  }
  if (!create(s, r, t, agent_status::active, now)) return;
  s.st = agent::agent_state{};
  s.st.type = s.meta.type;
  b.ops.push_back({family::agents, false, s.name, persistence::encode(s.meta, now)});
  decide_into(s, agent::spawn_input{s.meta.type, r->body, std::string(t->version())}, now, b);
  s.rt->metrics.spawns.fetch_add(1, std::memory_order_relaxed);
  b.reqs.push_back(r);
  b.done.push_back([r, v = make_view(s)] { call_once(r->viewed, v); });
}

// Message or signal. Returns false when the request must wait for the write
// in flight (its id is being written right now).
bool handle_inbound(shell_state& s, const request_ptr& r, int64_t now, batch& b, uint32_t& direct) {
  const bool is_message = r->what == request::kind::message;
  // Messages dedupe by their id; signals only by a key their sender gave.
  const std::string& key = is_message ? r->id : r->dedupe;
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
      const auto& d = **seen;
      call_once(r->accepted, send_ack{r->id, d.arrival, true});
      if (d.processed) {
        deliver_reply(r, d.reply);
      } else {
        for (auto& item : s.inbox)
          if ((is_message ? item.entry.kind == "message" && item.entry.id == key
                          : item.entry.kind == "signal" && item.entry.dedupe == key))
            item.waiters.push_back(r);
      }
      return true;
    }
  }
  // A terminated parent still records that it was forked: its history
  // names every agent that shares it.
  const bool forked = !is_message && r->id == "forked";
  if (s.st.status != agent_status::active && !forked) {
    fail(*r,
         error(code::conflict, "agent " + s.name + " is " + std::string(to_string(s.st.status))));
    return true;
  }
  if (s.meta.origin == "import") {
    fail(*r,
         error(code::conflict, "agent " + s.name + " is an imported ledger: it takes no input"));
    return true;
  }
  // A paused agent holds everything but operator controls in its inbox;
  // once resumed, what it held is consumed before anything newer.
  const bool control = !is_message && agent::passes_pause(r->id);
  const bool hold = holding(s) ? !control : !s.inbox.empty();
  const bool spill = hold || direct >= s.rt->cfg.max_unacked_per_agent;
  if (!is_message) {
    // A signal its type does not take, or one that would only be refused
    // where the agent stands, is refused before anything is recorded. One
    // that waits behind other input is checked when it is decided.
    status ok = agent::check_signal_name(*s.type, r->id, s.name);
    if (ok && !spill)
      ok = agent::check_signal_now(*s.type, s.st, agent::signal_input{0, r->id, r->body}, s.name);
    if (!ok) {
      s.rt->metrics.signals_refused.fetch_add(1, std::memory_order_relaxed);
      fail(*r, ok);
      return true;
    }
  }
  uint64_t arrival = s.next_arrival++;
  std::string id = r->id;
  // A message without an id gets one for the reply, but no dedupe entry:
  // nobody can retry it, and the reserved prefix keeps it from colliding
  // with a client's id.
  const bool dedupe = !key.empty();
  if (is_message && id.empty()) id = std::string(generated_id_prefix) + std::to_string(arrival);
  const std::string dkey = key;
  if (dedupe) s.writing_ids.insert(dkey);
  (is_message ? s.rt->metrics.messages : s.rt->metrics.signals)
      .fetch_add(1, std::memory_order_relaxed);
  send_ack ack{is_message ? id : r->id, arrival, false};
  int64_t received = r->received_ns;
  runtime* rt = s.rt;
  b.reqs.push_back(r);
  if (spill) {
    // Spill: durable in the inbox now, consumed by the next write.
    persistence::inbox_entry e{s.name,  arrival, is_message ? "message" : "signal", id,
                               r->from, r->body, is_message ? std::string() : dkey};
    b.ops.push_back({family::inbox, false, persistence::agent_seq_key(s.meta.id, arrival),
                     persistence::encode(e, now)});
    if (dedupe)
      b.ops.push_back(
          {family::dedupe, false, persistence::dedupe_key(s.meta.id, dkey),
           persistence::encode(persistence::dedupe_entry{arrival, false, nullptr}, now)});
    s.inbox.push_back({std::move(e), {}});
    if (r->replied) s.inbox.back().waiters.push_back(r);
    s.rt->metrics.inbox_spills.fetch_add(1, std::memory_order_relaxed);
    b.done.push_back([r, ack, received, rt] {
      rt->metrics.accept_ns.record(static_cast<uint64_t>(mono_ns() - received));
      call_once(r->accepted, ack);
    });
    return true;
  }
  ++direct;
  if (is_message) follow_latest(s, now, b);
  agent::input in;
  if (is_message)
    in = agent::message_input{arrival, id, r->from, r->body};
  else
    in = agent::signal_input{arrival, r->id, r->body};
  auto reply = decide_into(s, in, now, b);
  if (!is_message && r->id == "cancel" && holding(s)) fail_held_calls(s, now, b);
  const bool later = !reply && loop_of(s);
  json rj = reply   ? reply_json(*reply)
            : later ? accepted_reply
                    : json{{"ok", true}, {"body", nullptr}};
  if (later && r->replied)
    s.answer_waiters[is_message ? id : agent::signal_input_id(arrival)].push_back(r);
  if (dedupe)
    b.ops.push_back({family::dedupe, false, persistence::dedupe_key(s.meta.id, dkey),
                     processed_entry(s, arrival, rj, now)});
  b.done.push_back([r, ack, rj, received, rt, later] {
    rt->metrics.accept_ns.record(static_cast<uint64_t>(mono_ns() - received));
    call_once(r->accepted, ack);
    if (!later) deliver_reply(r, rj);
  });
  return true;
}

void handle_terminate(shell_state& s, const request_ptr& r, int64_t now, batch& b) {
  if (s.meta.origin == "import") {
    fail(*r, error(code::conflict, "agent " + s.name + " is an imported ledger: it is read-only"));
    return;
  }
  auto reply = decide_into(s, agent::terminate_input{r->from}, now, b);
  if (reply && !reply->ok) {
    fail(*r, error(code::conflict, "agent " + s.name + ": " + reply->message));
    return;
  }
  s.meta.status = s.st.status;
  b.ops.push_back({family::agents, false, s.name, persistence::encode(s.meta, now)});
  b.reqs.push_back(r);
  b.done.push_back([r, v = make_view(s)] { call_once(r->viewed, v); });
}

// Moves the agent to another version of its type between two steps:
// r->id names it (a hash, a unique prefix of one, or "" for the latest).
void handle_upgrade(shell_state& s, const request_ptr& r, int64_t now, batch& b) {
  if (s.meta.origin == "import") {
    fail(*r, error(code::conflict, "agent " + s.name + " is an imported ledger: it is read-only"));
    return;
  }
  const std::string& type = s.meta.type;
  auto resolved = s.rt->types->resolve(type, r->id);
  if (!resolved) {
    fail(*r, resolved.error());
    return;
  }
  const std::string& to = *resolved;
  const agent::agent_type* t = s.rt->catalog->find(type, to);
  if (!t) {
    fail(*r, error(code::not_found, "version " + to + " of agent type " + type + " does not load"));
    return;
  }
  if (status ok = t->can_take_over(s.st); !ok) {
    fail(*r, error(code::conflict,
                   "agent " + s.name + " cannot move to version " + to + ": " + ok.message()));
    return;
  }
  auto reply = decide_into(s, agent::upgrade_input{to, r->from, ""}, now, b);
  if (!reply || !reply->ok) {
    fail(*r, error(code::conflict,
                   "agent " + s.name + ": " + (reply ? reply->message : "nothing to upgrade")));
    return;
  }
  s.type = t;
  b.reqs.push_back(r);
  b.done.push_back([r, body = reply->body] { call_once(r->answered, result<json>(body)); });
}

// Handles one request; false when it must wait for the write in flight.
bool handle(shell_state& s, const request_ptr& r, int64_t now, batch& b, uint32_t& direct) {
  using k = request::kind;
  // Only the request that woke the agent reports it as having been dormant.
  if (r->what != k::get && r->what != k::terminate) s.view_pending_hibernated = false;
  // Messages spilled to the inbox by this pump are consumed by the next one;
  // anything else queued behind them (a terminate, a timer, a read) must see
  // them first, so it waits too.
  // A paused agent's inbox waits for its resume, not the requests behind it
  // (effect results finish the step in flight; reads answer).
  if (!s.inbox.empty() && !holding(s) && r->what != k::message && r->what != k::signal)
    return false;
  if (r->what == k::spawn) {
    handle_spawn(s, r, now, b);
    return true;
  }
  if (r->what == k::import) {
    handle_import(s, r, now, b);
    return true;
  }
  if (!s.exists) {
    if (r->what != k::timer && r->what != k::wake)
      fail(*r, error(code::not_found, "agent " + s.name + " does not exist"));
    return true;
  }
  switch (r->what) {
    case k::message:
    case k::signal:
      return handle_inbound(s, r, now, b, direct);
    case k::query: {
      s.rt->metrics.queries.fetch_add(1, std::memory_order_relaxed);
      result<json> answer = error(code::internal, "query failed");
      try {
        answer = s.type->query(s.st, r->body);
      } catch (const std::exception& e) {
        // A type's bug on odd input must not kill the agent.
        answer = error(code::invalid_argument, std::string("query failed: ") + e.what());
      }
      b.done.push_back([r, answer] { call_once(r->answered, answer); });
      return true;
    }
    case k::get:
      b.done.push_back([r, v = make_view(s)] { call_once(r->viewed, v); });
      return true;
    case k::terminate:
      handle_terminate(s, r, now, b);
      return true;
    case k::upgrade:
      handle_upgrade(s, r, now, b);
      return true;
    case k::timer:
      if (holding(s)) {
        // Stays on disk; fed again on resume (and offered again by the
        // timer service meanwhile).
        s.timers_held = true;
        return true;
      }
      s.rt->metrics.timers_fired.fetch_add(1, std::memory_order_relaxed);
      decide_into(s, agent::timer_input{r->timer_id}, now, b);
      return true;
    case k::effect_result: {
      const json& body = r->body;
      agent::effect_result_input in{
          body.value("effect", uint64_t{0}), body.value("attempt", uint32_t{1}),
          body.value("ok", false),           body.value("result", json()),
          body.value("error", ""),           body.value("retryable", false),
          body.value("maybe_applied", false)};
      s.running.erase({in.effect, in.attempt});
      auto reply = decide_into(s, in, now, b);
      b.reqs.push_back(r);
      b.done.push_back([r, reply] {
        if (reply && !reply->ok)
          call_once(r->answered, result<json>(error(code::conflict, reply->message)));
        else
          call_once(r->answered, result<json>(json{{"recorded", true}}));
      });
      return true;
    }
    case k::compact:
      handle_compact(s, r, now, b);
      return true;
    case k::wake:
    case k::spawn:
    case k::import:
      return true;
  }
  return true;
}

void leave(shell_actor* self);

void on_durable(shell_actor* self, const status& result);

void submit(shell_actor* self, batch b) {
  auto& s = self->state;
  s.writing = true;
  s.in_flight = std::move(b);
  caf::actor me = caf::actor_cast<caf::actor>(self);
  persistence::write_set ops = std::move(s.in_flight.ops);
  s.rt->journal->submit(std::move(ops),
                        [me](const status& st) { caf::anon_send(me, durable_atom::value, st); });
}

// Decides everything pending and writes it as one write set.
void pump(shell_actor* self) {
  auto& s = self->state;
  if (s.writing || s.leaving) return;
  if (!s.broken.is_ok()) {
    for (auto& r : s.queue) fail(*r, s.broken);
    s.queue.clear();
    leave(self);
    return;
  }
  batch b;
  int64_t now = wall_ms();
  if (s.adopt) {
    // The version it ran is gone: the latest takes over, recorded first.
    decide_into(s, *s.adopt, now, b);
    s.adopt.reset();
  }
  if (s.recover_due) {
    // Effects the previous incarnation left running: retried or in doubt,
    // before anything else reaches the agent.
    s.recover_due = false;
    s.rt->metrics.recoveries.fetch_add(1, std::memory_order_relaxed);
    decide_into(s, agent::recover_input{s.node_crashes, s.rt->cfg.max_effect_crashes}, now, b);
  }
  if (s.exists && !s.inbox.empty()) {
    std::vector<inbox_item> items;
    items.swap(s.inbox);
    for (auto& item : items) {
      // Paused: only operator controls are consumed; the rest keeps its
      // place, and once one item is held so is every later one (a resume
      // among them releases them all in the next pump, in order).
      const bool control = item.entry.kind == "signal" && agent::passes_pause(item.entry.id);
      if ((holding(s) || !s.inbox.empty()) && !control)
        s.inbox.push_back(std::move(item));
      else
        consume_inbox_item(s, item, now, b);
    }
  }
  if (s.timers_held && !holding(s)) {
    s.timers_held = false;
    std::vector<uint64_t> due;
    for (const auto& [id, t] : s.st.timers)
      if (t.due_ms <= now) due.push_back(id);
    for (uint64_t id : due) decide_into(s, agent::timer_input{id}, now, b);
  }
  // Items spilled by this pump land in s.inbox and are consumed by the next.
  uint32_t direct = 0;
  std::size_t handled = 0;
  while (handled < s.queue.size() && handle(s, s.queue[handled], now, b, direct)) ++handled;
  s.queue.erase(s.queue.begin(), s.queue.begin() + static_cast<std::ptrdiff_t>(handled));
  // The first write after a clean activation makes the directory entry say
  // so, in the same batch: from then on activation must scan the tail.
  if (s.meta.clean) {
    for (const auto& op : b.ops)
      if (op.cf == family::ledger || op.cf == family::inbox) {
        s.meta.clean = false;
        b.ops.push_back({family::agents, false, s.name, persistence::encode(s.meta, now)});
        break;
      }
  }
  sync_meta(s, b, now);
  tell_parked(s, b);
  if (b.ops.empty()) {
    s.writing_ids.clear();
    for (auto& f : b.done) f();
    if (!s.exists && s.queue.empty()) leave(self);
    return;
  }
  submit(self, std::move(b));
}

void on_durable(shell_actor* self, const status& result) {
  auto& s = self->state;
  s.writing = false;
  s.writing_ids.clear();
  batch b = std::move(s.in_flight);
  s.in_flight = {};
  if (!result) {
    // Memory is now ahead of disk: answer with the error and leave, so the
    // next activation reloads what is really durable.
    for (auto& r : b.reqs) fail(*r, result);
    s.broken = result;
    pump(self);
    return;
  }
  for (auto& f : b.done) f();
  if (!holding(s) && !s.held.empty()) {
    std::vector<agent::effect> held;
    held.swap(s.held);
    // A terminated or failed agent abandoned them (their markers are gone).
    if (s.st.status == agent_status::active)
      for (const auto& fx : held) start_effect(s, fx);
  }
  pump(self);
}

void leave(shell_actor* self) {
  auto& s = self->state;
  if (s.leaving) return;
  s.leaving = true;
  // The agent goes to disk while a turn waits (an approval, a worker): those
  // still waiting for its answer hear where it stands instead.
  if (!s.answer_waiters.empty()) {
    const json waiting = waiting_reply(s);
    for (auto& [id, ws] : s.answer_waiters)
      for (auto& w : ws) deliver_reply(w, waiting);
    s.answer_waiters.clear();
  }
  self->request(s.supervisor, caf::infinite, hibernate_atom::value, s.name)
      .then([self](bool) { self->quit(); }, [self](caf::error&) { self->quit(); });
}

void on_idle(shell_actor* self) {
  auto& s = self->state;
  // A paused agent may sleep with its inbox held, but not with effects it
  // holds in memory (they would be recovered as after a crash).
  if (s.writing || s.leaving || !s.queue.empty() || (!s.inbox.empty() && !holding(s)) ||
      !s.running.empty() || !s.held.empty())
    return;
  // An entry written before phases were kept gets its listing now.
  persistence::agent_meta meta = s.meta;
  const bool relist = s.exists && s.broken.is_ok() && refresh_listing(s, meta);
  if (!s.exists || !s.broken.is_ok() ||
      (s.meta.clean && s.st.last_seq == s.meta.snapshot_seq && !relist)) {
    leave(self);
    return;
  }
  // Snapshot (if the ledger grew) and mark the directory entry clean in one
  // write, so the next activation is two point lookups.
  int64_t now = wall_ms();
  batch b;
  const uint64_t seq = s.st.last_seq;
  if (seq > s.meta.snapshot_seq) {
    blob_list blobs;
    b.ops.push_back({family::snapshots, false, persistence::agent_seq_key(s.meta.id, seq),
                     persistence::encode_record(snapshot_record(s.st, now, &blobs))});
    // The conversation's long texts came with events whose blobs are stored
    // already: writing them again on every hibernation would rewrite the
    // whole conversation each time.
    std::erase_if(blobs, [&s](const auto& b) { return s.rt->db->has_blob(b.first); });
    blob_ops(blobs, b.ops);
    // The snapshot a compaction left is the base of replay and audit.
    if (s.meta.snapshot_seq > 0 && s.meta.snapshot_seq != s.meta.compacted_seq)
      b.ops.push_back({family::snapshots,
                       true,
                       persistence::agent_seq_key(s.meta.id, s.meta.snapshot_seq),
                       {}});
  }
  meta.snapshot_seq = seq;
  // A paused agent may sleep with messages held in its inbox: then the
  // next activation must read them.
  meta.clean = s.inbox.empty();
  b.ops.push_back({family::agents, false, s.name, persistence::encode(meta, now)});
  const bool wrote_snapshot = seq > s.meta.snapshot_seq;
  b.done.push_back([self, meta, wrote_snapshot, relist] {
    auto& st = self->state;
    st.meta = meta;
    if (relist) count_as(st, meta);
    if (wrote_snapshot) st.rt->metrics.snapshots.fetch_add(1, std::memory_order_relaxed);
    if (st.queue.empty() && (st.inbox.empty() || holding(st))) leave(self);
  });
  submit(self, std::move(b));
}

// The supervisor's sweep found us quiet for idle_ms (or thinks so: check).
void on_idle_check(shell_actor* self) {
  auto& s = self->state;
  if (s.leaving) return;
  if (mono_ns() - s.last_active->load(std::memory_order_relaxed) >= s.idle_ns) on_idle(self);
}

caf::behavior shell(shell_actor* self, runtime* rt, caf::actor supervisor, std::string name,
                    std::shared_ptr<std::atomic<int64_t>> last_active) {
  auto& s = self->state;
  s.rt = rt;
  s.last_active = std::move(last_active);
  s.supervisor = std::move(supervisor);
  s.name = std::move(name);
  int64_t t0 = mono_ns();
  s.broken = load(s);
  rt->metrics.activation_ns.record(static_cast<uint64_t>(mono_ns() - t0));
  // The census counted the entry already (at start, or when it was written).
  if (s.exists) {
    s.counted = census_of(s.meta);
    s.live.set(&rt->census, s.meta.status == agent_status::active);
  }
  s.idle_ns = int64_t{rt->cfg.idle_ms} * 1'000'000;
  if (const auto* loop = loop_of(s); loop && loop->spec().idle_ms)
    s.idle_ns = int64_t{*loop->spec().idle_ms} * 1'000'000;
  if (s.exists && s.broken.is_ok() && s.meta.origin != "import" && s.type->needs_recovery(s.st)) {
    s.recover_due = true;
    s.broken = load_crash_counts(s);
  }
  if (!s.inbox.empty() || s.recover_due || s.adopt) pump(self);
  s.last_active->store(mono_ns(), std::memory_order_relaxed);
  return {
      [self](request_ptr& r) {
        auto& s = self->state;
        s.last_active->store(mono_ns(), std::memory_order_relaxed);
        if (s.leaving) {
          // The supervisor has (or will have) forgotten us: route it anew.
          self->send(s.supervisor, std::move(r));
          return;
        }
        s.queue.push_back(std::move(r));
        pump(self);
      },
      [self](durable_atom, const status& result) {
        self->state.last_active->store(mono_ns(), std::memory_order_relaxed);
        on_durable(self, result);
      },
      [self](idle_atom) { on_idle_check(self); },
  };
}

}  // namespace shell_detail

caf::actor spawn_agent_shell(caf::local_actor* parent, runtime* rt, caf::actor supervisor,
                             std::string name, std::shared_ptr<std::atomic<int64_t>> last_active) {
  return parent->spawn(shell_detail::shell, rt, std::move(supervisor), std::move(name),
                       std::move(last_active));
}

}  // namespace keel::actors
