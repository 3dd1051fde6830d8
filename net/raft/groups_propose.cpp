// The write side of groups: proposals batched into entries, agent-id
// blocks, read-index barriers, and the libraft callbacks that end them.
#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

#include "base/log.hpp"
#include "net/raft/groups.hpp"
#include "net/raft/groups_replica.hpp"

namespace keel::raft {

namespace {

constexpr auto id_wait = std::chrono::seconds(5);

uint64_t id_tag(group_id g) {
  return (static_cast<uint64_t>(g) + 1) << 48;
}

void fail_all(std::vector<done_fn>& dones, const status& st) {
  for (auto& d : dones) d(st);
}

}  // namespace

// libraft's C callbacks. They run inside libraft (on the loop): they end
// requests and post follow-up work, and never call libraft themselves (a
// failure callback runs while an instance changes state).
struct groups_callbacks {
  // raft_apply of `e`, carried by `p`: 0, or libraft's refusal, in which
  // case `p` is still the caller's and the buffer has been freed.
  static int apply(groups::replica& r, const entry& e, pending_entry* p) {
    auto buf = encode_for_raft(e);
    if (!buf) return RAFT_NOMEM;
    p->req.data = p;
    int rv = raft_apply(&r.r, &p->req, &*buf, 1, applied);
    // The buffer is libraft's only once raft_apply accepted it.
    if (rv != 0) raft_free(buf->base);
    return rv;
  }

  static void applied(apply_request* req, int rv, void* result) {
    std::unique_ptr<pending_entry> p(static_cast<pending_entry*>(req->data));
    groups::replica& r = *p->group;
    const group_id g = r.spec.id;
    status st = status::ok();
    if (rv != 0) {
      st = group_unavailable(g, "the entry was not applied: " + error_text(rv));
    } else if (auto report = group_fsm::report_of(req, result); !report) {
      st = group_unavailable(g, "the entry's apply left no report");
    } else if (report->outcome == apply_outcome::fenced) {
      st = group_unavailable(
          g, "fenced: term " + std::to_string(p->term) + " is not the group's term of record");
    }
    groups* owner = p->owner;
    switch (p->kind) {
      case entry_kind::writes:
        fail_all(p->dones, st);
        break;
      case entry_kind::leader_begin: {
        const uint64_t term = p->term;
        const bool ok = st.is_ok();
        owner->loop_->post([owner, &r, term, ok] {
          if (ok)
            owner->become_ready(r, term);
          else
            owner->begin_failed(r, term);
        });
        break;
      }
      case entry_kind::reserve_ids: {
        {
          std::lock_guard lk(r.mu);
          if (r.ids_term == p->term) {
            if (st) r.usable = std::max(r.usable, p->limit);
            r.requesting = false;
          }
        }
        r.ids_changed.notify_all();
        if (!st) log::warn("agent id reservation failed", {{"error", st.to_string()}});
        break;
      }
    }
  }

