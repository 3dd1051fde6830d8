#pragma once
// Internal to net/api/: the API's state and routes (api::impl), shared by
// api.cpp (routing, agents, health) and messages.cpp (messages, signals
// and the waits for their replies). Beast-free.

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "actors/effect_pool.hpp"
#include "actors/node.hpp"
#include "base/clock.hpp"
#include "net/api/api.hpp"
#include "net/api/support.hpp"

namespace keel::net {

namespace api_detail {

// Where the agent stands, for a wait that ran out: `done` gets what
// standing_of() says, or null when it cannot be had.
using standing_fn = std::function<void(std::function<void(json)> done)>;

// A message or signal on its way: answered when the acknowledgement is in
// and, with ?wait, when the reply is too or the wait ran out.
struct waiter {
  std::mutex mu;
  bool done = false;
  std::optional<actors::send_ack> ack;
  std::optional<json> reply;
  respond_fn respond;
  uint64_t wait_ms = 0;
  std::shared_ptr<const defer_fn> defer;
  standing_fn standing;
};
using waiter_ptr = std::shared_ptr<waiter>;

}  // namespace api_detail

// The routes' helpers (support.hpp) by their plain names, in the two files
// that include this one.
using namespace api_detail;

struct api::impl {
  actors::node& node;
  std::shared_ptr<const defer_fn> defer;
  api_options opts;
  int64_t started_ms = wall_ms();
  // Whole-ledger work (audit, replay, fork, import, compaction) reads and
  // computes for as long as a ledger is long: on threads of its own, so
  // the server's threads keep taking requests.
  std::unique_ptr<actors::effect_pool> ledger_jobs = std::make_unique<actors::effect_pool>(2);

  void route(const http_request& req, const respond_fn& respond);
  // `read_indexed`: a replicated read that already waited for its group's
  // read index (api_cluster::read_index).
  void agent_route(const http_request& req, const target& t, const respond_fn& respond,
                   bool read_indexed = false);

  void spawn(const http_request& req, const respond_fn& respond);
  void get(std::string name, const respond_fn& respond);
  void terminate(std::string name, const http_request& req, const respond_fn& respond);
  void message(std::string name, const http_request& req, const target& t,
               const respond_fn& respond);
  void signal(std::string name, std::string sig, const http_request& req, const target& t,
              const respond_fn& respond);
  void control(std::string name, const std::string& action, const http_request& req,
               const target& t, const respond_fn& respond);
  void send_signal(std::string name, std::string sig, json payload, const http_request& req,
                   const target& t, const respond_fn& respond);
  void query(std::string name, const http_request& req, const respond_fn& respond);
  void cancel(std::string name, const http_request& req, const target& t,
              const respond_fn& respond);
  void ledger(const std::string& name, const target& t, const respond_fn& respond);
  void health(const respond_fn& respond);

  // Messages for `name` still wait in this node's outbox (it became the
  // owner while they were queued): new ones queue behind them, in order.
  bool queued_here(const std::string& name, const http_request& req) const {
    return opts.cluster && req.header(forwarded_header).empty() && opts.cluster->has_queued(name);
  }

  // A message or signal for `name` that this node's outbox takes (the
  // owner is elsewhere, or earlier ones still wait there). Never in a
  // replicated cluster: there only the group's leader acknowledges, and a
  // call that reached here after its leadership moved is refused by the
  // agent (503) rather than queued.
  bool goes_through_outbox(const std::string& name, const http_request& req) const {
    if (!opts.cluster || opts.cluster->replicated()) return false;
    return !owner_elsewhere(name, req).empty() || queued_here(name, req);
  }

  // "" when this node serves `name`; else the owner's id. A forwarded
  // request for a name not served here is a conflict of maps: the sender
  // must retry, never forward again (no loops).
  std::string owner_elsewhere(const std::string& name, const http_request& req) const {
    if (!opts.cluster) return {};
    std::string owner = opts.cluster->owner_elsewhere(name);
    if (!owner.empty() && !req.header(forwarded_header).empty()) return {};
    return owner;
  }

  // Answers `req` with `route` on the api's own threads.
  void on_jobs(const http_request& req, const respond_fn& respond,
               void (*route)(actors::node&, const http_request&, const target&,
                             const respond_fn&)) {
    bool queued = ledger_jobs->submit([this, req, respond, route] {
      guarded(respond, [&] {
        // Parsed again: the target's views point into this copy of it.
        auto own = parse_target(req.target);
        if (!own) return respond(error_response(own.error()));
        route(node, req, *own, respond);
      });
    });
    if (!queued) respond(fail(503, "unavailable", "node is shutting down"));
  }

  // A waiter for ?wait=MS on agent `name`, or the error for a bad one.
  result<waiter_ptr> make_waiter(const std::string& name, const http_request& req, const target& t,
                                 const respond_fn& respond);

  // The id listings and views give as an agent's node: this member's, or
  // single_node_id.
  std::string node_id() const { return opts.cluster ? opts.cluster->self_id() : single_node_id; }
};

}  // namespace keel::net
