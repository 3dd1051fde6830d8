// Where an agent stands, as the agent shell tells it: the view requests
// get, the listing fields of its directory entry (written with the batches
// that change them; the census follows), and what those waiting for a
// turn's answer hear while it waits for a person. CAF-free.

#include <algorithm>

#include "actors/shell_state.hpp"
#include "ledger/writer.hpp"

namespace keel::actors::shell_detail {

void deliver_reply(const request_ptr& r, const agent_reply& reply) {
  if (inbound_calls* calls = inbound_of(*r)) call_once(calls->replied, reply);
}

agent_view make_view(shell_state& s) {
  agent_view v;
  v.name = s.name;
  v.type = s.meta.type;
  v.status = std::string(to_string(s.st.status));
  v.last_seq = s.st.last_seq;
  v.hibernated = s.view_pending_hibernated;
  s.view_pending_hibernated = false;
  v.created_ms = s.meta.created_ms;
  if (s.type) {
    v.state = s.type->view(s.st);
    v.phase = agent::listed_phase(*s.type, s.st);
  } else {
    v.state = s.st.data;
  }
  v.paused = s.st.paused;
  v.origin = s.meta.origin;
  v.parent = s.meta.parent;
  v.fork_seq = s.meta.fork_seq;
  for (const auto& f : s.st.forks) v.forks.push_back({{"name", f.name}, {"at", f.at}});
  v.compacted_seq = s.meta.compacted_seq;
  v.version = s.st.version;
  return v;
}

bool refresh_listing(const shell_state& s, persistence::agent_meta& m) {
  const std::string phase = agent::listed_phase(*s.type, s.st);
  if (m.phase == phase && m.paused == s.st.paused && m.status == s.st.status) return false;
  m.phase = phase;
  m.paused = s.st.paused;
  m.status = s.st.status;
  return true;
}

void count_as(shell_state& s, const persistence::agent_meta& m) {
  census_entry e = census_of(m);
  s.rt->census.move(s.counted, e);
  s.counted = std::move(e);
  s.live.set(&s.rt->census, m.status == agent_status::active);
}

// The directory entry follows where the agent stands: a batch that changes
// its listing fields (a new phase, a pause, the agent's end) or writes the
// entry anyway carries it once, as it is after the batch; the census moves
// once that is durable. A batch that writes nothing writes no entry either
// (a read never writes).
void sync_meta(shell_state& s, batch& b, int64_t now) {
  if (!s.exists || !s.type || b.ops.empty()) return;
  const auto is_entry = [&s](const write_op& op) {
    return ledger::batch_builder::is_directory_entry(op, s.name);
  };
  const bool in_batch = std::any_of(b.ops.begin(), b.ops.end(), is_entry);
  if (!refresh_listing(s, s.meta) && !in_batch) return;
  std::erase_if(b.ops, is_entry);
  ledger::batch_builder(b.ops).put_directory_entry(s.name, s.meta, now);
  shell_state* sp = &s;
  b.done.push_back([sp, m = s.meta] { count_as(*sp, m); });
}

// What those waiting for a turn's answer hear while it waits instead:
// {"status": "waiting", "phase", "wait"?} (the view's wait: what for).
agent_reply waiting_reply(const shell_state& s) {
  json body = {{"status", "waiting"}, {"phase", s.type ? s.type->phase(s.st) : ""}};
  if (s.type) {
    const json v = s.type->view(s.st);
    if (v.is_object() && v.contains("turn") && v["turn"].is_object() && v["turn"].contains("wait"))
      body["wait"] = v["turn"]["wait"];
  }
  if (s.st.paused) body["paused"] = true;
  return agent_reply{true, std::move(body), {}, {}};
}

// A turn that now waits for a human (an approval, an answer, a doubt to
// resolve) may wait for months: whoever waits for its answer hears where
// it stands instead, once the batch that parked it is durable.
void tell_parked(shell_state& s, batch& b) {
  const agent::loop_type* loop = loop_of(s);
  if (s.answer_waiters.empty() || !loop || !agent::waits_for_human(loop->phase(s.st))) return;
  std::string id = loop->turn_id(s.st);
  if (!s.answer_waiters.count(id)) return;
  shell_state* sp = &s;
  b.done.push_back([sp, id = std::move(id), rj = waiting_reply(s)] {
    auto it = sp->answer_waiters.find(id);
    if (it == sp->answer_waiters.end()) return;
    for (auto& w : it->second) deliver_reply(w, rj);
    sp->answer_waiters.erase(it);
  });
}

}  // namespace keel::actors::shell_detail
