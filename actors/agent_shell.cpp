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
//
// This file holds the actor (pump, durable acknowledgement, hibernation);
// the request handlers and the steps they share are CAF-free:
// shell_requests.cpp, shell_inbound.cpp, shell_steps.cpp, shell_ledger.cpp,
// shell_standing.cpp.

#include "actors/caf_types.hpp"
#include "actors/shell_state.hpp"
#include "base/clock.hpp"
#include "ledger/audit.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors {

namespace shell_detail {

using shell_actor = caf::stateful_actor<shell_state>;

void leave(shell_actor* self);

void on_durable(shell_actor* self, const status& result);

void submit(shell_actor* self, batch b) {
  auto& s = self->state;
  s.writing = true;
  s.in_flight = std::move(b);
  caf::actor me = caf::actor_cast<caf::actor>(self);
  persistence::write_set ops = std::move(s.in_flight.ops);
  auto done = [me](const status& st) { caf::anon_send(me, durable_atom::value, st); };
  if (s.rt->repl)
    s.rt->repl->propose(s.group, s.term, std::move(ops), std::move(done));
  else
    s.rt->journal->submit(std::move(ops), std::move(done));
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
      const bool control =
          item.entry.kind == persistence::inbox_kind::signal && agent::passes_pause(item.entry.id);
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
      if (ledger::batch_builder::is_ledger_or_inbox(op)) {
        s.meta.clean = false;
        ledger::batch_builder(b.ops).put_directory_entry(s.name, s.meta, now);
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
    const agent_reply waiting = waiting_reply(s);
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
    ledger::batch_builder w(b.ops);
    w.put_snapshot(s.meta.id, seq, s.st, now);
    // The conversation's long texts came with events whose blobs are stored
    // already: writing them again on every hibernation would rewrite the
    // whole conversation each time.
    w.put_spilled_blobs([&s](std::string_view key) { return s.rt->db->has_blob(key); });
    // The snapshot a compaction left is the base of replay and audit.
    if (s.meta.snapshot_seq > 0 && s.meta.snapshot_seq != s.meta.compacted_seq)
      w.erase_snapshot(s.meta.id, s.meta.snapshot_seq);
  }
  meta.snapshot_seq = seq;
  // A paused agent may sleep with messages held in its inbox: then the
  // next activation must read them.
  meta.clean = s.inbox.empty();
  ledger::batch_builder(b.ops).put_directory_entry(s.name, meta, now);
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

// Replicated: only the group's leader runs its agents, and what it loads is
// current only once its term's first entry is applied (leading() says so).
status lead(shell_state& s) {
  if (!s.rt->repl) return status::ok();
  s.group = s.rt->repl->group_of(s.name);
  auto term = s.rt->repl->leading(s.group);
  if (!term)
    return error(code::unavailable, "this node does not lead the group of " + s.name + " (group " +
                                        std::to_string(s.group) + ")");
  s.term = *term;
  return status::ok();
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
  s.broken = lead(s);
  if (s.broken.is_ok()) s.broken = load(s);
  rt->metrics.activation_ns.record(static_cast<uint64_t>(mono_ns() - t0));
  // The census counted the entry already (at start, or when it was written).
  if (s.exists) {
    s.counted = census_of(s.meta);
    s.live.set(&rt->census, s.meta.status == agent_status::active);
  }
  s.idle_ns = int64_t{rt->cfg.idle_ms} * 1'000'000;
  if (const auto* loop = loop_of(s); loop && loop->spec().idle_ms)
    s.idle_ns = int64_t{*loop->spec().idle_ms} * 1'000'000;
  if (s.exists && s.broken.is_ok() && s.meta.origin != persistence::agent_origin::imported &&
      s.type->needs_recovery(s.st)) {
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
