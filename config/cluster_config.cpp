#include "config/cluster_config.hpp"

#include <algorithm>
#include <cassert>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "config/json_fields.hpp"

namespace keel::config {

using nlohmann::json;

namespace {

using detail::read_string;
using detail::read_uint;

constexpr uint32_t kMaxShards = 65536;
// owner_ stores an index into members_ as uint16_t.
constexpr std::size_t kMaxMembers = std::numeric_limits<uint16_t>::max();
constexpr std::size_t kMaxIdLength = 64;
constexpr std::size_t kMinSecretBytes = 16;
constexpr uint32_t kMinHeartbeatMs = 10;
constexpr uint32_t kMaxReplication = 7;
constexpr uint32_t kMaxGroups = 1024;

// The hash functions below decide where every agent lives and which member
// owns each shard: they are part of the on-disk format. Never change them.

// FNV-1a, 64-bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3,
// over the bytes as unsigned char.
uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// MurmurHash3's fmix64 finaliser. FNV-1a alone barely changes the high bits
// for names that differ only in their last byte ("agent-1", "agent-2"); this
// spreads every input bit over the whole word before we take a modulus.
uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

// Rendezvous score of a member (by fnv1a64 of its id) for a shard. The shard
// is spread by the 64-bit golden ratio so neighbouring shards differ in many
// bits before mixing.
uint64_t rendezvous_score(uint64_t member_hash, uint32_t shard) {
  return fmix64(member_hash ^ (static_cast<uint64_t>(shard) * 0x9E3779B97F4A7C15ULL));
}

// Rendezvous score of a member for a replicated group: salted apart from
// the shard owner's score, so a group's preferred leader is not simply the
// owner of its first shard.
uint64_t group_score(uint64_t member_hash, uint32_t group) {
  return fmix64(member_hash ^ ((static_cast<uint64_t>(group) + 1) * 0xC2B2AE3D27D4EB4FULL));
}

std::string in_quotes(std::string_view key) {
  return "\"" + std::string(key) + "\"";
}

// Member and cluster ids: letters, digits, '-', '_' and '.', 1 to 64 bytes.
status validate_id(std::string_view id, const std::string& what) {
  if (id.empty()) return error(code::invalid_argument, what + " is empty");
  if (id.size() > kMaxIdLength)
    return error(code::invalid_argument, what + " '" + std::string(id) + "' is longer than " +
                                             std::to_string(kMaxIdLength) + " characters");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok)
      return error(
          code::invalid_argument,
          what + " '" + std::string(id) + "' may contain only letters, digits, '-', '_' and '.'");
  }
  return status::ok();
}

// Each member well formed, ids unique, and no more members than owner_ can
// index.
status validate_members(const std::vector<cluster_member>& members) {
  if (members.size() > kMaxMembers)
    return error(code::invalid_argument, "at most " + std::to_string(kMaxMembers) +
                                             " members are supported, got " +
                                             std::to_string(members.size()));
  std::set<std::string_view> ids;
  for (const auto& m : members) {
    KEEL_TRY(validate_member(m));
    if (!ids.insert(m.id).second)
      return error(code::invalid_argument, "member id '" + m.id + "' appears twice");
  }
  return status::ok();
}

result<std::string> read_secret_file(const std::string& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(code::not_found, where + ": cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return error(code::io_error, where + ": cannot read " + path);
  std::string s = ss.str();
  // Editors and `echo` add a newline; it is not part of the secret.
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

status read_tls(const json& v, const std::string& where, cluster_tls& out) {
  if (!v.is_object()) return error(code::invalid_argument, where + ": expected a JSON object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    std::string at = where + "." + in_quotes(k);
    status s;
    if (k == "certificate")
      s = read_string(it.value(), at, out.certificate);
    else if (k == "key")
      s = read_string(it.value(), at, out.key);
    else if (k == "ca")
      s = read_string(it.value(), at, out.ca);
    else
      s = error(code::invalid_argument, where + ": unknown key " + in_quotes(k));
    KEEL_TRY(s);
  }
  return status::ok();
}

status read_members(const json& v, const std::string& where, std::vector<cluster_member>& out) {
  if (!v.is_array()) return error(code::invalid_argument, where + ": expected an array");
  out.clear();
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    auto m = member_from_json(v[i], where + "[" + std::to_string(i) + "]");
    if (!m) return m.error();
    out.push_back(std::move(m).value());
  }
  return status::ok();
}

}  // namespace

