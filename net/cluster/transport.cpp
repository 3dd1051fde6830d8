// The cluster transport: one CAF actor system per transport, one published
// "endpoint" actor per node that sends and receives all cluster traffic.
//
// Why it is built this way:
// - Only built-in types (atoms, strings, integers) cross the wire, so nodes
//   need no type registration and a peer of another build cannot make us
//   deserialize anything of ours.
// - Every outgoing message is sent by the endpoint, so a receiver can tell
//   who talks to it by the sender's node id; calls and replies from a node
//   that has not completed the handshake are dropped.
// - Connecting goes through the middleman actor asynchronously (the same
//   request remote_actor() makes, without blocking a thread on it). CAF
//   keeps one connection per pair of nodes; both handshakes of a pair run
//   over it and the second is a no-op. The member with the smaller id dials
//   first (see yield_ms): simultaneous dials can cost CAF both connections.
// - Liveness is CAF's: the endpoint monitors the peer's endpoint proxy; a
//   closed connection, or one silent for middleman.connection-timeout while
//   heartbeats are on, kills the proxy with remote_link_unreachable.
// - Callers, responders and stop() meet in `shared_state`: the pending-call
//   map decides who completes a call (whoever takes its entry), and the
//   `life` lock keeps anything from sending into CAF once stop() begins.

#include "net/cluster/transport.hpp"

#include <algorithm>
#include <fstream>
#include <utility>

#include <caf/openssl/all.hpp>

#include "base/clock.hpp"
#include "net/cluster/endpoint.hpp"

namespace keel::net {

using namespace transport_detail;

namespace {

status check_readable(const std::string& what, const std::string& path) {
  if (path.empty()) return error(code::invalid_argument, "cluster tls: " + what + " is not set");
  std::ifstream f(path);
  if (!f)
    return error(code::invalid_argument, "cluster tls: cannot read " + what + " file " + path);
  return status::ok();
}

}  // namespace

struct cluster_transport::impl {
  std::shared_ptr<shared_state> shared;
  std::unique_ptr<caf::actor_system_config> caf_cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::io::middleman_actor mm;
  caf::actor endpoint;
  uint16_t port = 0;
  std::mutex stop_mu;  // serializes stop()

