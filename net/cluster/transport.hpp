#pragma once
// Node-to-node calls over CAF's middleman (libcaf_io; libcaf_openssl when
// the cluster config names TLS files). No CAF in this header.
//
// Each node publishes one actor on its cluster port and connects to every
// other member it knows. A connection is usable only after a handshake in
// which both sides prove they hold the cluster's secret (HMAC-SHA256 over
// fresh nonces; the secret never crosses the wire) and name the same
// cluster id; anything a peer sends before that, or a peer that fails it, is
// refused and logged. Heartbeats (heartbeat_ms / connection_timeout_ms) mark
// a silent or frozen peer down; a peer that goes away is reconnected with
// doubling backoff (reconnect_min_ms .. reconnect_max_ms).
//
// The payload of every call is an opaque string (the cluster layer encodes
// JSON); a call is answered by one reply or fails with unavailable (peer not
// connected), timeout, or the error the peer's handler returned. A cast is
// one-way (replicated groups' raft messages, which the protocol itself
// retries): no reply, no pending state, and nothing tells the sender
// whether it arrived. Casts to one peer arrive in the order they were sent,
// or not at all.
//
// Thread-safety: every method may be called from any thread. Handlers and
// callbacks run on transport threads: they must be quick and must not block
// (hand work to a node callback or another thread).
// Lifetime: stop() (or the destructor) closes connections, fails pending
// calls with unavailable and joins the transport's threads; no handler or
// callback runs after stop() returns.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.hpp"
#include "config/cluster_config.hpp"

namespace keel::net {

struct transport_handlers {
  using respond_fn = std::function<void(result<std::string>)>;
  // A call from an authenticated peer (`from` is its member id). `respond`
  // must be called exactly once, from any thread.
  std::function<void(const std::string& from, std::string payload, respond_fn respond)> on_call;
  // A cast from an authenticated peer; dropped when not set.
  std::function<void(const std::string& from, std::string payload)> on_cast;
  // A peer became reachable and authenticated (up = true) or was lost.
  std::function<void(const std::string& peer, bool up)> on_peer;
};

struct peer_status {
  std::string id;
  bool up = false;
  // Why the peer is down ("connecting", "refused: wrong secret", ...).
  std::string detail;
  int64_t since_ms = 0;   // wall clock of the last change
  uint64_t connects = 0;  // successful handshakes so far
};

class cluster_transport {
 public:
  // Publishes on self's host:cluster_port (port 0 picks one; see port()) and
  // starts connecting to `peers`. Errors: io_error (cannot bind),
  // invalid_argument (TLS files unreadable).
  static result<std::unique_ptr<cluster_transport>> start(const config::cluster_config& cfg,
                                                          const config::cluster_member& self,
                                                          std::vector<config::cluster_member> peers,
                                                          transport_handlers handlers);
  ~cluster_transport();
  cluster_transport(const cluster_transport&) = delete;
  cluster_transport& operator=(const cluster_transport&) = delete;

  // The bound cluster port.
  uint16_t port() const;

  // Sends `payload` to peer `to`; `done` runs once with the reply or the
  // error. Fails fast with unavailable when the peer is not up.
  void call(const std::string& to, std::string payload, uint32_t timeout_ms,
            std::function<void(result<std::string>)> done);

  // Sends `payload` one-way to peer `to`. False (and dropped) when the
  // peer is not up or the transport is stopped.
  bool cast(const std::string& to, std::string payload);

  // Starts connecting to a member not known before (or replaces its address);
  // forgets one that left.
  void add_peer(const config::cluster_member& m);
  void remove_peer(const std::string& id);

  bool is_up(const std::string& id) const;
  std::vector<peer_status> peers() const;

  void stop();

  struct impl;

 private:
  explicit cluster_transport(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
