#include "net/raft/groups.hpp"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <future>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "base/clock.hpp"
#include "base/log.hpp"
#include "net/raft/groups_replica.hpp"

namespace keel::raft {

class groups::batcher final : public sender {
 public:
  explicit batcher(sender* out) : out_(out) {}
  void attach(loop* on) { on_ = on; }

  // On the loop thread (the io sends from libraft's calls).
  void send(std::string_view to_address, group_id g, std::string bytes) override {
    append_frame(pending_[std::string(to_address)], g, bytes);
    if (flush_posted_) return;
    flush_posted_ = true;
    // After this turn's other tasks and due ticks: one send per member.
    if (!on_->post([this] { flush(); })) flush();
  }
  void fetch(std::string_view to_address, std::string request,
             std::function<void(result<std::string>)> done) override {
    out_->fetch(to_address, std::move(request), std::move(done));
  }

 private:
  void flush() {
    flush_posted_ = false;
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [to, frames] : pending) out_->send_frames(to, std::move(frames));
  }

  sender* out_;
  loop* on_ = nullptr;
  std::map<std::string, std::string> pending_;
  bool flush_posted_ = false;
};

namespace {

constexpr auto status_wait = std::chrono::seconds(5);

const char* role_name(int state) {
  switch (state) {
    case RAFT_LEADER:
      return "leader";
    case RAFT_FOLLOWER:
      return "follower";
    case RAFT_CANDIDATE:
      return "candidate";
    default:
      return "unavailable";
  }
}

// How often the loop looks at every group's state and term besides after
// its own tasks: libraft changes them inside ticks too (a check-quorum
// step-down, an election), and a tick is not our task.
std::chrono::milliseconds observe_period(uint32_t heartbeat_ms) {
  return std::chrono::milliseconds(std::clamp<uint32_t>(heartbeat_ms / 2, 5, 50));
}

status validate(const groups_options& o) {
  if (o.db == nullptr || !o.submit || o.out == nullptr)
    return error(code::invalid_argument, "replicated groups need a store, a submit and a sender");
  if (o.self.empty() || o.self_id == 0)
    return error(code::invalid_argument,
                 "replicated groups need this node's member id and raft id");
  // The lease (groups.hpp) needs room for a heartbeat and then some.
  if (o.heartbeat_ms == 0 || o.election_timeout_ms < 3 * o.heartbeat_ms)
    return error(code::invalid_argument, "the election timeout must be at least three heartbeats");
  for (const auto& [g, at] : o.recover) {
    bool listed = false;
    for (const auto& spec : o.groups) listed |= spec.id == g;
    if (!listed)
      return error(code::invalid_argument,
                   "group " + std::to_string(g) + " is not replicated here: nothing to recover");
  }
  std::set<group_id> seen;
  for (const auto& g : o.groups) {
    if (!seen.insert(g.id).second)
      return error(code::invalid_argument, "group " + std::to_string(g.id) + " is listed twice");
    // A member that joins runs the group under a new id: only its address
    // is in the spec.
    bool self = false;
    for (const auto& [id, address] : g.voters)
      self |= address == o.self && (g.join || id == o.self_id);
    if (!self)
      return error(code::invalid_argument, "group " + std::to_string(g.id) + " does not list " +
                                               o.self + " (raft id " + std::to_string(o.self_id) +
                                               ") among its voters");
  }
  return status::ok();
}

}  // namespace

status group_unavailable(group_id g, const std::string& why) {
  return error(code::unavailable, "group " + std::to_string(g) + ": " + why);
}

groups::groups(groups_options o)
    : batch_(std::make_unique<batcher>(o.out)),
      opts_(std::move(o)),
      loop_(std::make_unique<loop>()) {
  batch_->attach(loop_.get());
}

groups::~groups() {
  stop();
}