result<cluster_config> cluster_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) return error(code::invalid_argument, source + ": expected a JSON object");
  cluster_config c;
  bool has_secret = false;
  std::optional<std::string> secret_file;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    std::string where = source + ": " + in_quotes(k);
    status s;
    if (k == "cluster_id")
      s = read_string(v, where, c.cluster_id);
    else if (k == "shards")
      s = read_uint(v, where, c.shards);
    else if (k == "secret") {
      s = read_string(v, where, c.secret);
      has_secret = true;
    } else if (k == "secret_file") {
      std::string path;
      s = read_string(v, where, path);
      if (s) secret_file = std::move(path);
    } else if (k == "heartbeat_ms")
      s = read_uint(v, where, c.heartbeat_ms);
    else if (k == "connection_timeout_ms")
      s = read_uint(v, where, c.connection_timeout_ms);
    else if (k == "reconnect_min_ms")
      s = read_uint(v, where, c.reconnect_min_ms);
    else if (k == "reconnect_max_ms")
      s = read_uint(v, where, c.reconnect_max_ms);
    else if (k == "forward_timeout_ms")
      s = read_uint(v, where, c.forward_timeout_ms);
    else if (k == "tls")
      s = read_tls(v, where, c.tls);
    else if (k == "replication")
      s = read_uint(v, where, c.replication);
    else if (k == "groups")
      s = read_uint(v, where, c.groups);
    else if (k == "election_timeout_ms")
      s = read_uint(v, where, c.election_timeout_ms);
    else if (k == "raft_heartbeat_ms")
      s = read_uint(v, where, c.raft_heartbeat_ms);
    else if (k == "leader_wait_ms")
      s = read_uint(v, where, c.leader_wait_ms);
    else if (k == "members")
      s = read_members(v, where, c.members);
    else
      s = error(code::invalid_argument, source + ": unknown key " + in_quotes(k));
    KEEL_TRY(s);
  }
  if (!j.contains("cluster_id"))
    return error(code::invalid_argument, source + ": missing \"cluster_id\"");
  if (has_secret && secret_file)
    return error(code::invalid_argument,
                 source + ": set either \"secret\" or \"secret_file\", not both");
  if (!has_secret && !secret_file)
    return error(code::invalid_argument, source + ": missing \"secret\" (or \"secret_file\")");
  if (secret_file) {
    auto s = read_secret_file(*secret_file, source + ": \"secret_file\"");
    if (!s) return s.error();
    c.secret = std::move(s).value();
  }
  if (!j.contains("members"))
    return error(code::invalid_argument, source + ": missing \"members\"");
  status v = validate(c);
  if (!v) return error(v.error_code(), source + ": " + v.message());
  return c;
}

result<cluster_config> load_cluster_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return error(code::not_found, "cannot open cluster config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return error(code::invalid_argument, path + ": not valid JSON");
  return cluster_from_json(j, path);
}

status validate_member(const cluster_member& m) {
  KEEL_TRY(validate_id(m.id, "member id"));
  std::string who = "member '" + m.id + "': ";
  if (m.host.empty()) return error(code::invalid_argument, who + "host is empty");
  if (m.cluster_port == 0) return error(code::invalid_argument, who + "cluster_port is not set");
  if (m.http_host.empty()) return error(code::invalid_argument, who + "http_host is empty");
  if (m.http_port == 0) return error(code::invalid_argument, who + "http_port is not set");
  return status::ok();
}

