#include "net/cluster/replication.hpp"

#include <algorithm>
#include <utility>

#include "base/bytes.hpp"

namespace keel::net {

namespace {
// Raft messages for one member, as frames (raft::append_frame).
constexpr char raft_batch_tag = 'B';
constexpr char fetch_call_tag = 'S';
// A page is about 1 MB: time enough for it on a slow link, not for a peer
// that is gone.
constexpr uint32_t fetch_timeout_ms = 20'000;
}  // namespace

std::string encode_fetch_call(std::string_view request) {
  std::string out;
  out.reserve(1 + request.size());
  out.push_back(fetch_call_tag);
  out.append(request);
  return out;
}

bool is_fetch_call(std::string_view payload) {
  return !payload.empty() && payload[0] == fetch_call_tag;
}

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
  raft::groups_options o;
  o.self = self;
  o.self_id = raft_id_of(self);
  if (o.self_id == 0)
    return error(code::invalid_argument, "node " + self + " is not a member of cluster " +
                                             cfg_.cluster_id + ": it replicates no group");
  for (uint32_t g = 0; g < cfg_.groups; ++g) {
    if (!replicates(self, g)) continue;
    raft::group_spec spec;
    spec.id = g;
    for (const auto& id : replicas_of(g)) spec.voters.emplace_back(raft_id_of(id), id);
    o.groups.push_back(std::move(spec));
  }
  o.db = &db;
  o.submit = std::move(submit);
  o.out = this;
  o.election_timeout_ms = cfg_.election_timeout_ms;
  o.heartbeat_ms = cfg_.raft_heartbeat_ms;
  o.group_of = [this](std::string_view name) { return group_of(name); };
  o.on_lead = std::move(h.on_lead);
  o.on_lose = std::move(h.on_lose);
  transport_.store(&t, std::memory_order_release);
  auto started = raft::groups::start(std::move(o));
  if (!started) return started.error();
  groups_ = std::move(*started);
  running_.store(groups_.get(), std::memory_order_release);
  return status::ok();
}

void replication::stop() {
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

void replication::on_fetch(const std::string& from, std::string payload,
                           std::function<void(result<std::string>)> respond) {
  auto* gs = running_.load(std::memory_order_acquire);
  if (!gs) return respond(error(code::unavailable, "the node's groups are not running"));
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
