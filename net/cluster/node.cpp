#include "net/cluster/node.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "actors/effect_pool.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "ledger/writer.hpp"
#include "net/api/support.hpp"
#include "net/cluster/node_impl.hpp"
#include "net/cluster/outbox.hpp"
#include "net/cluster/transport.hpp"
#include "persistence/values.hpp"

namespace keel::net {

using json = nlohmann::json;
using api_detail::dump;
using api_detail::fail;
using api_detail::json_response;

namespace {

json response_to_json(const http_response& r) {
  return {{"status", r.status}, {"content_type", r.content_type}, {"body", r.body}};
}

result<http_response> response_from_json(const std::string& s) {
  auto j = json::parse(s, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return error(code::corruption, "a peer sent an unreadable response");
  http_response r;
  r.status = j.value("status", 500u);
  r.content_type = j.value("content_type", "application/json");
  r.body = j.value("body", "");
  return r;
}

// Data placed with replication (and a group count) is refused by a start
// without it, and the other way round: agent ids, placement and where the
// data lives all differ between the two.
status check_replication_mode(actors::node& node, const cluster_node::options& opts,
                              bool has_data) {
  constexpr const char* key = "cluster/replication";
  auto found = node.storage().get(persistence::family::meta, key);
  if (!found) return found.error();
  json want = opts.repl
                  ? json{{"replication", opts.cluster.replication}, {"groups", opts.cluster.groups}}
                  : json{{"replication", 0}};
  json have = json{{"replication", 0}};
  if (*found) {
    auto j = persistence::decode_object(persistence::value_type::cluster_state, **found,
                                        "cluster replication mode");
    if (!j) return j.error();
    have = std::move(*j);
  } else if (!has_data && opts.repl) {
    persistence::write_set ops;
    ledger::batch_builder(ops).put_cluster_state(key, want, wall_ms());
    return node.storage().write(ops, true);
  }
  if (have == want) return status::ok();
  return error(code::invalid_argument,
               "this node's data was placed with " + have.dump() + " but the cluster config says " +
                   want.dump() + "; replication and groups cannot change for existing data");
}

}  // namespace

cluster_node::cluster_node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

cluster_node::~cluster_node() {
  stop();
}

result<std::shared_ptr<cluster_node>> cluster_node::start(actors::node& node, options opts) {
  KEEL_TRY(config::validate(opts.cluster));
  auto p = std::make_unique<impl>(node, opts);

  // The stored map wins over the config: membership changes made since the
  // cluster was created live there, with their epochs.
  auto stored = node.storage().get(persistence::family::meta, map_key);
  if (!stored) return stored.error();
  KEEL_TRY(check_replication_mode(node, opts, stored->has_value()));
  if (*stored) {
    auto j =
        persistence::decode_object(persistence::value_type::cluster_state, **stored, "cluster map");
    if (!j) return j.error();
    auto m = config::shard_map::from_json(*j, "stored cluster map");
    if (!m) return error(code::corruption, m.error().message());
    if (m->shards() != opts.cluster.shards)
      return error(code::invalid_argument,
                   "the cluster config says " + std::to_string(opts.cluster.shards) +
                       " shards but this node's data was placed with " +
                       std::to_string(m->shards()) + "; the shard count cannot change");
    p->map = std::make_shared<const config::shard_map>(std::move(*m));
  } else if (opts.join) {
    p->map = std::make_shared<const config::shard_map>(0, opts.cluster.shards,
                                                       std::vector<config::cluster_member>{});
  } else {
    // The first start: the config's members at epoch 1, stored, so a later
    // edit of the config (a member added for a joiner) never changes where
    // agents live without a handoff.
    p->map =
        std::make_shared<const config::shard_map>(1, opts.cluster.shards, opts.cluster.members);
    persistence::write_set ops;
    ledger::batch_builder(ops).put_cluster_state(map_key, p->map->to_json(), wall_ms());
    KEEL_TRY(node.storage().write(ops, true));
  }

  if (opts.repl) {
    // Groups were placed over these members and bootstrapped with them:
    // another member list would place them elsewhere.
    config::shard_map configured(1, opts.cluster.shards, opts.cluster.members);
    if (configured.members() != p->map->members())
      return error(code::invalid_argument,
                   "the members in the cluster config differ from the ones this replicated "
                   "node's data was placed with; membership changes of a replicated cluster "
                   "are not supported yet");
  }
  if (const auto* m = p->map->find(opts.self))
    p->self = *m;
  else if (opts.self_member && opts.self_member->id == opts.self)
    p->self = *opts.self_member;
  else {
    auto it = std::find_if(opts.cluster.members.begin(), opts.cluster.members.end(),
                           [&](const auto& m) { return m.id == opts.self; });
    if (it == opts.cluster.members.end())
      return error(code::invalid_argument, "node id '" + opts.self +
                                               "' is not a member of cluster '" +
                                               opts.cluster.cluster_id + "'");
    p->self = *it;
  }

  // Peers: everyone in the map and the config, but not ourselves.
  std::vector<config::cluster_member> peers;
  std::set<std::string> seen{p->self.id};
  for (const auto& m : p->map->members())
    if (seen.insert(m.id).second) peers.push_back(m);
  for (const auto& m : opts.cluster.members)
    if (seen.insert(m.id).second) peers.push_back(m);

  impl* raw = p.get();
  cluster_outbox::options oo;
  oo.repl = p->opts.repl;
  p->outbox = std::make_unique<cluster_outbox>(
      node, [raw](std::string_view name) { return raw->route_to(name); },
      [raw](const std::string& n) { return n == raw->self.id || raw->transport->is_up(n); },
      [raw](const std::string& to, std::vector<outbox_item> batch,
            std::function<void(result<std::vector<delivery_ack>>)> done) {
        raw->deliver_batch(to, std::move(batch), std::move(done));
      },
      oo);

  // Peers may call as soon as the transport runs: nothing is taken before
  // the node is wholly set up (`ready`).
  transport_handlers h;
  h.on_call = [raw](const std::string& from, std::string payload,
                    transport_handlers::respond_fn respond) {
    if (!raw->ready.load(std::memory_order_acquire))
      return respond(error(code::unavailable, "node " + raw->self.id + " is starting"));
    raw->on_call(from, std::move(payload), std::move(respond));
  };
  h.on_cast = [raw](const std::string& from, std::string payload) {
    if (raw->opts.repl) raw->opts.repl->on_cast(from, std::move(payload));
  };
  h.on_peer = [raw](const std::string& peer, bool up) {
    // A member with an empty store asking the others asks again at once.
    if (up && raw->opts.repl) raw->opts.repl->peer_up();
    if (!up || !raw->ready.load(std::memory_order_acquire)) return;
    if (raw->current_map()->empty()) raw->fetch_routing_map(peer);
    raw->outbox->wake();
  };
  KEEL_TRY(p->load_change());
  if (p->next)
    for (const auto& m : p->next->members())
      if (seen.insert(m.id).second) peers.push_back(m);
  auto t = cluster_transport::start(opts.cluster, p->self, std::move(peers), std::move(h));
  if (!t) return t.error();
  p->transport = std::move(*t);
  if (auto s = p->outbox->start(); !s) {
    p->transport->stop();
    return s;
  }
  if (p->opts.repl) {
    replication::hooks hooks;
    hooks.on_lead = [raw](raft::group_id g, uint64_t) {
      // The group's outbox entries are delivered from here, and agents of
      // the group with work pending (queued messages, effects started by
      // the previous leader) resume here: store reads, so not on the raft
      // loop.
      const uint64_t lead = raw->outbox->lead(g);
      raw->workers.submit([raw, g, lead] {
        if (auto s = raw->outbox->adopt(g, lead); !s)
          log::error("reading the outbox of a group now led here: " + s.message(),
                     {{"group", std::to_string(g)}});
        if (auto s = raw->node.resume(); !s)
          log::error("resuming agents of a group now led here: " + s.message());
      });
      raw->leader_cv.notify_all();
    };
    hooks.on_lose = [raw](raft::group_id g) {
      // leading(g) is already false: requests route elsewhere, the group's
      // live agents stop (their writes in flight fail), and the calls they
      // have in flight are aborted before another member can be elected
      // (docs/replication.md, "The leader lease").
      auto* r = raw->opts.repl;
      auto in_group = [r, g](std::string_view name) { return r->group_of(name) == g; };
      if (std::size_t n = raw->node.abort_effects(in_group); n != 0)
        log::warn("calls aborted: this member let go of their agents' group",
                  {{"group", std::to_string(g)}, {"calls", std::to_string(n)}});
      raw->node.evict(in_group, [] {});
      raw->outbox->release(g);
      raw->leader_cv.notify_all();
    };
    auto& node_ref = node;
    if (auto s = p->opts.repl->start(
            p->self.id, node.storage(),
            [&node_ref](persistence::write_set ops, std::function<void(const keel::status&)> done) {
              node_ref.commit(std::move(ops), std::move(done));
            },
            *p->transport, std::move(hooks));
        !s) {
      p->outbox->stop();
      p->transport->stop();
      return s;
    }
  }
  p->start_change_thread();
  impl* ip = p.get();
  std::shared_ptr<cluster_node> member(new cluster_node(std::move(p)));
  // The router before the first peer call is taken: an agent woken by a
  // delivery that messages a remote agent must find its way to the outbox.
  node.set_router(member);
  ip->ready.store(true, std::memory_order_release);
  for (const auto& ps : ip->transport->peers())
    if (ps.up && ip->current_map()->empty()) ip->fetch_routing_map(ps.id);
  return member;
}

void cluster_node::attach(api& a) {
  impl_->http.store(&a, std::memory_order_release);
}

uint16_t cluster_node::cluster_port() const {
  return impl_->transport->port();
}

void cluster_node::stop() {
  if (impl_->stopped.exchange(true)) return;
  {
    std::lock_guard lk(impl_->map_mu);
    impl_->change_stop = true;
  }
  impl_->change_cv.notify_all();
  // The groups first: their messages go out through the transport.
  if (impl_->opts.repl) impl_->opts.repl->stop();
  impl_->leader_cv.notify_all();
  // Fails the calls the change loop may be waiting on, so it ends now.
  impl_->transport->stop();
  impl_->stop_change_thread();
  impl_->outbox->stop();
  impl_->workers.stop();
}

// --- placement --------------------------------------------------------------

bool cluster_node::is_local(std::string_view name) const {
  return impl_->serves(name);
}

std::string cluster_node::owner_elsewhere(std::string_view name) const {
  if (auto* r = impl_->opts.repl) {
    const uint32_t g = r->group_of(name);
    if (r->leading(g)) return {};
    std::string leader = impl_->known_leader(g, false);
    if (!leader.empty() && leader != impl_->self.id && impl_->transport->is_up(leader))
      return leader;
    // No leader reachable (an election, or this node's own leadership not
    // ready yet): forward() waits for one.
    return std::string(1, impl::pending_leader) + std::to_string(g);
  }
  std::string owner = impl_->route_to(name);
  return owner == impl_->self.id ? std::string() : owner;
}

std::string cluster_node::http_url(const std::string& id) const {
  const config::cluster_member* m = impl_->current_map()->find(id);
  if (!m) return {};
  const bool v6 = m->http_host.find(':') != std::string::npos;
  return impl_->opts.http_scheme + "://" + (v6 ? "[" + m->http_host + "]" : m->http_host) + ":" +
         std::to_string(m->http_port);
}

std::string cluster_node::elsewhere(std::string_view name) const {
  std::string owner = impl_->owner_of(name);
  return "agent '" + std::string(name) + "' is served by node " +
         (owner.empty() ? std::string("(unknown: no shard map yet)") : owner) + ", not " +
         impl_->self.id;
}

// --- forwarding ---------------------------------------------------------------

bool cluster_node::replicated() const {
  return impl_->opts.repl != nullptr;
}

void cluster_node::forward(const std::string& owner, http_request req, respond_fn respond) {
  if (!owner.empty() && owner[0] == impl::pending_leader) {
    const auto g = static_cast<uint32_t>(std::stoul(owner.substr(1)));
    bool queued =
        impl_->workers.submit([p = impl_.get(), g, req = std::move(req), respond]() mutable {
          p->wait_for_leader(g, std::move(req), std::move(respond));
        });
    if (!queued)
      respond(json_response(
          503, {{"error", {{"code", "unavailable"}, {"message", "node is shutting down"}}}}));
    return;
  }
  impl_->forward_to(owner, std::move(req), std::move(respond));
}

void cluster_node::impl::forward_to(const std::string& owner, http_request req,
                                    respond_fn respond) {
  if (!transport->is_up(owner)) {
    json j{{"error",
            {{"code", "unavailable"},
             {"message", "the agent lives on node " + owner + ", which is down; retry later"},
             {"owner", owner}}}};
    return respond(json_response(503, j));
  }
  forwarded.fetch_add(1, std::memory_order_relaxed);
  json msg{{"op", "http"},
           {"epoch", current_map()->epoch()},
           {"method", req.method},
           {"target", req.target},
           {"body", req.body},
           // The caller as this member authenticated it: the owner checks
           // and records the same principal.
           {"principal",
            {{"name", req.who.name}, {"scopes", req.who.scopes}, {"agents", req.who.agents}}}};
  // ?wait=MS makes the owner hold the answer that long.
  uint64_t wait = 0;
  if (auto t = api_detail::parse_target(req.target); t)
    if (auto w = api_detail::uint_param(*t, "wait", 0); w) wait = *w;
  uint32_t timeout =
      static_cast<uint32_t>(std::min<uint64_t>(wait, 600'000)) + opts.cluster.forward_timeout_ms;
  call(owner, msg, timeout, [respond, owner](result<std::string> r) {
    if (!r) {
      unsigned st = r.error().error_code() == code::timeout ? 504 : 503;
      json j{{"error",
              {{"code", to_string(r.error().error_code())},
               {"message", "node " + owner + " did not answer: " + r.error().message()},
               {"owner", owner}}}};
      return respond(json_response(st, j));
    }
    auto resp = response_from_json(*r);
    if (!resp) return respond(error_response(resp.error()));
    respond(std::move(*resp));
  });
}

void cluster_node::impl::on_http(json msg, transport_handlers::respond_fn respond) {
  api* a = http.load(std::memory_order_acquire);
  if (!a) return respond(error(code::unavailable, "the node's API is not ready"));
  http_request req;
  req.method = msg.value("method", "GET");
  req.target = msg.value("target", "/");
  req.body = msg.value("body", "");
  // A member names the principal it authenticated; a request without one
  // may do nothing (it is not trusted to be an admin's).
  const json who = msg.value("principal", json::object());
  req.who.name = who.value("name", "anonymous");
  req.who.scopes = who.value("scopes", 0u);
  req.who.agents = who.value("agents", std::vector<std::string>{});
  const std::string from = msg.value("from", "peer");
  // The API may block on store reads (ledger, listings): not on a
  // transport thread.
  bool queued = workers.submit([a, req = std::move(req), from, respond]() mutable {
    a->handle_forwarded(std::move(req), from,
                        [respond](http_response r) { respond(dump(response_to_json(r))); });
  });
  if (!queued) respond(error(code::unavailable, "node is shutting down"));
}

std::string cluster_node::self_id() const {
  return impl_->self.id;
}

void cluster_node::list_all(const http_request& req, respond_fn respond) {
  auto t = api_detail::parse_target(req.target);
  if (!t) return respond(error_response(t.error()));
  auto limit = api_detail::uint_param(*t, "limit", 100);
  if (!limit) return respond(error_response(limit.error()));
  std::size_t n = std::clamp<uint64_t>(*limit, 1, 1000);
  std::string target =
      req.target + (req.target.find('?') == std::string::npos ? "?" : "&") + "local=1";

  struct gather {
    std::mutex mu;
    std::size_t pending = 0;
    std::vector<json> agents;
    std::vector<std::string> unavailable;
    bool more = false;
  };
  auto g = std::make_shared<gather>();
  auto members = impl_->current_map()->members();
  g->pending = members.size();
  auto finish = [g, n, respond] {
    std::sort(g->agents.begin(), g->agents.end(),
              [](const json& a, const json& b) { return a["name"] < b["name"]; });
    bool more = g->more || g->agents.size() > n;
    if (g->agents.size() > n) g->agents.resize(n);
    json next = more && !g->agents.empty() ? g->agents.back()["name"] : json(nullptr);
    json body{{"agents", g->agents}, {"next_after", next}};
    if (!g->unavailable.empty()) body["unavailable_nodes"] = g->unavailable;
    respond(json_response(200, body));
  };
  auto take = [g, finish](const std::string& who, result<http_response> r) {
    std::unique_lock lk(g->mu);
    json j = r && r->status == 200 ? json::parse(r->body, nullptr, false) : json();
    if (j.is_object() && j["agents"].is_array()) {
      for (auto& a : j["agents"]) g->agents.push_back(std::move(a));
      if (!j["next_after"].is_null()) g->more = true;
    } else {
      g->unavailable.push_back(who);
    }
    if (--g->pending == 0) {
      lk.unlock();
      finish();
    }
  };
  if (members.empty()) return finish();
  for (const auto& m : members) {
    http_request sub{"GET", target, "", {}, req.who};
    if (m.id == impl_->self.id) {
      bool ok = impl_->workers.submit([this, sub, take, id = m.id]() mutable {
        impl_->http.load()->handle_forwarded(std::move(sub), impl_->self.id,
                                             [take, id](http_response r) { take(id, r); });
      });
      if (!ok) take(m.id, error(code::unavailable, "stopping"));
      continue;
    }
    forward(m.id, std::move(sub), [take, id = m.id](http_response r) { take(id, std::move(r)); });
  }
}

void cluster_node::impl::on_call(const std::string& from, std::string payload,
                                 transport_handlers::respond_fn respond) {
  // The replicated groups' calls are binary, not JSON.
  if (opts.repl && is_replication_call(payload))
    return opts.repl->on_call(from, std::move(payload), std::move(respond));
  auto msg = json::parse(payload, nullptr, false);
  if (!msg.is_object()) return respond(error(code::invalid_argument, "unreadable cluster call"));
  std::string op = msg.value("op", "");
  if (op == "deliver") return on_deliver(from, msg, std::move(respond));
  if (op == "http") {
    msg["from"] = from;
    return on_http(std::move(msg), std::move(respond));
  }
  if (op == "get_map") return respond(dump(current_map()->to_json()));
  if (op == "leader_of") {
    const uint32_t g = msg.value("group", 0u);
    return respond(dump({{"leader", opts.repl ? opts.repl->leader_of(g) : std::string()}}));
  }
  if (op == "reply") {
    on_reply(msg);
    return respond(std::string("{}"));
  }
  if (op == "prepare" || op == "commit" || op == "change_status" || op == "shard_data" ||
      op == "shard_done")
    return on_change_call(op, msg, std::move(respond));
  respond(error(code::invalid_argument, "unknown cluster call '" + op + "'"));
}

// A node still joining routes by a member's map until it has its own.
void cluster_node::impl::fetch_routing_map(const std::string& peer) {
  call(peer, {{"op", "get_map"}}, 5000, [this](result<std::string> r) {
    if (!r) return;
    auto j = json::parse(*r, nullptr, false);
    auto m = config::shard_map::from_json(j, "a member's map");
    if (!m || m->empty()) return;
    {
      std::lock_guard lk(map_mu);
      if (routing && routing->epoch() >= m->epoch()) return;
      routing = std::make_shared<const config::shard_map>(std::move(*m));
    }
    if (outbox) outbox->wake();
  });
}

// --- status -------------------------------------------------------------------------

json cluster_node::status() {
  auto m = impl_->current_map();
  std::map<std::string, peer_status> peers;
  for (auto& p : impl_->transport->peers()) peers[p.id] = p;
  json members = json::array();
  for (const auto& mem : m->members()) {
    json j = config::to_json(mem);
    j["shards"] = m->shards_of(mem.id).size();
    if (mem.id == impl_->self.id) {
      j["self"] = true;
      j["up"] = true;
    } else if (auto it = peers.find(mem.id); it != peers.end()) {
      j["up"] = it->second.up;
      j["detail"] = it->second.detail;
      j["since_ms"] = it->second.since_ms;
    } else {
      j["up"] = false;
    }
    members.push_back(std::move(j));
  }
  json out{{"cluster_id", impl_->opts.cluster.cluster_id},
           {"self", impl_->self.id},
           {"epoch", m->epoch()},
           {"shards", m->shards()},
           {"members", std::move(members)},
           {"outbox", impl_->outbox->stats()},

           {"forwarded", impl_->forwarded.load()},
           {"delivered_in", impl_->delivered_in.load()}};
  if (auto c = impl_->change_status(); c.contains("next_epoch")) out["change"] = std::move(c);
  if (impl_->opts.repl) {
    out["replication"] = impl_->opts.repl->config().replication;
    // 0 until the groups run (a member with an empty store asks the
    // others whether to bootstrap or join first); an incarnation after it
    // joined again. Non-zero: "groups" lists every group it replicates.
    out["raft_id"] = impl_->opts.repl->running() ? impl_->opts.repl->self_raft_id() : 0;
    out["groups"] = impl_->groups_json();
  }
  return out;
}

void cluster_node::cluster_route(const http_request& req, std::vector<std::string> seg,
                                 respond_fn respond) {
  if (seg.size() == 2) {
    if (req.method != "GET") return respond(api_detail::method_not_allowed(req.method, "GET"));
    return respond(json_response(200, status()));
  }
  if (seg.size() == 5 && seg[2] == "groups" && seg[4] == "digest" && impl_->opts.repl) {
    if (req.method != "GET") return respond(api_detail::method_not_allowed(req.method, "GET"));
    uint32_t g = 0;
    try {
      g = static_cast<uint32_t>(std::stoul(seg[3]));
    } catch (const std::exception&) {
      return respond(fail(400, "invalid_argument", "group must be a number, got " + seg[3]));
    }
    if (g >= impl_->opts.repl->config().groups)
      return respond(fail(404, "not_found", "no group " + seg[3]));
    bool queued = impl_->workers.submit([p = impl_.get(), g, respond] {
      auto d = p->group_digest(g);
      respond(d ? json_response(200, *d) : error_response(d.error()));
    });
    if (!queued) respond(fail(503, "unavailable", "node is shutting down"));
    return;
  }
  if (seg.size() >= 3 && seg[2] == "members" && impl_->opts.repl)
    return respond(
        fail(409, "conflict", "membership changes of a replicated cluster are not supported yet"));
  if (seg.size() == 3 && seg[2] == "members") {
    if (req.method != "POST") return respond(api_detail::method_not_allowed(req.method, "POST"));
    auto body = api_detail::parse_body(req.body);
    if (!body) return respond(error_response(body.error()));
    auto m = config::member_from_json(*body, "the request body");
    if (!m) return respond(error_response(m.error()));
    auto cur = impl_->current_map();
    if (const auto* old = cur->find(m->id); old && *old == *m)
      return respond(fail(409, "conflict", "node " + m->id + " is already a member"));
    return impl_->begin_change(std::make_shared<const config::shard_map>(cur->with_member(*m)),
                               respond);
  }
  if (seg.size() == 4 && seg[2] == "members") {
    if (req.method != "DELETE")
      return respond(api_detail::method_not_allowed(req.method, "DELETE"));
    auto id = api_detail::percent_decode(seg[3], false);
    if (!id) return respond(error_response(id.error()));
    auto cur = impl_->current_map();
    if (!cur->find(*id)) return respond(fail(404, "not_found", "no member " + *id));
    if (cur->members().size() == 1)
      return respond(fail(409, "conflict", "cannot remove the last member"));
    return impl_->begin_change(std::make_shared<const config::shard_map>(cur->without_member(*id)),
                               respond);
  }
  respond(fail(404, "not_found", "no such path: " + req.target));
}

}  // namespace keel::net
