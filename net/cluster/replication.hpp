#pragma once
// A replicated member's seam between its runtime and its raft groups
// (docs/replication.md): the runtime's replicator (actors/replicator.hpp)
// over net/raft's groups, and the groups' messages over the cluster
// transport's one-way casts.
//
// keeld makes it before the node (the node's shells need a replicator from
// their first activation) and starts the groups once the transport runs;
// until then no group is led here, so no agent activates.
//
// Thread-safety: every method may be called from any thread.
// Lifetime: stop() before the transport and the node's journal stop.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "actors/replicator.hpp"
#include "config/cluster_config.hpp"
#include "net/cluster/transport.hpp"
#include "net/raft/groups.hpp"
#include "net/raft/identity.hpp"

namespace keel::net {

class replication final : public actors::replicator, public raft::sender {
 public:
  explicit replication(config::cluster_config c);
  ~replication() override;
  replication(const replication&) = delete;
  replication& operator=(const replication&) = delete;

  struct hooks {
    // On the raft loop: quick (hand real work to another thread).
    std::function<void(raft::group_id, uint64_t term)> on_lead;
    std::function<void(raft::group_id)> on_lose;
  };
  // Starts the groups `self` is a replica of (placement: group_replicas of
  // the config's members); their messages leave through `t`. Under which
  // raft id (net/raft/identity.hpp): the one the store is bound to; for a
  // store of an older version that holds groups, or a cluster of one, the
  // original; for an empty store, the others are asked first, so the groups
  // start later on a thread of their own (the node answers unavailable
  // meanwhile): joined under a new incarnation once one of them held an
  // election, bootstrapped under the original id once all the others
  // answered that none did (raft::choose_start).
  // Errors: as raft::groups::start (a group's stored log that does not
  // load), or reading and saving the identity.
  keel::status start(const std::string& self, persistence::store& db, raft::submit_fn submit,
                     cluster_transport& t, hooks h);
  // Groups to recover when they start (raft::groups_options::recover);
  // before start(). A member with an empty store has nothing to recover:
  // its start refuses them.
  void recover(std::map<raft::group_id, uint64_t> groups) { recover_ = std::move(groups); }
  // Stops the groups (or the asking): pending proposals fail unavailable.
  // Idempotent.
  void stop();

  // The raft id this member's groups run (or are about to run) under; 0
  // while it asks the others.
  raft_id self_raft_id() const { return self_raft_id_.load(); }
  // Whether the groups run (group_status() lists them).
  bool running() const { return running_.load(std::memory_order_acquire) != nullptr; }

  // A peer connected: a member still asking the others whether the cluster
  // ran asks again now rather than at its next round.
  void peer_up();

  // A cast from peer `from` (the transport's on_cast): raft traffic goes to
  // its group; anything else is dropped.
  void on_cast(const std::string& from, std::string payload);

  // A call from peer `from` for the groups (is_replication_call): a state
  // fetch (served off the raft loop; `respond` gets the page), a join
  // request (groups::serve_join), or whether this member had an election.
  void on_call(const std::string& from, std::string payload,
               std::function<void(result<std::string>)> respond);

  // The member id of the leader of `name`'s group as this node knows it
  // ("" unknown), and a consistent view of every group here.
  std::string leader_of(raft::group_id g) const;
  std::vector<raft::group_status> group_status() const;
  // The original raft id of a member: its position in the config's members
  // sorted by id, plus one (the same on every member). A member that lost
  // its store runs its groups under a new incarnation of it.
  raft_id raft_id_of(const std::string& member) const;
  // The members that hold a copy of group g, best first (placement), and
  // whether `member` is one of them.
  const std::vector<std::string>& replicas_of(raft::group_id g) const;
  bool replicates(const std::string& member, raft::group_id g) const;

  const config::cluster_config& config() const { return cfg_; }

  // actors::replicator
  uint32_t group_of(std::string_view agent_name) const override;
  std::optional<uint64_t> leading(uint32_t group) const override;
  result<uint64_t> allocate_agent_id(uint32_t group) override;
  void propose(uint32_t group, uint64_t term, persistence::write_set ops, done_fn done) override;
  // A read index on group g (raft::groups::barrier); unavailable when the
  // groups do not run.
  void barrier(uint32_t group, done_fn done);

  // raft::sender
  void send(std::string_view to_address, raft::group_id g, std::string bytes) override;
  // One cast 'B' carrying the frames (raft::append_frame).
  void send_frames(std::string_view to_address, std::string frames) override;
  void fetch(std::string_view to_address, std::string request,
             std::function<void(result<std::string>)> done) override;
  void join(std::string_view to_address, std::string request,
            std::function<void(result<std::string>)> done) override;

 private:
  struct start_args;
  keel::status start_groups(const start_args& a, raft_id id, bool join);
  // The empty store's start: asks the others until it can choose.
  void decide_and_start(std::shared_ptr<start_args> a);
  // What this member answers one that asks whether the cluster ran.
  raft::cluster_memory memory() const;

  config::cluster_config cfg_;
  std::unique_ptr<raft::groups> groups_;
  // Set once the groups run; read without a lock by shells and the API.
  std::atomic<raft::groups*> running_{nullptr};
  std::atomic<cluster_transport*> transport_{nullptr};
  std::map<std::string, raft_id> raft_ids_;         // by member id
  std::vector<std::vector<std::string>> replicas_;  // by group, best first
  std::atomic<raft_id> self_raft_id_{0};
  std::map<raft::group_id, uint64_t> recover_;
  // The empty store's start (decide_and_start), and what stops it.
  std::thread decider_;
  std::mutex decide_mu_;
  std::condition_variable decide_cv_;
  bool stopping_ = false;
  bool peer_news_ = false;  // a peer connected since the last round
};

// Raft traffic travels as casts: 'B', then frames (raft::append_frame),
// each a group's message (net/raft/message_codec.hpp).

// Calls for the groups are binary: 'S' and a state fetch request
// (net/raft/state_stream.hpp), 'J' and a join request (groups.hpp), 'H'
// alone (had an election?). JSON calls start with '{', never these.
std::string encode_fetch_call(std::string_view request);
bool is_replication_call(std::string_view payload);

}  // namespace keel::net
