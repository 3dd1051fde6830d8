// The agent shell's shared steps (CAF-free): loading an agent into memory
// and pinning the version it runs, deciding an input into a batch (events,
// timers, effect markers), starting effects once durable, and giving a new
// agent an id of its own.

#include "actors/effect_dispatch.hpp"
#include "actors/event_log.hpp"
#include "actors/salvage.hpp"
#include "actors/shell_state.hpp"
#include "actors/timer_service.hpp"
#include "base/clock.hpp"
#include "ledger/audit.hpp"
#include "ledger/type_catalog.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors::shell_detail {

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
  if (s.meta.origin == persistence::agent_origin::imported || s.st.status != agent_status::active)
    return status::ok();
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
    ledger::batch_builder(b.ops).put_timer(s.meta.id, t->timer_id, t->due_ms, {s.name, t->payload},
                                           wall_ms());
    int64_t due = t->due_ms;
    timer_service* ts = s.rt->timers;
    b.done.push_back([ts, due] {
      if (ts) ts->notify(due);
    });
  } else if (auto* c = std::get_if<agent::cancel_timer_effect>(&fx)) {
    ledger::batch_builder(b.ops).erase_timer(s.meta.id, c->timer_id, c->due_ms);
  }
}

// --- effects -------------------------------------------------------------------

effect_target target_of(const shell_state& s) {
  return {s.rt, s.name, s.meta.id, loop_of(s), s.group, s.term};
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

namespace {

// What an effect marker records for a tool of this kind: the same set, by
// the same strings on disk (the switch keeps the two in step).
persistence::effect_kind marker_kind(config::tool_kind k) {
  using persistence::effect_kind;
  switch (k) {
    case config::tool_kind::http:
      return effect_kind::http;
    case config::tool_kind::exec:
      return effect_kind::exec;
    case config::tool_kind::worker:
      return effect_kind::worker;
    case config::tool_kind::send_message:
      return effect_kind::send_message;
    case config::tool_kind::spawn_agent:
      return effect_kind::spawn_agent;
    case config::tool_kind::sleep:
      return effect_kind::sleep;
    case config::tool_kind::ask_human:
      return effect_kind::ask_human;
  }
  return effect_kind::unknown;
}

}  // namespace

// The write-ahead part of an effect: its marker goes into the batch with the
// event that starts it; the call itself is made once the batch is durable.
void effect_ops(shell_state& s, const agent::effect& fx, batch& b, int64_t now) {
  shell_state* sp = &s;
  if (auto* m = std::get_if<agent::model_call_effect>(&fx)) {
    persistence::effect_marker mk{s.name,  persistence::effect_kind::model, "",  m->attempt, "", 0,
                                  nullptr, crashes_of(s, m->effect),        true};
    ledger::batch_builder(b.ops).start_effect(s.meta.id, m->effect, mk, now);
    b.done.push_back([sp, fx] { start_effect(*sp, fx); });
  } else if (auto* t = std::get_if<agent::tool_call_effect>(&fx)) {
    const agent::loop_type* loop = loop_of(s);
    const config::tool_spec* ts = loop ? loop->spec().find_tool(t->tool) : nullptr;
    persistence::effect_marker mk{s.name,
                                  ts ? marker_kind(ts->kind) : persistence::effect_kind::unknown,
                                  t->tool,
                                  t->attempt,
                                  ts ? ts->queue : "",
                                  ts ? ts->lease_ms : 0,
                                  t->arguments,
                                  crashes_of(s, t->effect),
                                  ts && ts->idempotent};
    ledger::batch_builder(b.ops).start_effect(s.meta.id, t->effect, mk, now);
    b.done.push_back([sp, fx] { start_effect(*sp, fx); });
  } else if (auto* e = std::get_if<agent::end_effect>(&fx)) {
    ledger::batch_builder(b.ops).end_effect(s.meta.id, e->effect);
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
  ledger::batch_builder w(b.ops);
  for (auto& e : d.events) {
    agent::apply(*s.type, s.st, e);
    w.append_event(s.meta.id, s.st.last_seq, e, *s.head);
    // Logged once durable, like everything else the event causes.
    if (auto record = event_log_record(s.name, s.st.last_seq, e))
      b.done.push_back(std::move(record));
  }
  w.put_spilled_blobs();
  s.rt->metrics.events.fetch_add(d.events.size(), std::memory_order_relaxed);
  std::optional<agent::reply_effect> reply;
  for (auto& fx : d.effects) {
    if (auto* r = std::get_if<agent::reply_effect>(&fx); r && !r->to.empty()) {
      // The answer to an earlier message: its waiters hear it once durable.
      shell_state* sp = &s;
      std::string to = r->to;
      b.done.push_back([sp, to = std::move(to), rj = reply_of(std::move(*r))] {
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
  // Replicated, ids are the group's: every replica applies the same keys,
  // and one store holds several groups.
  auto id = s.rt->repl ? s.rt->repl->allocate_agent_id(s.group) : s.rt->db->allocate_agent_id();
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

}  // namespace keel::actors::shell_detail