  static void barrier_done(barrier_request* req, int rv) {
    std::unique_ptr<pending_barrier> p(static_cast<pending_barrier*>(req->data));
    groups::replica& r = *p->group;
    r.barrier_in_flight = false;
    status st = status::ok();
    if (rv != 0)
      st = group_unavailable(r.spec.id, "the barrier was not applied: " + error_text(rv));
    else if (r.leading.load() == 0)
      st = group_unavailable(r.spec.id, "leadership lost during the barrier");
    fail_all(p->dones, st);
    // Callers that arrived while this one was in flight.
    groups* owner = p->owner;
    owner->loop_->post([owner, &r] { owner->start_barrier(r); });
  }
};

void groups::propose(group_id g, uint64_t term, persistence::write_set ops, done_fn done) {
  replica* r = find(g);
  if (r == nullptr) return done(group_unavailable(g, "this node is not a replica of the group"));
  const uint64_t lead = r->leading.load();
  if (lead == 0) return done(group_unavailable(g, "this node does not lead the group"));
  if (lead != term)
    return done(group_unavailable(g, "fenced: proposed in term " + std::to_string(term) +
                                         ", this node leads term " + std::to_string(lead)));
  bool post_now = false;
  {
    std::unique_lock lk(r->mu);
    if (r->stopped) {
      lk.unlock();
      return done(group_unavailable(g, "stopped"));
    }
    r->queue.push_back({term, std::move(ops), std::move(done)});
    post_now = !r->drain_posted;
    r->drain_posted = true;
  }
  if (post_now) loop_->post([this, r] { drain(*r); });
  // A refused post means stop() has begun; it fails what is queued.
}

void groups::drain(replica& r) {
  std::vector<replica::queued> batch;
  {
    std::lock_guard lk(r.mu);
    batch.swap(r.queue);
    r.drain_posted = false;
  }
  if (batch.empty()) return;
  const group_id g = r.spec.id;
  // One entry per distinct term, terms in order of first arrival (the
  // state machine fences per entry; in practice there is one term).
  std::vector<uint64_t> terms;
  for (const auto& q : batch)
    if (std::find(terms.begin(), terms.end(), q.term) == terms.end()) terms.push_back(q.term);
  for (uint64_t term : terms) {
    entry e{entry_kind::writes, term, {}, 0};
    auto p = std::make_unique<pending_entry>();
    p->owner = this;
    p->group = &r;
    p->kind = entry_kind::writes;
    p->term = term;
    for (auto& q : batch) {
      if (q.term != term) continue;
      e.proposals.push_back({r.next_proposal++, std::move(q.ops)});
      p->dones.push_back(std::move(q.done));
    }
    keel::status refused = keel::status::ok();
    if (!r.started || r.closing)
      refused = group_unavailable(g, "stopped");
    else if (r.leading.load() != term)
      refused = group_unavailable(g, "not leading in term " + std::to_string(term));
    else if (int rv = groups_callbacks::apply(r, e, p.get()); rv != 0)
      refused = group_unavailable(g, "libraft refused the entry: " + error_text(rv));
    if (!refused) {
      fail_all(p->dones, refused);
      continue;
    }
    p.release();  // libraft's until the callback
  }
}

result<uint64_t> groups::allocate_agent_id(group_id g) {
  replica* r = find(g);
  if (r == nullptr) return group_unavailable(g, "this node is not a replica of the group");
  const auto deadline = std::chrono::steady_clock::now() + id_wait;
  std::unique_lock lk(r->mu);
  for (;;) {
    if (r->stopped) return group_unavailable(g, "stopped");
    if (r->ids_term == 0 || lease_clock_ms() >= r->lease_until.load())
      return group_unavailable(g, "this node does not lead the group");
    // The next block is asked for once half of the current one is used,
    // so a steady stream of spawns rarely waits.
    const bool low = r->usable - r->next_id <= id_block / 2;
    if (low && !r->requesting && !r->reserve_posted) {
      r->reserve_posted = true;
      const uint64_t term = r->ids_term;
      if (!loop_->post([this, r, term] { reserve_ids(*r, term); }))
        return group_unavailable(g, "stopped");
    }
    if (r->next_id < r->usable) return id_tag(g) | r->next_id++;
    if (r->ids_changed.wait_until(lk, deadline) == std::cv_status::timeout &&
        !(r->ids_term != 0 && r->next_id < r->usable))
      return group_unavailable(g, "no agent ids were reserved within 5 s");
  }
}

void groups::reserve_ids(replica& r, uint64_t term) {
  uint64_t limit = 0;
  {
    std::lock_guard lk(r.mu);
    r.reserve_posted = false;
    if (r.ids_term != term || r.requesting) return;
    r.requesting = true;
    limit = r.usable + id_block;
  }
  auto p = std::make_unique<pending_entry>();
  p->owner = this;
  p->group = &r;
  p->kind = entry_kind::reserve_ids;
  p->term = term;
  p->limit = limit;
  entry e{entry_kind::reserve_ids, term, {}, limit};
  if (int rv = groups_callbacks::apply(r, e, p.get()); rv != 0) {
    {
      std::lock_guard lk(r.mu);
      r.requesting = false;
    }
    r.ids_changed.notify_all();
    log::warn("agent id reservation refused",
              {{"group", std::to_string(r.spec.id)}, {"error", error_text(rv)}});
    return;
  }
  p.release();
}

void groups::begin_leading(replica& r, uint64_t term) {
  r.lead_term = term;
  auto p = std::make_unique<pending_entry>();
  p->owner = this;
  p->group = &r;
  p->kind = entry_kind::leader_begin;
  p->term = term;
  entry e{entry_kind::leader_begin, term, {}, 0};
  if (int rv = groups_callbacks::apply(r, e, p.get()); rv != 0) {
    // Tried again at the next observation while still leader.
    r.lead_term = 0;
    log::warn("leader_begin refused",
              {{"group", std::to_string(r.spec.id)}, {"error", error_text(rv)}});
    return;
  }
  p.release();
}

void groups::barrier(group_id g, done_fn done) {
  replica* r = find(g);
  if (r == nullptr) return done(group_unavailable(g, "this node is not a replica of the group"));
  if (r->leading.load() == 0)
    return done(group_unavailable(g, "this node does not lead the group"));
  bool post_now = false;
  {
    std::unique_lock lk(r->mu);
    if (r->stopped) {
      lk.unlock();
      return done(group_unavailable(g, "stopped"));
    }
    r->barrier_waiting.push_back(std::move(done));
    post_now = !r->barrier_posted;
    r->barrier_posted = true;
  }
  if (post_now) loop_->post([this, r] { start_barrier(*r); });
}

void groups::start_barrier(replica& r) {
  std::vector<done_fn> callers;
  {
    std::lock_guard lk(r.mu);
    r.barrier_posted = false;
    // One in flight: those waiting join the next, which its callback
    // starts (a barrier started before they arrived may not cover writes
    // acknowledged to them since).
    if (r.barrier_in_flight) return;
    callers.swap(r.barrier_waiting);
  }
  if (callers.empty()) return;
  const group_id g = r.spec.id;
  if (!r.started || r.closing || r.leading.load() == 0) {
    fail_all(callers, group_unavailable(g, "this node does not lead the group"));
    return;
  }
  auto p = std::make_unique<pending_barrier>();
  p->owner = this;
  p->group = &r;
  p->dones = std::move(callers);
  p->req.data = p.get();
  if (int rv = raft_barrier(&r.r, &p->req, groups_callbacks::barrier_done); rv != 0) {
    fail_all(p->dones, group_unavailable(g, "libraft refused the barrier: " + error_text(rv)));
    return;
  }
  r.barrier_in_flight = true;
  p.release();
}

}  // namespace keel::raft
