#pragma once
// HTTP API v1: routes plain requests (http/server.hpp) onto a
// keel::actors::node and renders its answers as JSON. No Beast here.
//
// Every error is {"error": {"code", "message"}} with the HTTP status of
// http_status_for(code). Short blocking node reads (ledger pages, lists)
// run on the calling thread; whole-ledger work (audit, replay, fork,
// import, compaction) on two threads of the api's own; everything else
// answers from node callbacks.
// Thread-safety: handle() may be called concurrently from many threads.
// Lifetime: the node must outlive every respond_fn handed to handle(), i.e.
// stop the HTTP server before the node.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/node.hpp"
#include "base/status.hpp"
#include "http/server.hpp"

namespace keel::net {

class token_store;

// invalid_argument 400, not_found 404, already_exists and conflict 409,
// too_large 413, unauthorized 401, unavailable 503, timeout 504, no_space 507,
// else 500.
unsigned http_status_for(code c);

// The error body and status for `s`. REQUIRES: !s.is_ok().
http_response error_response(const status& s);

// Runs `fn` once after `delay` on a thread that may call a respond_fn; may
// drop `fn` unrun when shutting down. http_server::run_after fits.
using defer_fn = std::function<void(std::chrono::milliseconds delay, std::function<void()> fn)>;

// A message or signal for an agent on another node, as the API hands it to
// the cluster.
struct remote_delivery {
  std::string name;
  persistence::inbox_kind kind = persistence::inbox_kind::message;
  std::string id;  // message id ("" = the cluster assigns one); signal name
  std::string from;
  nlohmann::json body;  // message body or signal payload
};

// The cluster as the API sees it; net/cluster/node.hpp implements it.
// Without one the node serves every agent itself.
class api_cluster {
 public:
  virtual ~api_cluster() = default;
  // "" when `name` is served here, else the id of the member that owns it.
  virtual std::string owner_elsewhere(std::string_view name) const = 0;
  // Passes `req` to `owner` and answers with the owner's response; 503
  // naming the owner when it cannot be reached.
  virtual void forward(const std::string& owner, http_request req, respond_fn respond) = 0;
  // Accepts `d` into this node's durable outbox, then delivers it.
  // `accepted` gets the owner's acknowledgement, or queued = true when the
  // owner cannot take it now; `replied` (may be empty) the agent's reply.
  virtual void deliver(remote_delivery d, actors::callback<actors::send_ack> accepted,
                       actors::callback<actors::agent_reply> replied) = 0;
  // The HTTP base URL of member `id` ("http://host:port"; https:// when
  // the members' APIs speak TLS); "" if unknown.
  // Streams are not forwarded: a client is redirected to the owner.
  virtual std::string http_url(const std::string& id) const = 0;
  // Whether this node's outbox still holds messages for `name`.
  virtual bool has_queued(std::string_view name) const = 0;
  // /v1/cluster[/...]: status and membership changes.
  virtual void cluster_route(const http_request& req, std::vector<std::string> segments,
                             respond_fn respond) = 0;
  // GET /v1/agents on every member, merged. `local_list` lists this node.
  virtual void list_all(const http_request& req, respond_fn respond) = 0;
  // This node's member id: what listings and views name as an agent's node.
  virtual std::string self_id() const = 0;
  // Replicated: a message or signal is acknowledged only by the leader of
  // its agent's group, once a majority has it, so it is forwarded there
  // like any other call instead of being queued in this node's outbox.
  virtual bool replicated() const { return false; }
  // Replicated: runs `then` once everything acknowledged in `name`'s group
  // before the call is applied on this member and it still leads the group
  // (a read index), or with unavailable. Never on the caller's stack.
  virtual void read_index(std::string_view name, std::function<void(const status&)> then) {
    (void)name;
    then(status::ok());
  }
};

// What a single node (no cluster) names as its agents' node.
inline constexpr const char* single_node_id = "local";

// Requests a node forwards to the owner carry this header (the sender's
// member id); the owner answers them itself and never forwards them again.
inline constexpr const char* forwarded_header = "x-keel-forwarded";

struct api_options {
  // GET /v1/agents/{name}/ledger: events per page. Default 1000, max 10000.
  std::size_t ledger_default_limit = 1000;
  std::size_t ledger_max_limit = 10'000;
  // ... and a page (also of the ledger stream) takes no further event once
  // it holds this many bytes; the answer's "next" says where to go on.
  // Default 4 MiB (node_config::max_page_bytes in keeld).
  uint64_t max_page_bytes = 4ull << 20;
  // GET /v1/agents: agents per page. Default 100, max 1000.
  std::size_t list_default_limit = 100;
  std::size_t list_max_limit = 1000;
  // Largest ?wait=MS on messages and signals. Default 60 s.
  uint64_t max_wait_ms = 60'000;
  // The cluster this node is part of; null for a single node. Must outlive
  // the api.
  api_cluster* cluster = nullptr;
  // The node's API tokens, for /v1/tokens; null: none kept. Authorization
  // itself uses each request's principal (http_request::who). Must outlive
  // the api.
  token_store* tokens = nullptr;
  // More Prometheus text appended to GET /metrics (the HTTP server's own
  // counters); may be empty.
  std::function<std::string()> extra_metrics;
};

class api {
 public:
  // REQUIRES: `node` outlives this api and every callback it started.
  api(actors::node& node, defer_fn defer, api_options opts = {});
  ~api();
  api(const api&) = delete;
  api& operator=(const api&) = delete;

  // Answers `req` through `respond` exactly once, now or from another thread.
  // Never throws. A client's request: any forwarded_header it carries is
  // dropped, so no client can pass for a member.
  void handle(http_request req, respond_fn respond);
  // A request another member forwarded over the authenticated cluster
  // transport (`from`: its id). Only these reach /v1/internal/...
  void handle_forwarded(http_request req, const std::string& from, respond_fn respond);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
