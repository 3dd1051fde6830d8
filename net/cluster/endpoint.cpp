// The endpoint actor of the cluster transport (see transport.cpp for
// why it is built this way): peers and their handshakes, calls and their
// deadlines, replies, liveness through monitored proxies, dial backoff.

#include <algorithm>
#include <queue>
#include <random>
#include <unordered_set>
#include <utility>

#include "base/clock.hpp"
#include "base/sha256.hpp"
#include "net/cluster/endpoint.hpp"

namespace keel::net::transport_detail {

namespace {

enum class dial_phase { idle, connecting, hello_sent, auth_sent };

struct peer_link {
  config::cluster_member member;
  uint64_t gen = 0;  // changes when the member is replaced; stale timers compare it
  bool up = false;
  caf::actor handle;  // the peer's endpoint once authenticated
  caf::node_id node;
  // Our own outgoing handshake.
  dial_phase phase = dial_phase::idle;
  uint64_t attempt = 0;  // changes per dial; stale results compare it
  caf::actor dialing;
  std::string nonce;
  bool retry_armed = false;
  uint32_t backoff_ms = 0;
  // Status as reported by peers().
  std::string detail = "connecting";
  int64_t since_ms = 0;
  uint64_t connects = 0;
};

// A handshake a peer started with us: we sent it our challenge.
struct inbound_handshake {
  std::string member;
  std::string nonce;
};

struct deadline {
  int64_t at_ns;
  uint64_t call;
  bool operator>(const deadline& o) const { return at_ns > o.at_ns; }
};

struct endpoint_state {
  std::shared_ptr<shared_state> shared;
  endpoint_settings cfg;
  std::map<std::string, peer_link> peers;
  std::unordered_map<caf::node_id, std::string> authed;  // node -> member id
  std::unordered_map<caf::node_id, inbound_handshake> inbound;
  std::unordered_set<caf::actor_addr> monitored;
  std::priority_queue<deadline, std::vector<deadline>, std::greater<>> deadlines;
  int64_t sweep_at_ns = 0;  // when the armed sweep fires; 0 = none armed
  uint64_t next_gen = 1;
  std::random_device rng;
  std::unordered_map<std::string, int64_t> logged_at;  // rate limit per key

