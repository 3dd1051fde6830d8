#pragma once
// Internal to net/cluster/: the state of a cluster_node, shared by node.cpp
// (placement, forwarding, outbox, status) and change.cpp (adding and
// removing members: shard handoffs and epochs).

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/effect_pool.hpp"
#include "net/api/support.hpp"
#include "net/cluster/node.hpp"
#include "net/cluster/outbox.hpp"
#include "net/cluster/replication.hpp"
#include "net/cluster/transport.hpp"

namespace keel::net {

// A shard this node hands to another during a membership change.
struct shard_handoff {
  std::string to;
  bool handed = false;  // the receiver has it all; the data here is gone
};

// meta keys: the current shard map, the map a change moves to, and the
// shards this node is handing off (+ 4-byte shard, big endian).
inline constexpr const char* map_key = "cluster/map";
inline constexpr const char* next_key = "cluster/next";
inline constexpr const char* handoff_prefix = "cluster/out/";

using json = nlohmann::json;

struct cluster_node::impl {
  impl(actors::node& n, options o) : node(n), opts(std::move(o)) {}

  actors::node& node;
  options opts;
  config::cluster_member self;
  std::atomic<api*> http{nullptr};
  std::atomic<bool> ready{false};

  mutable std::mutex map_mu;
  std::shared_ptr<const config::shard_map> map;

  std::unique_ptr<cluster_transport> transport;
  std::unique_ptr<cluster_outbox> outbox;
  actors::effect_pool workers{4};

  // Senders waiting for an agent's reply to a message they put in the
  // outbox, by (agent, message id).
  // Entries past their deadline (the reply never came: the owner crashed,
  // or the message waited in the outbox) are dropped as new ones arrive.
  struct reply_waiter {
    int64_t deadline_ms = 0;
    actors::callback<actors::agent_reply> cb;
  };
  std::mutex replies_mu;
  std::map<std::string, reply_waiter> replies;  // by outbox_item::ref
  std::atomic<uint64_t> next_ref{0};

  // A membership change in progress (change.cpp): the map being
  // moved to, the shards leaving this node, and the thread that moves them
  // and commits the change once every member is ready.
  std::shared_ptr<const config::shard_map> next;
  std::map<uint32_t, shard_handoff> outgoing;
  std::condition_variable change_cv;
  std::mutex commit_mu;  // one commit at a time (the loop and a peer's call)
  std::thread change_thread;
  bool change_stop = false;

  keel::status load_change();
  void start_change_thread();
  void stop_change_thread();
  void change_loop();
  bool run_handoff(uint32_t shard, const std::string& to, uint64_t epoch);
  bool locally_ready();
  keel::status prepare(std::shared_ptr<const config::shard_map> target);
  keel::status commit(const config::shard_map& target);
  void begin_change(std::shared_ptr<const config::shard_map> target, respond_fn respond);
  void on_change_call(const std::string& op, const nlohmann::json& msg,
                      transport_handlers::respond_fn respond);
  nlohmann::json change_status();
  result<std::string> call_sync(const std::string& to, const nlohmann::json& msg,
                                uint32_t timeout_ms);

  std::atomic<uint64_t> forwarded{0};
  std::atomic<uint64_t> delivered_in{0};
  std::atomic<bool> stopped{false};

  std::shared_ptr<const config::shard_map> current_map() const {
    std::lock_guard lk(map_mu);
    return map;
  }

  std::string owner_of(std::string_view name) const {
    if (opts.repl) return leader_here_or_known(opts.repl->group_of(name));
    return current_map()->owner_of(name);
  }

  // Replicated: this node when it leads `g` (ready), else the leader it
  // knows of ("" during an election).
  std::string leader_here_or_known(uint32_t g) const {
    if (opts.repl->leading(g)) return self.id;
    return opts.repl->leader_of(g);
  }
  // Calls for an agent whose group has no leader reachable from here wait
  // for one (wait_for_leader); owner_elsewhere names them with this prefix
  // and the group, which no member id can hold.
  static constexpr char pending_leader = '\x01';
  void wait_for_leader(uint32_t g, http_request req, respond_fn respond);
  // Passes `req` to member `owner` and answers with its response (503
  // naming it when it cannot be reached, 504 when it does not answer).
  void forward_to(const std::string& owner, http_request req, respond_fn respond);
  // What this member holds of group g, read from its own store (no leader
  // involved): each agent of the group with its last seq and the hash at
  // the head of its chain, and the group's applied index here. Replicas
  // that applied the same index hold the same digest.
  result<json> group_digest(uint32_t g);
  std::mutex leader_mu;
  std::condition_variable leader_cv;  // a group here gained or lost its leader
  // Leaders of groups this member holds no copy of, as a replica named
  // them, and when (kept for a second: a stale one costs a 503 and a retry).
  struct leader_hint {
    std::string member;
    int64_t at_ms = 0;
  };
  mutable std::mutex hints_mu;
  std::map<uint32_t, leader_hint> hints;
  std::string hinted_leader(uint32_t g) const;
  // The leader of group g as this member knows it: its own view when it
  // holds a copy; else a fresh hint, or with `ask` what the group's
  // replicas answer now. "" when nobody knows.
  std::string known_leader(uint32_t g, bool ask);
  // The groups this member replicates, as GET /v1/cluster shows them.
  json groups_json() const;
  // Asks the group's replicas who leads it; "" when none knows.
  std::string ask_leader(uint32_t g);

  // Where calls for `name` go: its owner, or for a node still joining (no
  // map yet) the routing map a member gave it.
  std::string route_to(std::string_view name) const {
    if (opts.repl) return leader_here_or_known(opts.repl->group_of(name));
    std::lock_guard lk(map_mu);
    if (!map->empty()) return map->owner_of(name);
    if (routing && !routing->empty()) return routing->owner_of(name);
    return {};
  }
  std::shared_ptr<const config::shard_map> routing;
  void fetch_routing_map(const std::string& peer);

  // Whether this node serves `name` now: it owns the shard under its map
  // and is not handing the shard away.
  bool serves(std::string_view name) const {
    if (opts.repl) return opts.repl->leading(opts.repl->group_of(name)).has_value();
    std::lock_guard lk(map_mu);
    uint32_t shard = config::shard_of(name, map->shards());
    return map->owner(shard) == self.id && outgoing.count(shard) == 0;
  }

  // Peer calls, as JSON with an "op".
  void on_call(const std::string& from, std::string payload,
               transport_handlers::respond_fn respond);
  void on_http(json msg, transport_handlers::respond_fn respond);
  void on_deliver(const std::string& from, const json& msg, transport_handlers::respond_fn respond);
  void on_reply(const json& msg);

  // Hands a batch from the outbox to its owner (a peer, or this node when
  // the shard map has moved the agents here).
  void deliver_batch(const std::string& to, std::vector<outbox_item> batch,
                     std::function<void(result<std::vector<delivery_ack>>)> done);
  void deliver_here(const std::string& from, std::vector<outbox_item> items,
                    std::function<void(std::vector<delivery_ack>)> done);

  void call(const std::string& to, const json& msg, uint32_t timeout_ms,
            std::function<void(result<std::string>)> done) {
    transport->call(to, api_detail::dump(msg), timeout_ms, std::move(done));
  }
};

}  // namespace keel::net
