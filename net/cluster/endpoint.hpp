#pragma once
// Internal to net/cluster/: what transport.cpp (the public class, the actor
// system) and endpoint.cpp (the endpoint actor: handshake, calls,
// liveness) share. CAF headers: include from those two files only.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "base/log.hpp"
#include "base/status.hpp"
#include "config/cluster_config.hpp"
#include "net/cluster/transport.hpp"

namespace keel::net::transport_detail {

// On the wire, between endpoints.
using hello_atom = caf::atom_constant<caf::atom("kp_hello")>;      // cluster, id, nonce
using chall_atom = caf::atom_constant<caf::atom("kp_chall")>;      // id, nonce, mac
using auth_atom = caf::atom_constant<caf::atom("kp_auth")>;        // mac
using welcome_atom = caf::atom_constant<caf::atom("kp_welcome")>;  // -
using refuse_atom = caf::atom_constant<caf::atom("kp_refuse")>;    // reason
using call_atom = caf::atom_constant<caf::atom("kp_call")>;        // id, payload
using reply_atom = caf::atom_constant<caf::atom("kp_reply")>;      // id, code, text
using cast_atom = caf::atom_constant<caf::atom("kp_cast")>;        // payload
// Local: sent by the endpoint to itself (send_as or delayed_send).
using lcall_atom = caf::atom_constant<caf::atom("kl_call")>;
using lreply_atom = caf::atom_constant<caf::atom("kl_reply")>;
using lcast_atom = caf::atom_constant<caf::atom("kl_cast")>;
using ladd_atom = caf::atom_constant<caf::atom("kl_add")>;
using lremove_atom = caf::atom_constant<caf::atom("kl_remove")>;
using lstop_atom = caf::atom_constant<caf::atom("kl_stop")>;
using sweep_atom = caf::atom_constant<caf::atom("kl_sweep")>;
using retry_atom = caf::atom_constant<caf::atom("kl_retry")>;
using hstmo_atom = caf::atom_constant<caf::atom("kl_hstmo")>;

using ms = std::chrono::milliseconds;
using done_fn = std::function<void(result<std::string>)>;

inline void log_line(const std::string& line) {
  keel::log::warn("cluster: " + line);
}

inline std::string address_of(const config::cluster_member& m) {
  return m.host + ":" + std::to_string(m.cluster_port);
}

inline bool equal_in_constant_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

struct pending_call {
  std::string to;
  done_fn done;
};

// What the public methods, the endpoint and respond closures share.
struct shared_state {
  transport_handlers handlers;

  // Held shared while sending into CAF from outside the endpoint, exclusive
  // by stop() to flip `stopped`; nothing enters CAF after that.
  std::shared_mutex life;
  bool stopped = false;  // guarded by life
  caf::actor endpoint;   // guarded by life; valid while !stopped

  std::atomic<uint64_t> next_call{1};

  std::mutex mu;  // guards status and pending
  std::map<std::string, peer_status> status;
  std::unordered_map<uint64_t, pending_call> pending;

  std::optional<pending_call> take(uint64_t id) {
    std::lock_guard lk(mu);
    auto it = pending.find(id);
    if (it == pending.end()) return std::nullopt;
    pending_call c = std::move(it->second);
    pending.erase(it);
    return c;
  }

  // Fails every pending call to `peer` ("" = to anyone).
  void fail_calls_to(const std::string& peer, const keel::status& why) {
    std::vector<done_fn> failed;
    {
      std::lock_guard lk(mu);
      for (auto it = pending.begin(); it != pending.end();) {
        if (peer.empty() || it->second.to == peer) {
          failed.push_back(std::move(it->second.done));
          it = pending.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& done : failed) done(why);
  }
};

// What the endpoint needs to know of the cluster and of this node.
struct endpoint_settings {
  std::string cluster_id;
  std::string secret;
  std::string self_id;
  uint32_t reconnect_min_ms;
  uint32_t reconnect_max_ms;
  uint32_t handshake_timeout_ms;
  caf::io::middleman_actor mm;  // plain or TLS middleman actor
};

// Spawns the endpoint on `sys`; it dials `initial` and then whoever
// add_peer names. It ends on a local lstop_atom only.
caf::actor spawn_endpoint(caf::actor_system& sys, std::shared_ptr<shared_state> shared,
                          endpoint_settings cfg, std::vector<config::cluster_member> initial);

}  // namespace keel::net::transport_detail