result<std::unique_ptr<groups>> groups::start(groups_options o) {
  KEEL_TRY(validate(o));
  std::unique_ptr<groups> gs(new groups(std::move(o)));
  for (const auto& spec : gs->opts_.groups) {
    auto rep = std::make_unique<replica>();
    rep->spec = spec;
    auto fsm = group_fsm::open(*gs->opts_.db, spec.id);
    if (!fsm)
      return error(fsm.error().error_code(),
                   "group " + std::to_string(spec.id) + ": " + fsm.error().message());
    rep->fsm = std::move(fsm).value();
    io_options io;
    io.group = spec.id;
    io.db = gs->opts_.db;
    io.submit = gs->opts_.submit;
    io.out = gs->batch_.get();
    io.on = gs->loop_.get();
    io.clock_ms = lease_clock_ms;
    io.fetch_state = true;
    io.group_of = gs->opts_.group_of;
    replica* raw = rep.get();
    // In the state machine's terms (the last command applied), as the
    // state server compares it: libraft's applied index also counts
    // configuration changes and barriers.
    io.applied_floor = [raw] { return raw->fsm->applied_index(); };
    io.on_fetched = [raw] {
      if (keel::status st = raw->fsm->reload(); !st)
        log::error("raft group state reread after a fetch failed",
                   {{"group", std::to_string(raw->spec.id)}, {"error", st.to_string()}});
    };
    io.page_timeout = std::chrono::milliseconds(gs->opts_.fetch_page_timeout_ms);
    io.hold_votes_ms = gs->opts_.election_timeout_ms;
    rep->io = std::make_unique<raft::io>(std::move(io));
    gs->replicas_.push_back(std::move(rep));
  }
  state_server_options so;
  so.db = gs->opts_.db;
  so.group_of = gs->opts_.group_of;
  so.page_bytes = gs->opts_.fetch_page_bytes;
  so.serves = [self = gs.get()](group_id g) { return self->find(g) != nullptr; };
  gs->server_ = std::make_unique<state_server>(std::move(so));
  std::promise<keel::status> opened;
  auto fut = opened.get_future();
  groups* self = gs.get();
  if (!gs->loop_->post([self, &opened] { opened.set_value(self->open_all()); }))
    return error(code::internal, "the raft loop refused the start task");
  // Unbounded: open_all only reads the store and writes a group's first
  // entry; nothing it waits for can be stuck behind it.
  if (keel::status st = fut.get(); !st) {
    gs->stop();
    return st;
  }
  gs->observer_ =
      gs->loop_->every(observe_period(gs->opts_.heartbeat_ms), [self] { self->observe_all(); });
  return gs;
}

keel::status groups::open_all() {
  for (auto& rp : replicas_) {
    replica& r = *rp;
    const std::string name = "group " + std::to_string(r.spec.id) + ": ";
    int rv = raft_init(&r.r, r.io->get(), r.fsm->fsm(), opts_.self_id, opts_.self.c_str());
    if (rv != 0) return error(code::internal, name + "raft_init: " + error_text(rv));
    r.initialised = true;
    r.r.data = &r;
    r.fsm->attach(&r.r);
    raft_set_election_timeout(&r.r, opts_.election_timeout_ms);
    raft_set_heartbeat_timeout(&r.r, opts_.heartbeat_ms);
    raft_set_snapshot_threshold(&r.r, opts_.snapshot_threshold);
    raft_set_snapshot_trailing(&r.r, opts_.snapshot_trailing);
    raft_set_install_snapshot_timeout(&r.r, opts_.install_snapshot_timeout_ms);
    // A member cut off and healed does not disrupt the leader the others
    // elected meanwhile.
    raft_set_pre_vote(&r.r, true);

    // Every replica bootstraps the same configuration; a store that
    // already holds the group refuses it (RAFT_CANTBOOTSTRAP) and keeps
    // what it has. A member that joins does not bootstrap: it gets the
    // configuration from the group's leader, unless it is the group's only
    // replica (nothing to join; what it had is lost).
    const bool alone = r.spec.voters.size() == 1;
    if (!r.spec.join || alone) {
      raft_configuration conf;
      raft_configuration_init(&conf);
      for (const auto& [id, address] : r.spec.voters) {
        rv = raft_configuration_add(&conf, alone ? opts_.self_id : id, address.c_str(), RAFT_VOTER);
        if (rv != 0) break;
      }
      if (rv == 0) rv = raft_bootstrap(&r.r, &conf);
      raft_configuration_close(&conf);
    }
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP)
      return error(code::io_error,
                   name + "bootstrap: " + error_text(rv) + ": " + raft_errmsg(&r.r));

    if (auto it = opts_.recover.find(r.spec.id); it != opts_.recover.end())
      KEEL_TRY(recover(r, it->second));

    rv = raft_start(&r.r);
    if (rv != 0)
      return error(rv == RAFT_CORRUPT ? code::corruption : code::io_error,
                   name + "loading the log: " + error_text(rv) + ": " + raft_errmsg(&r.r));
    r.started = true;
    // Known before start() returns: the answer to a member that asks
    // whether the cluster ran must never be a stale no.
    if (r.r.current_term > 1) had_election_.store(true);
  }
  return status::ok();
}

