#include "net/cluster/replication.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include "base/bytes.hpp"
#include "base/log.hpp"
#include "net/raft/identity.hpp"

namespace keel::net {

namespace {
// Raft messages for one member, as frames (raft::append_frame).
constexpr char raft_batch_tag = 'B';
constexpr char fetch_call_tag = 'S';
constexpr char join_call_tag = 'J';
constexpr char history_call_tag = 'H';
// A page is about 1 MB: time enough for it on a slow link, not for a peer
// that is gone.
constexpr uint32_t fetch_timeout_ms = 20'000;
// A join request and the question whether a member had an election are
// answered from memory.
constexpr uint32_t short_call_ms = 2'000;
// How often a member with an empty store asks the others again while it
// cannot choose (most are not up yet).
constexpr auto ask_again = std::chrono::milliseconds(250);

std::string tagged(char tag, std::string_view body) {
  std::string out;
  out.reserve(1 + body.size());
  out.push_back(tag);
  out.append(body);
  return out;
}
}  // namespace

std::string encode_fetch_call(std::string_view request) {
  return tagged(fetch_call_tag, request);
}

bool is_replication_call(std::string_view payload) {
  return !payload.empty() && (payload[0] == fetch_call_tag || payload[0] == join_call_tag ||
                              payload[0] == history_call_tag);
}

struct replication::start_args {
  std::string self;
  persistence::store* db = nullptr;
  raft::submit_fn submit;
  hooks h;
};

replication::replication(config::cluster_config c) : cfg_(std::move(c)) {
  // Placement and raft ids depend on the configured members only: worked
  // out once, not on every routed call.
  std::vector<std::string> ids;
  for (const auto& m : cfg_.members) ids.push_back(m.id);
  std::sort(ids.begin(), ids.end());
  for (std::size_t i = 0; i < ids.size(); ++i) raft_ids_[ids[i]] = static_cast<raft_id>(i) + 1;
  for (uint32_t g = 0; g < cfg_.groups; ++g)
    replicas_.push_back(config::group_replicas(cfg_.members, g, cfg_.replication));
}

replication::~replication() {
  stop();
}

raft_id replication::raft_id_of(const std::string& member) const {
  auto it = raft_ids_.find(member);
  return it == raft_ids_.end() ? 0 : it->second;
}

const std::vector<std::string>& replication::replicas_of(raft::group_id g) const {
  static const std::vector<std::string> none;
  return g < replicas_.size() ? replicas_[g] : none;
}

bool replication::replicates(const std::string& member, raft::group_id g) const {
  const auto& r = replicas_of(g);
  return std::find(r.begin(), r.end(), member) != r.end();
}

keel::status replication::start(const std::string& self, persistence::store& db,
                                raft::submit_fn submit, cluster_transport& t, hooks h) {
  const raft_id original = raft_id_of(self);
  if (original == 0)
    return error(code::invalid_argument, "node " + self + " is not a member of cluster " +
                                             cfg_.cluster_id + ": it replicates no group");
  if (cfg_.members.size() > 0xFFFF)
    return error(code::invalid_argument, "a replicated cluster has at most 65535 members");
  transport_.store(&t, std::memory_order_release);
  auto a = std::make_shared<start_args>(start_args{self, &db, std::move(submit), std::move(h)});
  auto stored = raft::load_identity(db);
  if (!stored) return stored.error();
  if (stored->has_value())
    return start_groups(*a, **stored, raft::original_id(**stored) != **stored);
  auto holds = raft::holds_groups(db);
  if (!holds) return holds.error();
  if (!*holds && !recover_.empty())
    return error(code::invalid_argument,
                 "--recover-group: this member holds no group to recover (its store is empty)");
  if (*holds || cfg_.members.size() == 1) {
    // Groups an older version bootstrapped, or nobody to ask.
    KEEL_TRY(raft::save_identity(db, original));
    return start_groups(*a, original, false);
  }
  log::info(
      "this member holds no raft group: asking the other members whether the cluster ran "
      "before; its groups start once one says it did, or all say it did not",
      {{"member", self}});
  decider_ = std::thread([this, a] { decide_and_start(a); });
  return status::ok();
}

keel::status replication::start_groups(const start_args& a, raft_id id, bool join) {
  // What this member answers from here on (history after a rejoin), before
  // the groups load.
  self_raft_id_.store(id);
  raft::groups_options o;
  o.self = a.self;
  o.self_id = id;
  for (uint32_t g = 0; g < cfg_.groups; ++g) {
    if (!replicates(a.self, g)) continue;
    raft::group_spec spec;
    spec.id = g;
    for (const auto& member : replicas_of(g)) spec.voters.emplace_back(raft_id_of(member), member);
    spec.join = join;
    o.groups.push_back(std::move(spec));
  }
  o.db = a.db;
  o.submit = a.submit;
  o.out = this;
  o.election_timeout_ms = cfg_.election_timeout_ms;
  o.heartbeat_ms = cfg_.raft_heartbeat_ms;
  o.group_of = [this](std::string_view name) { return group_of(name); };
  o.recover = recover_;
  o.on_lead = a.h.on_lead;
  o.on_lose = a.h.on_lose;
  auto started = raft::groups::start(std::move(o));
  if (!started) return started.error();
  groups_ = std::move(*started);
  running_.store(groups_.get(), std::memory_order_release);
  return status::ok();
}

void replication::decide_and_start(std::shared_ptr<start_args> a) {
  struct tally {
    std::mutex mu;
    std::condition_variable cv;
    std::size_t answered = 0, empty = 0, fresh = 0, history = 0;
  };
  raft::start_choice choice = raft::start_choice::wait;
  for (;;) {
    auto* t = transport_.load(std::memory_order_acquire);
    auto round = std::make_shared<tally>();
    std::size_t asked = 0;
    for (const auto& m : cfg_.members) {
      if (m.id == a->self || t == nullptr) continue;
      ++asked;
      t->call(m.id, std::string(1, history_call_tag), short_call_ms,
              [round](result<std::string> answer) {
                std::lock_guard lk(round->mu);
                ++round->answered;
                auto m = answer ? raft::cluster_memory_from(*answer) : std::nullopt;
                if (m == raft::cluster_memory::empty) ++round->empty;
                if (m == raft::cluster_memory::fresh) ++round->fresh;
                if (m == raft::cluster_memory::history) ++round->history;
                round->cv.notify_all();
              });
    }
    {
      // Bounded: every call answers within short_call_ms (or at once when
      // its peer is not up). One "history" decides at once: a frozen
      // peer's answer is not waited for then.
      std::unique_lock lk(round->mu);
      round->cv.wait(lk, [&] { return round->answered == asked || round->history > 0; });
      choice =
          raft::choose_start(cfg_.members.size() - 1, round->empty, round->fresh, round->history);
    }
    std::unique_lock lk(decide_mu_);
    if (stopping_) return;
    if (choice != raft::start_choice::wait) break;
    // Again after a while, or as soon as a peer connects (a first round
    // usually finds the transport still connecting).
    decide_cv_.wait_for(lk, ask_again, [this] { return stopping_ || peer_news_; });
    peer_news_ = false;
    if (stopping_) return;
  }
  const raft_id original = raft_id_of(a->self);
  raft_id id = original;
  if (choice == raft::start_choice::rejoin) {
    id = raft::incarnation_id(original, raft::new_incarnation());
  }
  keel::status st = raft::save_identity(*a->db, id);
  std::lock_guard lk(decide_mu_);
  if (st && !stopping_) st = start_groups(*a, id, choice == raft::start_choice::rejoin);
  if (!st) {
    // The node runs on without its groups: every call for them answers
    // unavailable, and the operator sees why.
    log::error("the replicated groups did not start", {{"error", st.to_string()}});
    return;
  }
  if (choice == raft::start_choice::rejoin)
    log::warn(
        "the cluster held elections before this member's store held any group (its data "
        "directory was lost, or it started after the others' first election): it joins its "
        "groups under a new raft id and catches up from their leaders",
        {{"member", a->self}, {"raft_id", std::to_string(id)}});
  else
    log::info("no member of the cluster held an election yet: groups bootstrapped",
              {{"member", a->self}});
}

void replication::peer_up() {
  {
    std::lock_guard lk(decide_mu_);
    peer_news_ = true;
  }
  decide_cv_.notify_all();
}

raft::cluster_memory replication::memory() const {
  const raft_id id = self_raft_id_.load();
  if (id == 0) return raft::cluster_memory::empty;  // still asking
  if (raft::original_id(id) != id) return raft::cluster_memory::history;
  auto* gs = running_.load(std::memory_order_acquire);
  return gs != nullptr && gs->had_election() ? raft::cluster_memory::history
                                             : raft::cluster_memory::fresh;
}

void replication::stop() {
  {
    std::lock_guard lk(decide_mu_);
    stopping_ = true;
  }
  decide_cv_.notify_all();
  if (decider_.joinable() && decider_.get_id() != std::this_thread::get_id()) decider_.join();
  if (auto* g = running_.exchange(nullptr)) g->stop();
  transport_.store(nullptr, std::memory_order_release);
}

void replication::on_cast(const std::string& from, std::string payload) {
  auto* gs = running_.load(std::memory_order_acquire);
  if (!gs) return;
  if (payload.empty() || payload[0] != raft_batch_tag) return;
  payload.erase(0, 1);
  gs->recv_frames(from, std::move(payload));
}

void replication::send_frames(std::string_view to_address, std::string frames) {
  // Dropped when the peer is down: raft sends again.
  auto* t = transport_.load(std::memory_order_acquire);
  if (!t) return;
  std::string payload;
  payload.reserve(1 + frames.size());
  payload.push_back(raft_batch_tag);
  payload.append(frames);
  t->cast(std::string(to_address), std::move(payload));
}

void replication::send(std::string_view to_address, raft::group_id g, std::string bytes) {
  // The groups batch their messages (send_frames); a lone one is a batch of one.
  std::string frames;
  raft::append_frame(frames, g, bytes);
  send_frames(to_address, std::move(frames));
}

void replication::fetch(std::string_view to_address, std::string request,
                        std::function<void(result<std::string>)> done) {
  auto* t = transport_.load(std::memory_order_acquire);
  if (!t) return done(error(code::unavailable, "the cluster transport is not running"));
  t->call(std::string(to_address), encode_fetch_call(request), fetch_timeout_ms, std::move(done));
}

void replication::join(std::string_view to_address, std::string request,
                       std::function<void(result<std::string>)> done) {
  auto* t = transport_.load(std::memory_order_acquire);
  if (!t) return done(error(code::unavailable, "the cluster transport is not running"));
  t->call(std::string(to_address), tagged(join_call_tag, request), short_call_ms, std::move(done));
}

void replication::on_call(const std::string& from, std::string payload,
                          std::function<void(result<std::string>)> respond) {
  if (!payload.empty() && payload[0] == history_call_tag)
    return respond(std::string(raft::to_string(memory())));
  auto* gs = running_.load(std::memory_order_acquire);
  if (!gs) return respond(error(code::unavailable, "the node's groups are not running"));
  if (!payload.empty() && payload[0] == join_call_tag)
    return gs->serve_join(from, payload.substr(1), std::move(respond));
  gs->serve_fetch(from, payload.substr(1), std::move(respond));
}

std::string replication::leader_of(raft::group_id g) const {
  auto* gs = running_.load(std::memory_order_acquire);
  return gs ? gs->leader_of(g) : std::string();
}

std::vector<raft::group_status> replication::group_status() const {
  auto* gs = running_.load(std::memory_order_acquire);
  return gs ? gs->status() : std::vector<raft::group_status>{};
}

uint32_t replication::group_of(std::string_view agent_name) const {
  return config::group_of_shard(config::shard_of(agent_name, cfg_.shards), cfg_.groups);
}

std::optional<uint64_t> replication::leading(uint32_t group) const {
  auto* gs = running_.load(std::memory_order_acquire);
  return gs ? gs->leading(group) : std::nullopt;
}

result<uint64_t> replication::allocate_agent_id(uint32_t group) {
  auto* gs = running_.load(std::memory_order_acquire);
  if (!gs) return error(code::unavailable, "the node's groups are not running");
  return gs->allocate_agent_id(group);
}

void replication::barrier(uint32_t group, done_fn done) {
  auto* gs = running_.load(std::memory_order_acquire);
  if (!gs) return done(error(code::unavailable, "the node's groups are not running"));
  gs->barrier(group, std::move(done));
}

void replication::propose(uint32_t group, uint64_t term, persistence::write_set ops, done_fn done) {
  auto* gs = running_.load(std::memory_order_acquire);
  if (!gs) return done(error(code::unavailable, "the node's groups are not running"));
  gs->propose(group, term, std::move(ops), std::move(done));
}

}  // namespace keel::net