  static inline const char* name = "keel.cluster.endpoint";
};

using endpoint_actor = caf::stateful_actor<endpoint_state>;

constexpr int64_t log_interval_ms = 10'000;

void log_limited(endpoint_actor* self, const std::string& key, const std::string& line) {
  auto now = wall_ms();
  auto [it, fresh] = self->state.logged_at.try_emplace(key, now);
  if (!fresh && now - it->second < log_interval_ms) return;
  it->second = now;
  log_line(line);
}

std::string make_nonce(endpoint_actor* self) {
  std::array<uint8_t, 16> bytes;
  for (size_t i = 0; i < bytes.size(); i += 4) {
    auto r = self->state.rng();
    for (size_t j = 0; j < 4; ++j) bytes[i + j] = static_cast<uint8_t>(r >> (8 * j));
  }
  return to_hex(bytes);
}

// The proof that `member` holds the secret, bound to the other side's nonce.
std::string mac_for(const endpoint_settings& cfg, const std::string& member,
                    const std::string& nonce) {
  return to_hex(
      hmac_sha256(cfg.secret, "keel-peer|" + cfg.cluster_id + "|" + member + "|" + nonce));
}

void publish_status(endpoint_actor* self, const peer_link& p) {
  auto& sh = *self->state.shared;
  std::lock_guard lk(sh.mu);
  sh.status[p.member.id] = peer_status{p.member.id, p.up, p.detail, p.since_ms, p.connects};
}

void notify_peer(endpoint_actor* self, const std::string& id, bool up) {
  if (auto& f = self->state.shared->handlers.on_peer) f(id, up);
}

void watch(endpoint_actor* self, const caf::actor& h) {
  if (self->state.monitored.insert(h.address()).second) self->monitor(h);
}

// True when the current message came from another node (not from us).
bool from_remote(endpoint_actor* self) {
  auto& s = self->current_sender();
  return s && s->node() != self->node();
}

// The member id of the current sender's node if it is authenticated.
const std::string* sender_member(endpoint_actor* self) {
  auto& s = self->current_sender();
  if (!s) return nullptr;
  auto it = self->state.authed.find(s->node());
  if (it != self->state.authed.end()) return &it->second;
  log_limited(self, "unauth:" + to_string(s->node()),
              "dropped a message from unauthenticated node " + to_string(s->node()));
  return nullptr;
}

peer_link* find_peer(endpoint_actor* self, const std::string& id) {
  auto it = self->state.peers.find(id);
  return it == self->state.peers.end() ? nullptr : &it->second;
}

// The peer whose outgoing handshake is at `phase` with the current sender.
peer_link* dialed_sender(endpoint_actor* self, std::initializer_list<dial_phase> phases) {
  auto sender = caf::actor_cast<caf::actor>(self->current_sender());
  if (!sender) return nullptr;
  for (auto& [id, p] : self->state.peers)
    if (p.dialing == sender && std::find(phases.begin(), phases.end(), p.phase) != phases.end())
      return &p;
  return nullptr;
}

void dial(endpoint_actor* self, peer_link& p);

// CAF 0.17 resolves two simultaneous connections between a pair of nodes
// racily: each side may keep a different one and close the other, which
// kills both. So the member with the smaller id dials as soon as it can; the
// other waits a handshake timeout more before each attempt, which it needs
// only when the first does not connect (it does not know us yet, say).
uint32_t yield_ms(endpoint_actor* self, const peer_link& p) {
  return self->state.cfg.self_id < p.member.id ? 0 : self->state.cfg.handshake_timeout_ms;
}

// Dials `p` after the backoff (none when `now`) and our yield, if it is
// down and nothing is under way.
void schedule_dial(endpoint_actor* self, peer_link& p, bool now = false) {
  if (p.up || p.retry_armed || p.phase != dial_phase::idle) return;
  uint32_t delay = (now ? 0 : p.backoff_ms) + yield_ms(self, p);
  if (!now) p.backoff_ms = std::min(p.backoff_ms * 2, self->state.cfg.reconnect_max_ms);
  if (delay == 0) {
    dial(self, p);
    return;
  }
  p.retry_armed = true;
  self->delayed_send(self, ms(delay), retry_atom::value, p.member.id, p.gen);
}

void abort_dial(peer_link& p) {
  p.phase = dial_phase::idle;
  p.dialing = nullptr;
  ++p.attempt;
}

// Our handshake with `p` ended without success: report `detail` (logged once
// when it is a refusal) and try again later.
void dial_failed(endpoint_actor* self, peer_link& p, const std::string& detail) {
  abort_dial(p);
  if (!p.up && p.detail != detail) {
    p.detail = detail;
    if (detail.rfind("refused", 0) == 0)
      log_line("refused peer " + p.member.id + " at " + address_of(p.member) + ": " +
               detail.substr(detail.find(':') + 2));
    publish_status(self, p);
  }
  schedule_dial(self, p);
}

// `p` is gone (or its handshake died): mark it down, fail its calls, retry.
void lose(endpoint_actor* self, peer_link& p, const std::string& detail) {
  bool was_up = p.up;
  abort_dial(p);
  if (was_up) {
    self->state.authed.erase(p.node);
    self->state.inbound.erase(p.node);
    p.up = false;
    p.handle = nullptr;
    p.node = caf::node_id{};
    p.detail = detail;
    p.since_ms = wall_ms();
    publish_status(self, p);
    self->state.shared->fail_calls_to(
        p.member.id, error(code::unavailable, "peer " + p.member.id + " " + detail));
    notify_peer(self, p.member.id, false);
  }
  schedule_dial(self, p);
}

void mark_up(endpoint_actor* self, peer_link& p, caf::actor h, const caf::node_id& node) {
  abort_dial(p);
  if (p.up && p.node == node) return;  // the second handshake over the same connection
  if (p.up) lose(self, p, "lost: replaced by a new incarnation");
  p.up = true;
  p.handle = std::move(h);
  p.node = node;
  p.detail.clear();
  p.since_ms = wall_ms();
  ++p.connects;
  p.backoff_ms = self->state.cfg.reconnect_min_ms;
  self->state.authed[node] = p.member.id;
  watch(self, p.handle);
  publish_status(self, p);
  notify_peer(self, p.member.id, true);
}

void dial(endpoint_actor* self, peer_link& p) {
  abort_dial(p);
  p.phase = dial_phase::connecting;
  auto id = p.member.id;
  auto gen = p.gen;
  auto attempt = p.attempt;
  auto timeout = ms(self->state.cfg.handshake_timeout_ms);
  // The handshake must finish within the same time, connecting included.
  self->delayed_send(self, timeout, hstmo_atom::value, id, gen, attempt);
  auto current = [self, id, gen, attempt]() -> peer_link* {
    auto* q = find_peer(self, id);
    return q && q->gen == gen && q->attempt == attempt ? q : nullptr;
  };
  self->request(self->state.cfg.mm, timeout, caf::connect_atom::value, p.member.host,
                p.member.cluster_port)
      .then(
          [self, current](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
            auto* q = current();
            if (!q || q->phase != dial_phase::connecting) return;
            auto h = caf::actor_cast<caf::actor>(std::move(ptr));
            if (!h) {
              dial_failed(self, *q, "unreachable: nothing published on the cluster port");
              return;
            }
            watch(self, h);
            q->dialing = h;
            q->nonce = make_nonce(self);
            q->phase = dial_phase::hello_sent;
            self->send(h, hello_atom::value, self->state.cfg.cluster_id, self->state.cfg.self_id,
                       q->nonce);
          },
          [self, current](caf::error& err) {
            if (auto* q = current())
              dial_failed(self, *q, "unreachable: " + self->system().render(err));
          });
}

void add_member(endpoint_actor* self, config::cluster_member m) {
  if (m.id == self->state.cfg.self_id) return;
  if (auto* p = find_peer(self, m.id)) {
    if (p->member == m) {
      schedule_dial(self, *p, true);
      return;
    }
    lose(self, *p, "lost: address changed");
    self->state.peers.erase(m.id);
  }
  peer_link p;
  p.member = std::move(m);
  p.gen = self->state.next_gen++;
  p.backoff_ms = self->state.cfg.reconnect_min_ms;
  p.since_ms = wall_ms();
  auto& ref = self->state.peers.emplace(p.member.id, std::move(p)).first->second;
  publish_status(self, ref);
  schedule_dial(self, ref, true);
}

void remove_member(endpoint_actor* self, const std::string& id) {
  auto* p = find_peer(self, id);
  if (!p) return;
  bool was_up = p->up;
  self->state.authed.erase(p->node);
  self->state.inbound.erase(p->node);
  self->state.peers.erase(id);
  {
    std::lock_guard lk(self->state.shared->mu);
    self->state.shared->status.erase(id);
  }
  self->state.shared->fail_calls_to(id, error(code::unavailable, "peer " + id + " was removed"));
  if (was_up) notify_peer(self, id, false);
}

void arm_sweep(endpoint_actor* self) {
  auto& s = self->state;
  if (s.deadlines.empty()) return;
  auto at = s.deadlines.top().at_ns;
  if (s.sweep_at_ns != 0 && s.sweep_at_ns <= at) return;
  s.sweep_at_ns = at;
  auto wait = std::max<int64_t>(0, at - mono_ns());
  self->delayed_send(self, std::chrono::nanoseconds(wait), sweep_atom::value);
}

// Times out every call past its deadline (most already finished: taking
// their entry finds nothing).
void sweep(endpoint_actor* self) {
  auto& s = self->state;
  s.sweep_at_ns = 0;
  auto now = mono_ns();
  std::vector<done_fn> expired;
  {
    std::lock_guard lk(s.shared->mu);
    while (!s.deadlines.empty() && s.deadlines.top().at_ns <= now) {
      auto it = s.shared->pending.find(s.deadlines.top().call);
      s.deadlines.pop();
      if (it == s.shared->pending.end()) continue;
      expired.push_back(std::move(it->second.done));
      s.shared->pending.erase(it);
    }
  }
  for (auto& done : expired) done(error(code::timeout, "cluster call timed out"));
  arm_sweep(self);
}

// Runs `respond` for a call that arrived from `node`: the reply travels
// back through our endpoint, to that node only if it is still the
// authenticated incarnation.
transport_handlers::respond_fn make_responder(std::shared_ptr<shared_state> sh, caf::node_id node,
                                              uint64_t call) {
  return [sh = std::move(sh), node = std::move(node), call](result<std::string> r) {
    uint64_t c = r ? 0 : static_cast<uint64_t>(r.error().error_code());
    std::string text = r ? std::move(r).value() : r.error().message();
    std::shared_lock lk(sh->life);
    if (sh->stopped) return;
    caf::send_as(sh->endpoint, sh->endpoint, lreply_atom::value, node, call, c, std::move(text));
  };
}

void on_call(endpoint_actor* self, uint64_t call, std::string& payload) {
  const std::string* from = sender_member(self);
  if (!from) return;
  auto& sh = self->state.shared;
  auto respond = make_responder(sh, self->current_sender()->node(), call);
  if (!sh->handlers.on_call) {
    respond(error(code::unavailable, "node takes no cluster calls"));
    return;
  }
  try {
    sh->handlers.on_call(*from, std::move(payload), respond);
  } catch (const std::exception& e) {
    respond(error(code::internal, std::string("cluster call handler threw: ") + e.what()));
  }
}

void on_cast(endpoint_actor* self, std::string& payload) {
  const std::string* from = sender_member(self);
  if (!from) return;
  auto& h = self->state.shared->handlers;
  if (!h.on_cast) return;
  try {
    h.on_cast(*from, std::move(payload));
  } catch (const std::exception& e) {
    log_line(std::string("cluster cast handler threw: ") + e.what());
  }
}

void on_reply(endpoint_actor* self, uint64_t call, uint64_t c, std::string& text) {
  if (!sender_member(self)) return;
  auto pc = self->state.shared->take(call);
  if (!pc) return;  // timed out or failed already
  if (c == 0) {
    pc->done(std::move(text));
    return;
  }
  auto k = c <= static_cast<uint64_t>(code::internal) ? static_cast<code>(c) : code::internal;
  pc->done(error(k, std::move(text)));
}

// Peer side of a handshake someone else started.
void on_hello(endpoint_actor* self, const std::string& cluster, const std::string& member,
              const std::string& nonce) {
  if (!from_remote(self)) return;
  auto& s = self->state;
  auto sender = caf::actor_cast<caf::actor>(self->current_sender());
  auto node = self->current_sender()->node();
  std::string where = "peer " + member + " (node " + to_string(node) + ")";
  if (cluster != s.cfg.cluster_id) {
    log_limited(self, "cluster:" + member,
                "refused " + where + ": wrong cluster id '" + cluster + "'");
    self->send(sender, refuse_atom::value, std::string("wrong cluster id"));
    return;
  }
  auto* p = find_peer(self, member);
  if (!p) {
    log_limited(self, "unknown:" + member, "refused " + where + ": unknown member");
    self->send(sender, refuse_atom::value, std::string("unknown member"));
    return;
  }
  watch(self, sender);
  auto mine = make_nonce(self);
  s.inbound[node] = inbound_handshake{member, mine};
  self->send(sender, chall_atom::value, s.cfg.self_id, mine, mac_for(s.cfg, s.cfg.self_id, nonce));
}

void on_auth(endpoint_actor* self, const std::string& mac) {
  if (!from_remote(self)) return;
  auto& s = self->state;
  auto node = self->current_sender()->node();
  auto it = s.inbound.find(node);
  if (it == s.inbound.end()) return;
  auto hs = std::move(it->second);
  s.inbound.erase(it);
  auto* p = find_peer(self, hs.member);
  if (!p) return;
  auto sender = caf::actor_cast<caf::actor>(self->current_sender());
  if (!equal_in_constant_time(mac, mac_for(s.cfg, hs.member, hs.nonce))) {
    if (!p->up && p->detail != "refused: wrong secret") {
      p->detail = "refused: wrong secret";
      publish_status(self, *p);
    }
    log_limited(self, "secret:" + hs.member,
                "refused peer " + hs.member + " at " + address_of(p->member) + ": wrong secret");
    self->send(sender, refuse_atom::value, std::string("wrong secret"));
    return;
  }
  mark_up(self, *p, sender, node);
  self->send(sender, welcome_atom::value);
}

// Our side of a handshake we started.
void on_challenge(endpoint_actor* self, const std::string& member, const std::string& nonce,
                  const std::string& mac) {
  auto* p = dialed_sender(self, {dial_phase::hello_sent});
  if (!p) return;
  auto& cfg = self->state.cfg;
  if (member != p->member.id) {
    dial_failed(self, *p, "refused: the node there is member " + member);
    return;
  }
  if (!equal_in_constant_time(mac, mac_for(cfg, member, p->nonce))) {
    dial_failed(self, *p, "refused: wrong secret");
    return;
  }
  p->phase = dial_phase::auth_sent;
  self->send(p->dialing, auth_atom::value, mac_for(cfg, cfg.self_id, nonce));
}

caf::behavior endpoint(endpoint_actor* self, std::shared_ptr<shared_state> sh,
                       endpoint_settings cfg, std::vector<config::cluster_member> initial) {
  self->state.shared = std::move(sh);
  self->state.cfg = std::move(cfg);
  self->set_default_handler(caf::drop);
  // Nobody may kill the endpoint from outside; stop() sends lstop.
  self->set_exit_handler([](caf::exit_msg&) {});
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& s = self->state;
    s.monitored.erase(dm.source);
    s.inbound.erase(dm.source.node());
    std::string why = dm.reason == caf::exit_reason::remote_link_unreachable
                          ? "lost: connection closed or timed out"
                          : "lost: " + self->system().render(dm.reason);
    for (auto& [id, p] : s.peers) {
      if (p.up && p.handle.address() == dm.source)
        lose(self, p, why);
      else if (p.phase != dial_phase::idle && p.dialing && p.dialing.address() == dm.source)
        dial_failed(self, p, "unreachable: connection lost during the handshake");
    }
  });
  for (auto& m : initial) add_member(self, std::move(m));
  auto local = [self] { return self->current_sender().get() == self->ctrl(); };
  return {
      [self, local](lcall_atom, const std::string& to, uint64_t call, std::string& payload,
                    uint32_t timeout_ms) {
        if (!local()) return;
        auto* p = find_peer(self, to);
        if (!p || !p->up) {
          if (auto pc = self->state.shared->take(call))
            pc->done(error(code::unavailable, "peer " + to + " is not connected"));
          return;
        }
        self->send(p->handle, call_atom::value, call, std::move(payload));
        self->state.deadlines.push({mono_ns() + int64_t{timeout_ms} * 1'000'000, call});
        arm_sweep(self);
      },
      [self, local](lcast_atom, const std::string& to, std::string& payload) {
        if (!local()) return;
        auto* p = find_peer(self, to);
        if (p && p->up) self->send(p->handle, cast_atom::value, std::move(payload));
      },
      [self, local](lreply_atom, const caf::node_id& node, uint64_t call, uint64_t c,
                    std::string& text) {
        if (!local()) return;
        auto it = self->state.authed.find(node);
        if (it == self->state.authed.end()) return;  // the caller is gone
        if (auto* p = find_peer(self, it->second))
          self->send(p->handle, reply_atom::value, call, c, std::move(text));
      },
      [self, local](ladd_atom, std::string& id, std::string& host, uint16_t port) {
        if (!local()) return;
        config::cluster_member m;
        m.id = std::move(id);
        m.host = std::move(host);
        m.cluster_port = port;
        add_member(self, std::move(m));
      },
      [self, local](lremove_atom, const std::string& id) {
        if (local()) remove_member(self, id);
      },
      [self, local](sweep_atom) {
        if (local()) sweep(self);
      },
      [self, local](retry_atom, const std::string& id, uint64_t gen) {
        if (!local()) return;
        auto* p = find_peer(self, id);
        if (!p || p->gen != gen) return;
        p->retry_armed = false;
        if (!p->up && p->phase == dial_phase::idle) dial(self, *p);
      },
      [self, local](hstmo_atom, const std::string& id, uint64_t gen, uint64_t attempt) {
        if (!local()) return;
        auto* p = find_peer(self, id);
        if (p && p->gen == gen && p->attempt == attempt && p->phase != dial_phase::idle)
          dial_failed(self, *p, "unreachable: handshake timed out");
      },
      [self, local](lstop_atom) {
        if (local()) self->quit();
      },
      [self](call_atom, uint64_t call, std::string& payload) { on_call(self, call, payload); },
      [self](cast_atom, std::string& payload) { on_cast(self, payload); },
      [self](reply_atom, uint64_t call, uint64_t c, std::string& text) {
        on_reply(self, call, c, text);
      },
      [self](hello_atom, const std::string& cluster, const std::string& member,
             const std::string& nonce) { on_hello(self, cluster, member, nonce); },
      [self](chall_atom, const std::string& member, const std::string& nonce,
             const std::string& mac) { on_challenge(self, member, nonce, mac); },
      [self](auth_atom, const std::string& mac) { on_auth(self, mac); },
      [self](welcome_atom) {
        if (auto* p = dialed_sender(self, {dial_phase::auth_sent}))
          mark_up(self, *p, p->dialing, self->current_sender()->node());
      },
      [self](refuse_atom, const std::string& reason) {
        if (auto* p = dialed_sender(self, {dial_phase::hello_sent, dial_phase::auth_sent}))
          dial_failed(self, *p, "refused: " + reason + " (said the peer)");
      },
  };
}

}  // namespace

caf::actor spawn_endpoint(caf::actor_system& sys, std::shared_ptr<shared_state> shared,
                          endpoint_settings cfg, std::vector<config::cluster_member> initial) {
  return sys.spawn(endpoint, std::move(shared), std::move(cfg), std::move(initial));
}

}  // namespace keel::net::transport_detail