void groups::stop() {
  assert(!loop_->on_loop_thread());
  if (stopped_) return;
  stopped_ = true;
  if (observer_ != 0) loop_->cancel(observer_);
  for (auto& r : replicas_) {
    {
      std::lock_guard lk(r->mu);
      r->stopped = true;
    }
    r->ids_changed.notify_all();
  }
  std::promise<void> all_closed;
  auto fut = all_closed.get_future();
  bool posted = loop_->post([this, &all_closed] {
    auto remaining = std::make_shared<std::size_t>(0);
    for (auto& r : replicas_) {
      stop_leading(*r);
      if (!r->initialised || r->closing) continue;
      r->closing = true;
      ++*remaining;
      r->on_closed = [remaining, &all_closed] {
        if (--*remaining == 0) all_closed.set_value();
      };
      raft_close(&r->r, [](struct ::raft* raw) { static_cast<replica*>(raw->data)->on_closed(); });
    }
    if (*remaining == 0) all_closed.set_value();
  });
  // Unbounded: the io closes once every write it submitted is done, and
  // the journal writer outlives this object.
  if (posted) fut.wait();
  loop_->stop();
  if (server_) server_->stop();
  // Whatever is still queued never reached libraft.
  for (auto& r : replicas_) {
    std::vector<replica::queued> queued;
    std::vector<done_fn> barriers;
    {
      std::lock_guard lk(r->mu);
      queued.swap(r->queue);
      barriers.swap(r->barrier_waiting);
    }
    keel::status st = group_unavailable(r->spec.id, "stopped");
    for (auto& q : queued) q.done(st);
    for (auto& d : barriers) d(st);
  }
}

groups::replica* groups::find(group_id g) const {
  for (const auto& r : replicas_)
    if (r->spec.id == g) return r.get();
  return nullptr;
}

void groups::recv(std::string from, group_id g, std::string bytes) {
  replica* r = find(g);
  if (r == nullptr) return;
  loop_->post([this, r, from = std::move(from), bytes = std::move(bytes)] {
    if (!r->started || r->closing) return;
    if (keel::status st = r->io->recv(from, bytes); !st)
      log::warn("raft message refused",
                {{"group", std::to_string(r->spec.id)}, {"from", from}, {"error", st.to_string()}});
    observe(*r);
  });
}

void groups::recv_frames(std::string from, std::string frames) {
  // One task for the whole batch: one wake-up of the loop, not one per
  // group (a batch holds the heartbeats of every group the sender leads).
  loop_->post([this, from = std::move(from), frames = std::move(frames)] {
    std::vector<replica*> touched;
    for_each_frame(frames, [&](group_id g, std::string_view m) {
      replica* r = find(g);
      if (r == nullptr || !r->started || r->closing) return;
      if (keel::status st = r->io->recv(from, m); !st)
        log::warn("raft message refused",
                  {{"group", std::to_string(g)}, {"from", from}, {"error", st.to_string()}});
      if (std::find(touched.begin(), touched.end(), r) == touched.end()) touched.push_back(r);
    });
    for (replica* r : touched) observe(*r);
  });
}

void groups::serve_fetch(std::string from, std::string request,
                         std::function<void(result<std::string>)> respond) {
  if (!server_) return respond(error(code::unavailable, "the node's groups are stopped"));
  server_->serve(std::move(from), std::move(request), std::move(respond));
}

std::optional<uint64_t> groups::leading(group_id g) const {
  const replica* r = find(g);
  if (r == nullptr) return std::nullopt;
  uint64_t t = r->leading.load();
  // Also false from the moment the lease runs out, before the loop sees
  // it lapse: a call about to start checks this.
  if (t == 0 || lease_clock_ms() >= r->lease_until.load()) return std::nullopt;
  return t;
}

std::string groups::leader_of(group_id g) const {
  const replica* r = find(g);
  if (r == nullptr) return {};
  std::lock_guard lk(r->mu);
  return r->leader;
}

void groups::observe_all() {
  for (auto& r : replicas_) observe(*r);
}

