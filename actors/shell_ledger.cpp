// The shell's whole-ledger requests: creating an agent from an exported
// ledger (an import, or a fork's copy of its parent's prefix) and applying
// a compaction. Both run on the agent's actor, which owns its directory
// entry, like every other change to the agent.

#include "actors/shell_state.hpp"
#include "ledger/audit.hpp"
#include "ledger/type_catalog.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors::shell_detail {

// Creates the agent from an exported ledger (an import, or a fork's copy of
// its parent's prefix): the records are encoded again, so the chain must
// give back the exported hashes. A fork then goes on live: the replacement
// answers the effect its state waits for, or it recovers as after a crash.
void handle_import(shell_state& s, const request_ptr& r, const import_call& c, int64_t now,
                   batch& b) {
  if (s.exists) {
    fail(*r, error(code::already_exists, "agent " + s.name + " already exists"));
    return;
  }
  const ledger_import& li = *c.ledger;
  const std::string type_name = li.events.front().ev.data.value("type", "");
  const agent::agent_type* t = s.rt->types->find(type_name);
  if (!t) {
    fail(*r, error(code::invalid_argument, "unknown agent type '" + type_name + "'"));
    return;
  }
  agent::agent_state st;
  chain_hash head{};
  blob_list blobs;
  std::vector<std::string> values;
  values.reserve(li.events.size());
  for (std::size_t i = 0; i < li.events.size(); ++i) {
    const auto& re = li.events[i];
    if (!li.prevs[i].empty() && li.prevs[i] != to_hex(head)) {
      fail(*r, error(code::invalid_argument,
                     "the ledger's seq " + std::to_string(re.seq) +
                         " does not link to the event before it: the export was altered"));
      return;
    }
    values.push_back(persistence::encode_record(chained_record(re.ev, re.seq, head, &blobs)));
    if (!li.hashes[i].empty() && li.hashes[i] != to_hex(head)) {
      fail(*r,
           error(code::invalid_argument, "the ledger's seq " + std::to_string(re.seq) +
                                             " does not match its hash: the export was altered"));
      return;
    }
    try {
      agent::apply(*t, st, re.ev);
    } catch (const std::exception& e) {
      // Crafted events must not take the actor down.
      fail(*r, error(code::invalid_argument,
                     "the ledger's seq " + std::to_string(re.seq) + " does not fold: " + e.what()));
      return;
    }
  }
  // A fork goes on with the version its history ran at the fork point.
  const agent::agent_type* run = li.origin == persistence::agent_origin::forked
                                     ? s.rt->catalog->find(type_name, st.version)
                                     : t;
  if (!run) {
    fail(*r, error(code::conflict, "version " + st.version + " of agent type " + type_name +
                                       ", which the history runs at its last event, is not on "
                                       "this node (PUT /v1/types/" +
                                       type_name + ")"));
    return;
  }
  std::optional<agent::effect_result_input> answer;
  if (li.replacement) {
    auto in = agent::override_input(*run, st, *li.replaced, *li.replacement);
    if (!in) {
      fail(*r, in.error());
      return;
    }
    answer = std::move(*in);
  }
  if (!create(s, r, t, st.status, now)) return;
  s.type = run;
  s.meta.origin = li.origin;
  s.meta.unverified = li.unverified;
  s.meta.parent = li.parent;
  s.meta.fork_seq = li.fork_seq;
  s.st = std::move(st);
  s.head = head;
  s.next_arrival = s.st.last_arrival + 1;
  ledger::batch_builder w(b.ops);
  for (std::size_t i = 0; i < values.size(); ++i)
    w.put_event_record(s.meta.id, li.events[i].seq, std::move(values[i]));
  // A fork on its parent's node shares the parent's blobs.
  std::erase_if(blobs, [&s](const auto& bl) { return s.rt->db->has_blob(bl.first); });
  w.put_blobs(blobs);
  if (li.origin == persistence::agent_origin::forked) {
    // The prefix's pending timers are the fork's too.
    for (const auto& [tid, tm] : s.st.timers)
      timer_ops(s, agent::set_timer_effect{tid, tm.due_ms, tm.payload}, b);
    // The fork's own history starts here: where it came from, and the time
    // it did not exist, which no budget counts.
    const int64_t last = li.events.back().ev.time_ms;
    decide_into(s, agent::fork_input{li.parent, li.fork_seq, li.by, now - last}, now, b);
    if (answer)
      decide_into(s, *answer, now, b);
    else if (s.type->needs_recovery(s.st))
      s.recover_due = true;
  }
  s.meta.status = s.st.status;
  w.put_directory_entry(s.name, s.meta, now);
  b.reqs.push_back(r);
  b.done.push_back([r, v = make_view(s)] { call_once(call_of<import_call>(r).viewed, v); });
}

// Applies a compaction prepared by ledger_ops::compact: the snapshot at
// plan.through, the archived records deleted, the anchor in the directory
// entry. The newest snapshot stays the one activation reads.
void handle_compact(shell_state& s, const request_ptr& r, const compact_call& c, int64_t now,
                    batch& b) {
  const compaction_plan& p = *c.plan;
  if (p.from != s.meta.compacted_seq + 1 || p.through >= s.st.last_seq) {
    fail(*r, error(code::conflict, "agent " + s.name +
                                       " changed while its compaction was "
                                       "prepared; try again"));
    return;
  }
  const uint64_t old_compacted = s.meta.compacted_seq;
  ledger::batch_builder w(b.ops);
  w.put_snapshot_record(s.meta.id, p.through, p.snapshot);
  w.put_blobs(p.blobs);
  for (uint64_t seq = p.from; seq <= p.through; ++seq) w.erase_event(s.meta.id, seq);
  if (p.through > s.meta.snapshot_seq) {
    if (s.meta.snapshot_seq > 0 && s.meta.snapshot_seq != old_compacted)
      w.erase_snapshot(s.meta.id, s.meta.snapshot_seq);
    s.meta.snapshot_seq = p.through;
  }
  if (old_compacted > 0 && old_compacted != s.meta.snapshot_seq)
    w.erase_snapshot(s.meta.id, old_compacted);
  s.meta.compacted_seq = p.through;
  s.meta.compacted_head = p.anchor;
  w.put_directory_entry(s.name, s.meta, now);
  b.reqs.push_back(r);
  b.done.push_back([r] {
    call_once(call_of<compact_call>(r).answered, result<json>(json{{"compacted", true}}));
  });
}

}  // namespace keel::actors::shell_detail