status validate(const cluster_config& c) {
  KEEL_TRY(validate_id(c.cluster_id, "cluster_id"));
  if (c.secret.size() < kMinSecretBytes)
    return error(code::invalid_argument, "secret must be at least " +
                                             std::to_string(kMinSecretBytes) + " bytes, got " +
                                             std::to_string(c.secret.size()));
  if (c.shards < 1 || c.shards > kMaxShards)
    return error(code::invalid_argument, "shards must be from 1 to " + std::to_string(kMaxShards) +
                                             ", got " + std::to_string(c.shards));
  if (c.heartbeat_ms < kMinHeartbeatMs)
    return error(code::invalid_argument,
                 "heartbeat_ms must be at least " + std::to_string(kMinHeartbeatMs));
  if (c.connection_timeout_ms <= c.heartbeat_ms)
    return error(code::invalid_argument, "connection_timeout_ms (" +
                                             std::to_string(c.connection_timeout_ms) +
                                             ") must be greater than heartbeat_ms (" +
                                             std::to_string(c.heartbeat_ms) + ")");
  if (c.reconnect_min_ms < 1)
    return error(code::invalid_argument, "reconnect_min_ms must be at least 1");
  if (c.reconnect_min_ms > c.reconnect_max_ms)
    return error(code::invalid_argument, "reconnect_min_ms (" + std::to_string(c.reconnect_min_ms) +
                                             ") must not exceed reconnect_max_ms (" +
                                             std::to_string(c.reconnect_max_ms) + ")");
  if (c.replication > kMaxReplication)
    return error(code::invalid_argument, "replication must be from 0 (off) to " +
                                             std::to_string(kMaxReplication) + ", got " +
                                             std::to_string(c.replication));
  if (c.replication > c.members.size())
    return error(code::invalid_argument, "replication " + std::to_string(c.replication) +
                                             " needs at least as many members, got " +
                                             std::to_string(c.members.size()));
  if (c.groups < 1 || c.groups > kMaxGroups || c.groups > c.shards)
    return error(code::invalid_argument, "groups must be from 1 to " + std::to_string(kMaxGroups) +
                                             " and at most shards (" + std::to_string(c.shards) +
                                             "), got " + std::to_string(c.groups));
  if (c.raft_heartbeat_ms < kMinHeartbeatMs)
    return error(code::invalid_argument,
                 "raft_heartbeat_ms must be at least " + std::to_string(kMinHeartbeatMs));
  if (c.election_timeout_ms < 3 * c.raft_heartbeat_ms)
    return error(code::invalid_argument, "election_timeout_ms (" +
                                             std::to_string(c.election_timeout_ms) +
                                             ") must be at least three raft_heartbeat_ms (" +
                                             std::to_string(c.raft_heartbeat_ms) + ")");
  // enabled() looks at the certificate only; a half-configured TLS must not
  // silently fall back to plain text or fail later at connect time.
  bool any_tls = !c.tls.certificate.empty() || !c.tls.key.empty() || !c.tls.ca.empty();
  bool all_tls = !c.tls.certificate.empty() && !c.tls.key.empty() && !c.tls.ca.empty();
  if (any_tls && !all_tls)
    return error(code::invalid_argument, "tls: set certificate, key and ca together, or none");
  if (c.members.empty())
    return error(code::invalid_argument, "members: at least one member is required");
  KEEL_TRY(validate_members(c.members));
  std::set<std::pair<std::string_view, uint16_t>> endpoints;
  for (const auto& m : c.members) {
    if (!endpoints.insert({m.host, m.cluster_port}).second)
      return error(code::invalid_argument, "member '" + m.id + "': cluster address " + m.host +
                                               ":" + std::to_string(m.cluster_port) +
                                               " is used by another member");
  }
  return status::ok();
}

json to_json(const cluster_member& m) {
  return json{{"id", m.id},
              {"host", m.host},
              {"cluster_port", m.cluster_port},
              {"http_host", m.http_host},
              {"http_port", m.http_port}};
}

result<cluster_member> member_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) return error(code::invalid_argument, source + ": expected a JSON object");
  cluster_member m;
  bool has_http_host = false;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    std::string where = source + ": " + in_quotes(k);
    status s;
    if (k == "id")
      s = read_string(v, where, m.id);
    else if (k == "host")
      s = read_string(v, where, m.host);
    else if (k == "cluster_port")
      s = read_uint(v, where, m.cluster_port);
    else if (k == "http_host") {
      s = read_string(v, where, m.http_host);
      has_http_host = true;
    } else if (k == "http_port")
      s = read_uint(v, where, m.http_port);
    else
      s = error(code::invalid_argument, source + ": unknown key " + in_quotes(k));
    KEEL_TRY(s);
  }
  for (const char* required : {"id", "cluster_port", "http_port"})
    if (!j.contains(required))
      return error(code::invalid_argument, source + ": missing " + in_quotes(required));
  if (!has_http_host) m.http_host = m.host;
  status v = validate_member(m);
  if (!v) return error(v.error_code(), source + ": " + v.message());
  return m;
}

uint32_t shard_of(std::string_view name, uint32_t shards) {
  assert(shards >= 1);
  if (shards == 0) return 0;
  // fmix64(fnv1a64(name)) mod shards; see fnv1a64 and fmix64 above.
  return static_cast<uint32_t>(fmix64(fnv1a64(name)) % shards);
}

shard_map::shard_map(uint64_t epoch, uint32_t shards, std::vector<cluster_member> members)
    : epoch_(epoch), shards_(shards), members_(std::move(members)) {
  assert(shards_ >= 1);
  assert(members_.size() <= kMaxMembers);
  // Sorted so nodes that learned the members in different orders agree on
  // the indexes in owner_ and on tie-breaks.
  std::sort(members_.begin(), members_.end(),
            [](const cluster_member& a, const cluster_member& b) { return a.id < b.id; });
  assert(std::adjacent_find(members_.begin(), members_.end(),
                            [](const cluster_member& a, const cluster_member& b) {
                              return a.id == b.id;
                            }) == members_.end());
  place();
}