void groups::observe(replica& r) {
  if (!r.started || r.closing) return;
  const int state = raft_state(&r.r);
  const uint64_t term = r.r.current_term;
  if (term > 1 && !had_election_.load(std::memory_order_relaxed)) had_election_.store(true);
  ask_to_join(r);
  raft_id leader_id = 0;
  const char* leader_address = nullptr;
  raft_leader(&r.r, &leader_id, &leader_address);
  {
    std::lock_guard lk(r.mu);
    r.leader = leader_address != nullptr ? leader_address : "";
  }
  if (r.transferring && !r.transfer_called) {
    if (state != RAFT_LEADER)
      r.transferring = false;  // deposed meanwhile: nothing to hand over
    else if (std::chrono::steady_clock::now() >= r.transfer_at)
      return start_transfer(r);
  }
  if (r.lead_term != 0 && (state != RAFT_LEADER || term != r.lead_term)) stop_leading(r);
  if (state == RAFT_LEADER && r.lead_term == 0 && !r.transferring) begin_leading(r, term);
  if (r.begun && !r.transferring) {
    const uint64_t until = lease_until(r);
    r.lease_until.store(until);
    const bool held = lease_clock_ms() < until;
    if (r.ready && !held) {
      log::warn("raft group lease lapsed: its agents stop until a majority answers again",
                {{"group", std::to_string(r.spec.id)}, {"term", std::to_string(r.lead_term)}});
      unready(r);
    } else if (!r.ready && held) {
      make_ready(r);
    }
  }
  if (r.ready) {
    promote_caught_up(r);
    maybe_hand_back(r);
  }
}

uint64_t groups::lease_until(const replica& r) const {
  const uint64_t et = opts_.election_timeout_ms;
  const uint64_t lease_ms = et - opts_.heartbeat_ms - et / 10;
  // The stamps of every other voter's echo in this term, newest first;
  // this node is one of the majority without one.
  std::vector<uint64_t> stamps;
  unsigned voters = 0;
  for (unsigned i = 0; i < r.r.configuration.n; ++i) {
    const raft_server& srv = r.r.configuration.servers[i];
    if (srv.role != RAFT_VOTER) continue;
    ++voters;
    if (srv.id != opts_.self_id) stamps.push_back(r.io->echoed(srv.id, r.lead_term));
  }
  const unsigned others = voters / 2;  // majority - 1
  if (others == 0) return std::numeric_limits<uint64_t>::max();
  if (stamps.size() < others) return 0;
  std::nth_element(stamps.begin(), stamps.begin() + (others - 1), stamps.end(),
                   std::greater<uint64_t>());
  const uint64_t base = stamps[others - 1];
  return base == 0 ? 0 : base + lease_ms;
}

void groups::maybe_hand_back(replica& r) {
  if (opts_.transfer_back_ms == 0 || r.spec.voters.empty() || r.transferring) return;
  if (r.spec.voters.front().second == opts_.self) return;
  const raft_id preferred = preferred_id(r);
  if (preferred == 0) return;
  const auto now = std::chrono::steady_clock::now();
  const auto wait = std::chrono::milliseconds(opts_.transfer_back_ms);
  if (now - r.ready_since < wait || now - r.last_transfer < wait) return;
  // Only to a voter that has the whole log and answers: the transfer then
  // costs one round of TimeoutNow and an election it wins at once.
  const raft_index last = raft_last_index(&r.r);
  bool caught_up = false;
  for (unsigned i = 0; i < r.r.configuration.n; ++i) {
    const auto& server = r.r.configuration.servers[i];
    if (server.id != preferred) continue;
    const auto& p = r.r.leader_state.progress[i];
    caught_up = server.role == RAFT_VOTER && p.match_index == last && p.recent_recv;
  }
  if (!caught_up) return;
  r.last_transfer = now;
  r.transferring = true;
  r.transfer_at = now + std::chrono::milliseconds(opts_.heartbeat_ms);
  // Not ready from here on: the group's agents stop before the new leader
  // takes them, calls wait for it, and the calls in flight are aborted
  // (on_lose). libraft is asked to transfer a heartbeat later (observe):
  // the target's election needs no timeout, so what the abort set going
  // (a socket closed on its client's thread, a process group killed) has
  // that long to end before another member can lead.
  stop_leading(r);
}

void groups::start_transfer(replica& r) {
  r.transfer_called = true;
  const raft_id preferred = preferred_id(r);
  auto* t = new pending_transfer{{}, this, &r};
  t->req.data = t;
  // Gone from the configuration meanwhile (it is joining again): no
  // transfer.
  const int rv =
      preferred == 0
          ? RAFT_BADID
          : raft_transfer(&r.r, &t->req, preferred, [](transfer_request* done) {
              std::unique_ptr<pending_transfer> p(static_cast<pending_transfer*>(done->data));
              p->group->transferring = false;
              p->group->transfer_called = false;
              // Still the leader (the preferred one did not win in time): lead again
              // under a new leader_begin in this term.
              p->owner->observe(*p->group);
            });
  if (rv != 0) {
    delete t;
    r.transferring = false;
    r.transfer_called = false;
    observe(r);
  }
}