  // Ends the endpoint and the actor system; then nothing runs any more.
  void shut_down() {
    if (!sys) return;
    if (endpoint) {
      if (port != 0) {
        caf::scoped_actor self{*sys};
        self->request(mm, std::chrono::seconds(2), caf::unpublish_atom::value, endpoint.address(),
                      port)
            .receive([] {}, [](caf::error&) {});
      }
      caf::send_as(endpoint, endpoint, lstop_atom::value);
      endpoint = nullptr;
    }
    mm = nullptr;
    sys.reset();  // blocks until the endpoint has terminated
    caf_cfg.reset();
  }
};

cluster_transport::cluster_transport(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

cluster_transport::~cluster_transport() {
  stop();
}

result<std::unique_ptr<cluster_transport>> cluster_transport::start(
    const config::cluster_config& cfg, const config::cluster_member& self,
    std::vector<config::cluster_member> peers, transport_handlers handlers) {
  auto p = std::make_unique<impl>();
  p->shared = std::make_shared<shared_state>();
  p->shared->handlers = std::move(handlers);
  p->caf_cfg = std::make_unique<caf::actor_system_config>();
  auto& cc = *p->caf_cfg;
  cc.set("scheduler.max-threads", 2);
  // As for the node's scheduler (actors/node.cpp): an idle worker would
  // otherwise poll with 50 us sleeps for ~25 ms, delaying each hop and
  // burning CPU; skip that phase, so a wake-up is a signal.
  cc.set("work-stealing.moderate-poll-attempts", size_t{0});
  cc.set("middleman.heartbeat-interval", caf::timespan{ms(cfg.heartbeat_ms)});
  cc.set("middleman.connection-timeout", caf::timespan{ms(cfg.connection_timeout_ms)});
  cc.load<caf::io::middleman>();
  bool tls = cfg.tls.enabled();
  if (tls) {
    KEEL_TRY(check_readable("certificate", cfg.tls.certificate));
    KEEL_TRY(check_readable("key", cfg.tls.key));
    KEEL_TRY(check_readable("ca", cfg.tls.ca));
    cc.set("openssl.certificate", cfg.tls.certificate);
    cc.set("openssl.key", cfg.tls.key);
    cc.set("openssl.cafile", cfg.tls.ca);
    cc.load<caf::openssl::manager>();
  }
  try {
    p->sys = std::make_unique<caf::actor_system>(cc);
  } catch (const std::exception& e) {
    return error(code::invalid_argument,
                 std::string("cluster transport: cannot start: ") + e.what());
  }
  p->mm = tls ? p->sys->openssl_manager().actor_handle() : p->sys->middleman().actor_handle();

  endpoint_settings es{cfg.cluster_id,
                       cfg.secret,
                       self.id,
                       std::max<uint32_t>(1, cfg.reconnect_min_ms),
                       std::max<uint32_t>({1, cfg.reconnect_min_ms, cfg.reconnect_max_ms}),
                       std::max<uint32_t>(1000, cfg.connection_timeout_ms),
                       p->mm};
  p->endpoint = spawn_endpoint(*p->sys, p->shared, std::move(es), std::move(peers));
  {
    std::unique_lock lk(p->shared->life);
    p->shared->endpoint = p->endpoint;
  }
  auto bound = tls ? caf::openssl::publish(p->endpoint, self.cluster_port, self.host.c_str(), true)
                   : caf::io::publish(p->endpoint, self.cluster_port, self.host.c_str(), true);
  if (!bound) {
    auto why = p->sys->render(bound.error());
    {
      std::unique_lock lk(p->shared->life);
      p->shared->stopped = true;
    }
    p->shut_down();
    return error(code::io_error,
                 "cluster transport: cannot listen on " + address_of(self) + ": " + why);
  }
  p->port = *bound;
  return std::unique_ptr<cluster_transport>(new cluster_transport(std::move(p)));
}

uint16_t cluster_transport::port() const {
  return impl_->port;
}

void cluster_transport::call(const std::string& to, std::string payload, uint32_t timeout_ms,
                             std::function<void(result<std::string>)> done) {
  auto& sh = *impl_->shared;
  {
    std::shared_lock life(sh.life);
    if (!sh.stopped) {
      uint64_t id = sh.next_call.fetch_add(1, std::memory_order_relaxed);
      bool up = false;
      {
        std::lock_guard lk(sh.mu);
        auto it = sh.status.find(to);
        up = it != sh.status.end() && it->second.up;
        if (up) sh.pending.emplace(id, pending_call{to, std::move(done)});
      }
      if (up) {
        // The endpoint sends it (so the peer sees our endpoint as sender)
        // and fails it if the peer went down meanwhile.
        caf::send_as(sh.endpoint, sh.endpoint, lcall_atom::value, to, id, std::move(payload),
                     timeout_ms);
        return;
      }
    }
  }
  done(error(code::unavailable, "peer " + to + " is not connected"));
}

bool cluster_transport::cast(const std::string& to, std::string payload) {
  auto& sh = *impl_->shared;
  std::shared_lock life(sh.life);
  if (sh.stopped) return false;
  {
    std::lock_guard lk(sh.mu);
    auto it = sh.status.find(to);
    if (it == sh.status.end() || !it->second.up) return false;
  }
  // Through the endpoint, like calls: the peer sees our endpoint as the
  // sender, and one mailbox keeps casts to a peer in order.
  caf::send_as(sh.endpoint, sh.endpoint, lcast_atom::value, to, std::move(payload));
  return true;
}

void cluster_transport::add_peer(const config::cluster_member& m) {
  auto& sh = *impl_->shared;
  std::shared_lock life(sh.life);
  if (sh.stopped) return;
  caf::send_as(sh.endpoint, sh.endpoint, ladd_atom::value, m.id, m.host, m.cluster_port);
}

void cluster_transport::remove_peer(const std::string& id) {
  auto& sh = *impl_->shared;
  std::shared_lock life(sh.life);
  if (sh.stopped) return;
  caf::send_as(sh.endpoint, sh.endpoint, lremove_atom::value, id);
}

bool cluster_transport::is_up(const std::string& id) const {
  auto& sh = *impl_->shared;
  std::lock_guard lk(sh.mu);
  auto it = sh.status.find(id);
  return it != sh.status.end() && it->second.up;
}

std::vector<peer_status> cluster_transport::peers() const {
  auto& sh = *impl_->shared;
  std::lock_guard lk(sh.mu);
  std::vector<peer_status> out;
  out.reserve(sh.status.size());
  for (auto& [id, st] : sh.status) out.push_back(st);
  return out;
}

void cluster_transport::stop() {
  if (!impl_) return;
  std::lock_guard stop_lk(impl_->stop_mu);
  auto& sh = *impl_->shared;
  {
    std::unique_lock lk(sh.life);
    if (sh.stopped) return;
    sh.stopped = true;
    sh.endpoint = nullptr;
  }
  impl_->shut_down();
  sh.fail_calls_to("", error(code::unavailable, "cluster transport stopped"));
  // Nothing calls them any more; dropping them breaks cycles through
  // responders a handler kept.
  sh.handlers = transport_handlers{};
  std::lock_guard lk(sh.mu);
  for (auto& [id, st] : sh.status) {
    if (st.up) st.since_ms = wall_ms();
    st.up = false;
    st.detail = "stopped";
  }
}

}  // namespace keel::net