void shard_map::place() {
  owner_.clear();
  if (members_.empty()) return;
  std::vector<uint64_t> hashes;
  hashes.reserve(members_.size());
  for (const auto& m : members_) hashes.push_back(fnv1a64(m.id));
  owner_.resize(shards_);
  for (uint32_t s = 0; s < shards_; ++s) {
    // Strictly greater: on a tie the member first in id order wins.
    std::size_t best = 0;
    uint64_t best_score = rendezvous_score(hashes[0], s);
    for (std::size_t i = 1; i < hashes.size(); ++i) {
      uint64_t score = rendezvous_score(hashes[i], s);
      if (score > best_score) {
        best = i;
        best_score = score;
      }
    }
    owner_[s] = static_cast<uint16_t>(best);
  }
}

const cluster_member* shard_map::find(std::string_view id) const {
  auto it =
      std::lower_bound(members_.begin(), members_.end(), id,
                       [](const cluster_member& m, std::string_view key) { return m.id < key; });
  if (it == members_.end() || it->id != id) return nullptr;
  return &*it;
}

const std::string& shard_map::owner(uint32_t shard) const {
  static const std::string no_owner;
  assert(shard < shards_);
  if (members_.empty() || shard >= owner_.size()) return no_owner;
  return members_[owner_[shard]].id;
}

std::vector<uint32_t> shard_map::shards_of(std::string_view id) const {
  std::vector<uint32_t> out;
  const cluster_member* m = find(id);
  if (m == nullptr) return out;
  auto index = static_cast<uint16_t>(m - members_.data());
  for (uint32_t s = 0; s < owner_.size(); ++s)
    if (owner_[s] == index) out.push_back(s);
  return out;
}

shard_map shard_map::with_member(const cluster_member& m) const {
  std::vector<cluster_member> members = members_;
  auto it = std::find_if(members.begin(), members.end(),
                         [&](const cluster_member& x) { return x.id == m.id; });
  if (it != members.end())
    *it = m;
  else
    members.push_back(m);
  return shard_map(epoch_ + 1, shards_, std::move(members));
}

shard_map shard_map::without_member(std::string_view id) const {
  std::vector<cluster_member> members;
  members.reserve(members_.size());
  for (const auto& m : members_)
    if (m.id != id) members.push_back(m);
  return shard_map(epoch_ + 1, shards_, std::move(members));
}

json shard_map::to_json() const {
  json members = json::array();
  for (const auto& m : members_) members.push_back(config::to_json(m));
  return json{{"epoch", epoch_}, {"shards", shards_}, {"members", std::move(members)}};
}

result<shard_map> shard_map::from_json(const json& j, std::string_view what) {
  std::string source(what);
  if (!j.is_object()) return error(code::invalid_argument, source + ": expected a JSON object");
  uint64_t epoch = 0;
  uint32_t shards = 0;
  std::vector<cluster_member> members;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    std::string where = source + ": " + in_quotes(k);
    status s;
    if (k == "epoch")
      s = read_uint(it.value(), where, epoch);
    else if (k == "shards")
      s = read_uint(it.value(), where, shards);
    else if (k == "members")
      s = read_members(it.value(), where, members);
    else
      s = error(code::invalid_argument, source + ": unknown key " + in_quotes(k));
    KEEL_TRY(s);
  }
  for (const char* required : {"epoch", "shards", "members"})
    if (!j.contains(required))
      return error(code::invalid_argument, source + ": missing " + in_quotes(required));
  if (shards < 1 || shards > kMaxShards)
    return error(code::invalid_argument, source + ": \"shards\" must be from 1 to " +
                                             std::to_string(kMaxShards) + ", got " +
                                             std::to_string(shards));
  // An empty member list is a valid map (no owners yet); the constructor's
  // other REQUIRES are checked here because the input came from outside.
  status v = validate_members(members);
  if (!v) return error(v.error_code(), source + ": " + v.message());
  return shard_map(epoch, shards, std::move(members));
}

std::vector<std::string> group_replicas(const std::vector<cluster_member>& members, uint32_t group,
                                        uint32_t replication) {
  std::vector<std::pair<uint64_t, const std::string*>> ranked;
  ranked.reserve(members.size());
  for (const auto& m : members) ranked.emplace_back(group_score(fnv1a64(m.id), group), &m.id);
  const std::size_t n = std::min<std::size_t>(replication, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(n), ranked.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : *a.second < *b.second;
                    });
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(*ranked[i].second);
  return out;
}

std::vector<shard_move> moves_between(const shard_map& before, const shard_map& after) {
  assert(before.shards() == after.shards());
  std::vector<shard_move> out;
  uint32_t shards = std::min(before.shards(), after.shards());
  for (uint32_t s = 0; s < shards; ++s) {
    const std::string& from = before.owner(s);
    const std::string& to = after.owner(s);
    if (from != to) out.push_back({s, from, to});
  }
  return out;
}

}  // namespace keel::config
