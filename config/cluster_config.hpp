#pragma once
// The cluster a node belongs to, and where each agent lives in it.
//
// A cluster is configured as JSON (docs/operations.md): its id, the shard
// count S (fixed when the cluster is created), the shared secret, heartbeat
// settings, optional TLS files and the members. An agent's shard is
// hash(name) mod S; a shard's owner is the member with the highest
// rendezvous score for it, so adding or removing one member moves only the
// shards that member gains or loses (about S / members).
//
// A shard_map is the member list under an epoch: the cluster's placement at
// one point in time. Every membership change makes a map with a higher
// epoch; nodes compare epochs to tell which of two maps is newer.
//
// Thread-safety: plain values; const functions are safe to call anywhere.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/status.hpp"

namespace keel::config {

struct cluster_member {
  // Unique within the cluster; letters, digits, '-', '_' and '.', at most 64.
  std::string id;
  // Where the member's cluster port (CAF middleman) listens.
  std::string host = "127.0.0.1";
  uint16_t cluster_port = 0;
  // Where the member's HTTP API listens (what clients and `keel` use).
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 0;

  friend bool operator==(const cluster_member&, const cluster_member&) = default;
};

struct cluster_tls {
  // PEM files. All empty: traffic between nodes is not encrypted (use on
  // loopback or a private network only). Set all three to encrypt and to
  // authenticate peers by a certificate signed by `ca`.
  std::string certificate;
  std::string key;
  std::string ca;

  bool enabled() const { return !certificate.empty(); }
};

struct cluster_config {
  // Nodes refuse peers that name another cluster. Required.
  std::string cluster_id;
  // Shards of the name space, 1 to 65536. Default 256. Never change it for an
  // existing cluster: it decides where every agent lives.
  uint32_t shards = 256;
  // Shared secret every member proves it holds when it connects (the secret
  // itself never crosses the wire). Required, at least 16 bytes. May be given
  // as "secret_file" instead (the file's content, trailing newline removed).
  std::string secret;
  // Heartbeats between connected nodes, and how long a silent peer stays
  // "up". A frozen peer is marked down after about connection_timeout_ms.
  // Defaults 500 ms and 3000 ms.
  uint32_t heartbeat_ms = 500;
  uint32_t connection_timeout_ms = 3000;
  // Reconnect backoff after a peer goes away: doubles from min to max.
  // Defaults 100 ms and 5000 ms.
  uint32_t reconnect_min_ms = 100;
  uint32_t reconnect_max_ms = 5000;
  // How long a forwarded API call may take beyond its own ?wait. Default
  // 10000 ms.
  uint32_t forward_timeout_ms = 10'000;
  cluster_tls tls;
  // Replicated groups (docs/replication.md). 0: off, each shard lives on
  // one member (its owner). 1 to 7: every agent's data is in a Raft group
  // of this many members, and acknowledged only once a majority of them
  // has it. Default 0.
  uint32_t replication = 0;
  // Groups the shards are gathered in (shard mod groups), 1 to 1024 and at
  // most `shards`. Fixed when the cluster is created. Default 32.
  uint32_t groups = 32;
  // A follower that hears no leader for this long (randomised up to twice
  // it) starts an election; a leader that hears no majority for as long
  // steps down. Default 1000 ms.
  uint32_t election_timeout_ms = 1000;
  // How often a group's leader sends heartbeats. Default 100 ms.
  uint32_t raft_heartbeat_ms = 100;
  // How long a call for an agent whose group has no leader (an election)
  // waits for one before it is answered 503 with Retry-After. Default
  // 5000 ms.
  uint32_t leader_wait_ms = 5000;
  // The initial members. Membership changes later (add-node, remove-node)
  // are stored by the nodes themselves with a higher epoch.
  std::vector<cluster_member> members;
};

// Reads a cluster config; unknown keys and wrong types are errors naming
// `source` and the key. secret_file is resolved relative to the working
// directory.
result<cluster_config> cluster_from_json(const nlohmann::json& j, const std::string& source);
result<cluster_config> load_cluster_file(const std::string& path);
// Ids unique and well formed, ports set, secret long enough, ranges.
status validate(const cluster_config& c);
status validate_member(const cluster_member& m);

nlohmann::json to_json(const cluster_member& m);
result<cluster_member> member_from_json(const nlohmann::json& j, const std::string& source);

// The shard of an agent name: a fixed 64-bit hash of the bytes, mod shards.
// Stable across versions and machines (it is part of the on-disk format).
uint32_t shard_of(std::string_view name, uint32_t shards);

// The members of the cluster at one epoch, and who owns each shard.
class shard_map {
 public:
  shard_map() = default;
  // REQUIRES: shards >= 1; member ids unique.
  shard_map(uint64_t epoch, uint32_t shards, std::vector<cluster_member> members);

  uint64_t epoch() const { return epoch_; }
  uint32_t shards() const { return shards_; }
  const std::vector<cluster_member>& members() const { return members_; }
  const cluster_member* find(std::string_view id) const;
  bool empty() const { return members_.empty(); }

  // The owner's member id (rendezvous hashing); "" when there are no members.
  const std::string& owner(uint32_t shard) const;
  const std::string& owner_of(std::string_view name) const {
    return owner(shard_of(name, shards_));
  }
  // Shards owned by `id` (ascending).
  std::vector<uint32_t> shards_of(std::string_view id) const;

  // The same cluster with `m` added (or replaced) / `id` removed, at epoch + 1.
  shard_map with_member(const cluster_member& m) const;
  shard_map without_member(std::string_view id) const;

  nlohmann::json to_json() const;
  static result<shard_map> from_json(const nlohmann::json& j, std::string_view what);

  friend bool operator==(const shard_map& a, const shard_map& b) {
    return a.epoch_ == b.epoch_ && a.shards_ == b.shards_ && a.members_ == b.members_;
  }

 private:
  void place();

  uint64_t epoch_ = 0;
  uint32_t shards_ = 1;
  std::vector<cluster_member> members_;
  std::vector<uint16_t> owner_;  // shard -> index into members_
};

// Replicated groups (docs/replication.md). Shards are grouped: a shard's
// group is shard mod groups, and each group is one replicated log. Its
// replicas are the `replication` members with the highest rendezvous score
// for the group (a hash salted apart from shard ownership), best first: the
// first is the group's preferred leader. Adding or removing a member changes
// a group's replicas only where that member enters or leaves them.
inline uint32_t group_of_shard(uint32_t shard, uint32_t groups) {
  return groups == 0 ? 0 : shard % groups;
}
// Member ids, best first; min(replication, members) of them. Ties go to the
// smaller id.
std::vector<std::string> group_replicas(const std::vector<cluster_member>& members, uint32_t group,
                                        uint32_t replication);

// A shard that changes owner between two maps.
struct shard_move {
  uint32_t shard;
  std::string from;
  std::string to;
};
// Every shard whose owner differs between `before` and `after` (same shard
// count), ascending. REQUIRES: before.shards() == after.shards().
std::vector<shard_move> moves_between(const shard_map& before, const shard_map& after);

}  // namespace keel::config