void groups::unready(replica& r) {
  const bool was_ready = r.ready;
  // Cleared before anyone is told: from here on no new proposal, id or
  // barrier is taken for the old term.
  r.leading.store(0);
  r.ready = false;
  r.catching_up = 0;  // a later leader learns of it from the member's ask
  {
    std::lock_guard lk(r.mu);
    r.ids_term = 0;
    r.requesting = false;
  }
  r.ids_changed.notify_all();
  if (was_ready && opts_.on_lose) opts_.on_lose(r.spec.id);
}

void groups::stop_leading(replica& r) {
  r.lead_term = 0;
  r.begun = false;
  unready(r);
}

void groups::become_ready(replica& r, uint64_t term) {
  if (r.closing || r.begun || r.lead_term != term || raft_state(&r.r) != RAFT_LEADER ||
      r.r.current_term != term)
    return;
  r.begun = true;
  // Committing leader_begin took a majority's answers, so the lease is
  // normally held already; if not, observe() makes the group ready once
  // it is.
  r.lease_until.store(lease_until(r));
  if (lease_clock_ms() < r.lease_until.load()) make_ready(r);
}

void groups::make_ready(replica& r) {
  const uint64_t term = r.lead_term;
  // Every entry before this term's leader_begin is applied: the reserved
  // limit is what every earlier leader committed, and no id at or above
  // it was handed out (also after a lapsed lease: the ids handed out
  // before it were below a limit committed then).
  const uint64_t committed = r.fsm->reserved_ids();
  {
    std::lock_guard lk(r.mu);
    r.ids_term = term;
    r.next_id = std::max<uint64_t>(committed, 1);
    r.usable = r.next_id;
    r.requesting = false;
  }
  r.leading.store(term);
  r.ready = true;
  r.ready_since = std::chrono::steady_clock::now();
  reserve_ids(r, term);
  if (opts_.on_lead) opts_.on_lead(r.spec.id, term);
}

void groups::begin_failed(replica& r, uint64_t term) {
  // A leader_begin that was refused or lost: propose it again if the loop
  // still sees this node leading in that term.
  if (r.lead_term != term || r.begun) return;
  r.lead_term = 0;
  observe(r);
}

group_status groups::status_of(const replica& r) const {
  group_status s;
  s.id = r.spec.id;
  uint64_t t = r.leading.load();
  if (t != 0) s.leading = t;
  s.fetch = r.io->progress();
  if (!r.started || r.closing) {
    s.role = role_name(RAFT_UNAVAILABLE);
    return s;
  }
  // libraft's accessors take a non-const instance; they only read.
  auto* raw = const_cast<struct ::raft*>(&r.r);
  const int state = raft_state(raw);
  s.role = role_name(state);
  s.term = r.r.current_term;
  raft_id leader_id = 0;
  const char* leader_address = nullptr;
  raft_leader(raw, &leader_id, &leader_address);
  if (leader_address != nullptr) s.leader = leader_address;
  s.last_index = raft_last_index(raw);
  s.commit_index = r.r.commit_index;
  s.applied_index = raft_last_applied(raw);
  if (r.spec.join && !r.joined) {
    std::lock_guard lk(r.joining->mu);
    s.joining = r.joining->answer.empty() ? "asking the group's leader" : r.joining->answer;
  }
  if (state == RAFT_LEADER) {
    // progress is parallel to configuration.servers.
    for (unsigned i = 0; i < r.r.configuration.n; ++i) {
      const raft_server& srv = r.r.configuration.servers[i];
      s.replicas.push_back({srv.address, srv.id, r.r.leader_state.progress[i].match_index,
                            server_role_name(srv.role)});
    }
  }
  return s;
}

std::vector<group_status> groups::status() const {
  auto out = std::make_shared<std::promise<std::vector<group_status>>>();
  auto fut = out->get_future();
  bool posted = loop_->post([this, out] {
    std::vector<group_status> all;
    for (const auto& r : replicas_) all.push_back(status_of(*r));
    out->set_value(std::move(all));
  });
  if (posted && fut.wait_for(status_wait) == std::future_status::ready) return fut.get();
  std::vector<group_status> none;
  for (const auto& r : replicas_) {
    group_status s;
    s.id = r->spec.id;
    s.role = role_name(RAFT_UNAVAILABLE);
    none.push_back(std::move(s));
  }
  return none;
}

}  // namespace keel::raft
