#pragma once
// A node as a member of a cluster: placement by name, forwarding, the
// durable outbox and membership. It sits between the HTTP API and the node:
//
// - the API asks it who serves a name (api_cluster); calls for agents
//   elsewhere are forwarded to their owner over the cluster transport and
//   answered with the owner's answer; messages and signals go through this
//   node's durable outbox, so they are accepted (202, "queued": true) even
//   while the owner is down and delivered exactly once when it returns;
// - the node asks it where agent-to-agent messages and spawns go
//   (actors::remote_router);
// - peers' calls arrive here: forwarded HTTP requests, outbox deliveries,
//   replies to waiting senders, shard map changes and shard handoffs.
//
// Thread-safety: all methods are thread-safe.
// Lifetime: stop() before the node and the api are stopped; start it after
// both exist (attach the api before traffic).

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/node.hpp"
#include "base/status.hpp"
#include "config/cluster_config.hpp"
#include "net/api/api.hpp"

namespace keel::net {

class replication;

class cluster_node final : public actors::remote_router, public api_cluster {
 public:
  struct options {
    config::cluster_config cluster;
    // This node's member id. It must be in cluster.members unless `join`.
    std::string self;
    // Joining an existing cluster: serve nothing until a member adds this
    // node (keel cluster add-node) and hands it its shards.
    bool join = false;
    // This node's address when it is not in cluster.members (a joiner).
    std::optional<config::cluster_member> self_member;
    // The scheme of the members' HTTP APIs, for the URLs clients are sent
    // to: "https" when they serve TLS (members are configured alike).
    std::string http_scheme = "http";
    // Replicated (cluster.replication > 0): the seam the node's shells
    // write through, made before the node; this member starts its groups
    // and routes each agent to its group's leader. Must outlive the member.
    replication* repl = nullptr;
  };

  // Loads the shard map (stored by an earlier run, or the config's members
  // at epoch 1), the outbox, starts the transport and sets itself as the
  // node's router before it takes any peer's call. Errors: invalid
  // argument (self not a member), io_error (cannot bind the cluster port),
  // corruption (stored state).
  static result<std::shared_ptr<cluster_node>> start(actors::node& node, options opts);
  ~cluster_node() override;

  // The API that answers forwarded requests. REQUIRES: before traffic.
  void attach(api& a);
  uint16_t cluster_port() const;
  nlohmann::json status();
  void stop();

  // actors::remote_router
  bool is_local(std::string_view name) const override;
  void send(std::string name, actors::inbound_message m,
            actors::callback<actors::send_ack> accepted) override;
  void spawn(std::string name, std::string type, nlohmann::json input,
             actors::callback<actors::agent_view> done) override;
  std::string elsewhere(std::string_view name) const override;

  // api_cluster
  std::string owner_elsewhere(std::string_view name) const override;
  void forward(const std::string& owner, http_request req, respond_fn respond) override;
  void deliver(remote_delivery d, actors::callback<actors::send_ack> accepted,
               actors::callback<actors::agent_reply> replied) override;
  void cluster_route(const http_request& req, std::vector<std::string> segments,
                     respond_fn respond) override;
  void list_all(const http_request& req, respond_fn respond) override;
  std::string self_id() const override;
  bool has_queued(std::string_view name) const override;
  std::string http_url(const std::string& id) const override;
  bool replicated() const override;
  void read_index(std::string_view name, std::function<void(const keel::status&)> then) override;

  struct impl;

 private:
  explicit cluster_node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
