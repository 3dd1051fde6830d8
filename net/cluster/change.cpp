// Membership changes: adding or removing a member moves whole shards.
//
// The protocol, and why it leaves each shard with exactly one owner even when
// a node crashes anywhere in it:
//
// 1. prepare(next): a member stores the target map (`cluster/next`) and a
//    handoff marker (`cluster/out/<shard>`) for every shard it owns now and
//    loses in `next`, in one durable write. From then on it does not serve
//    those shards (requests get 503, messages wait in outboxes).
// 2. For each handoff, the old owner stops the shard's live agents, waits
//    until their writes are durable, and streams every agent's data (all
//    column families, blobs included) to the new owner, which writes it
//    under its own agent ids. shard_done makes the receiver acknowledge the
//    whole shard; only then does the old owner delete its copy and mark the
//    handoff `handed`, in one write. A crash before that repeats the stream
//    (the receiver overwrites: it does not serve the shard yet).
// 3. When every member reports that its handoffs are done, any member may
//    commit(next): each stores `next` as its map (epoch + 1), drops the
//    markers, and the receivers wake the agents they took in. Nobody serves
//    a moving shard between prepare and commit, and the receiver serves it
//    only after commit: never two owners.
//
// Every member with a pending change runs the loop below, so the change
// completes even if the member that started it dies; commit is idempotent.

#include <future>

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/sha256.hpp"
#include "ledger/transfer.hpp"
#include "ledger/writer.hpp"
#include "net/cluster/node_impl.hpp"
#include "persistence/values.hpp"

namespace keel::net {

using json = nlohmann::json;
using persistence::family;
using persistence::value_type;

namespace {

std::string handoff_key(uint32_t shard) {
  std::string k = handoff_prefix;
  put_u32_be(k, shard);
  return k;
}

std::string from_hex(std::string_view h) {
  std::string out;
  out.reserve(h.size() / 2);
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) {
    int a = v(h[i]), b = v(h[i + 1]);
    if (a < 0 || b < 0) return {};
    out.push_back(static_cast<char>(a * 16 + b));
  }
  return out;
}

std::string hex(std::string_view bytes) {
  return to_hex(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

// Handoff state is written with fsync whatever the node's `sync` setting:
// the sender deletes its copy once the receiver says it has the data. The
// node's agent gauges follow the directory entries that come and go.
keel::status write_synced(actors::node& n, const persistence::write_set& ops) {
  return n.write_agents(ops);
}

std::string digest(const config::shard_map& m) {
  return to_hex(sha256(m.to_json().dump()));
}

constexpr std::size_t chunk_bytes = 1 << 20;
constexpr uint32_t handoff_timeout_ms = 60'000;

}  // namespace

result<std::string> cluster_node::impl::call_sync(const std::string& to, const json& msg,
                                                  uint32_t timeout_ms) {
  auto p = std::make_shared<std::promise<result<std::string>>>();
  auto f = p->get_future();
  call(to, msg, timeout_ms, [p](result<std::string> r) { p->set_value(std::move(r)); });
  return f.get();
}

keel::status cluster_node::impl::load_change() {
  auto raw = node.storage().get(family::meta, next_key);
  if (!raw) return raw.error();
  if (!*raw) return status::ok();
  auto j = persistence::decode_object(value_type::cluster_state, **raw, "pending cluster map");
  if (!j) return j.error();
  auto m = config::shard_map::from_json(*j, "pending cluster map");
  if (!m) return error(code::corruption, m.error().message());
  auto marks = node.storage().scan(family::meta, handoff_prefix, {}, 1 << 20);
  if (!marks) return marks.error();
  std::lock_guard lk(map_mu);
  next = std::make_shared<const config::shard_map>(std::move(*m));
  for (auto& [k, v] : *marks) {
    auto h = persistence::decode_object(value_type::cluster_state, v, "shard handoff");
    if (!h) return h.error();
    if (k.size() != std::string_view(handoff_prefix).size() + 4)
      return error(code::corruption, "bad shard handoff key");
    uint32_t shard = get_u32_be(k.data() + k.size() - 4);
    outgoing[shard] = {h->value("to", ""), h->value("handed", false)};
  }
  return status::ok();
}

keel::status cluster_node::impl::prepare(std::shared_ptr<const config::shard_map> target) {
  // One prepare at a time: the check below and setting `next` must not
  // interleave with another prepare's (map_mu is released for the write).
  std::lock_guard one(commit_mu);
  std::unique_lock lk(map_mu);
  if (target->epoch() <= map->epoch()) return status::ok();  // already committed
  if (next) {
    if (*next == *target) return status::ok();
    return error(code::conflict, "another membership change (epoch " +
                                     std::to_string(next->epoch()) + ") is in progress");
  }
  if (target->epoch() != map->epoch() + 1 && !map->empty())
    return error(code::conflict, "this node is at epoch " + std::to_string(map->epoch()) +
                                     "; it cannot move to epoch " +
                                     std::to_string(target->epoch()) + " directly");
  persistence::write_set ops;
  ledger::batch_builder w(ops);
  w.put_cluster_state(next_key, target->to_json(), wall_ms());
  std::map<uint32_t, shard_handoff> out;
  if (!map->empty())
    for (const auto& mv : config::moves_between(*map, *target))
      if (mv.from == self.id) {
        out[mv.shard] = {mv.to, false};
        w.put_cluster_state(handoff_key(mv.shard), {{"to", mv.to}, {"handed", false}}, wall_ms());
      }
  lk.unlock();
  // Durable before the gates close: after a crash the markers say what
  // was leaving.
  KEEL_TRY(write_synced(node, ops));
  lk.lock();
  next = std::move(target);
  outgoing = std::move(out);
  for (const auto& m : next->members())
    if (m.id != self.id) transport->add_peer(m);
  lk.unlock();
  change_cv.notify_all();
  return status::ok();
}

bool cluster_node::impl::run_handoff(uint32_t shard, const std::string& to, uint64_t epoch) {
  const uint32_t shards = current_map()->shards();
  auto in_shard = [shard, shards](std::string_view name) {
    return config::shard_of(name, shards) == shard;
  };
  // Stop the shard's live agents; their last writes land before we read.
  auto evicted = std::make_shared<std::promise<void>>();
  auto ef = evicted->get_future();
  node.evict(in_shard, [evicted] { evicted->set_value(); });
  if (ef.wait_for(std::chrono::seconds(30)) != std::future_status::ready) return false;

  auto names = actors::agents_where(node.storage(), in_shard);
  if (!names) {
    log::error("cluster: shard " + std::to_string(shard) + ": " + names.error().message());
    return false;
  }
  persistence::write_set erase;
  std::vector<actors::agent_bundle> chunk;
  std::size_t chunk_size = 0;
  auto flush = [&]() -> bool {
    if (chunk.empty()) return true;
    json msg{{"op", "shard_data"},
             {"shard", shard},
             {"epoch", epoch},
             {"data", hex(actors::encode_bundles(chunk))}};
    auto r = call_sync(to, msg, handoff_timeout_ms);
    chunk.clear();
    chunk_size = 0;
    if (!r) {
      log::warn("cluster: handing shard " + std::to_string(shard) + " to " + to + ": " +
                r.error().message() + " (will retry)");
      return false;
    }
    return true;
  };
  for (const auto& name : *names) {
    auto b = actors::export_agent(node.storage(), name);
    if (!b) {
      log::error("cluster: exporting " + name + ": " + b.error().message(), {{"agent", name}});
      return false;
    }
    ledger::batch_builder(erase).erase_bundle(*b);
    chunk_size += b->bytes();
    chunk.push_back(std::move(*b));
    if (chunk_size >= chunk_bytes && !flush()) return false;
  }
  if (!flush()) return false;
  auto done =
      call_sync(to, {{"op", "shard_done"}, {"shard", shard}, {"epoch", epoch}, {"agents", *names}},
                handoff_timeout_ms);
  if (!done) return false;
  // The receiver has it all: drop our copy and remember the handoff, at once.
  ledger::batch_builder(erase).put_cluster_state(handoff_key(shard), {{"to", to}, {"handed", true}},
                                                 wall_ms());
  if (auto s = write_synced(node, erase); !s) return false;
  std::lock_guard lk(map_mu);
  if (auto it = outgoing.find(shard); it != outgoing.end()) it->second.handed = true;
  return true;
}

bool cluster_node::impl::locally_ready() {
  std::lock_guard lk(map_mu);
  return std::all_of(outgoing.begin(), outgoing.end(),
                     [](const auto& o) { return o.second.handed; });
}

keel::status cluster_node::impl::commit(const config::shard_map& target) {
  std::lock_guard one(commit_mu);
  std::unique_lock lk(map_mu);
  if (target.epoch() <= map->epoch()) return status::ok();
  if (!next || !(*next == target))
    return error(code::conflict, "commit of epoch " + std::to_string(target.epoch()) +
                                     " without its prepare on node " + self.id);
  // Agents handed to us during the change: their names are in the
  // receiver's adopted list (meta "cluster/in"), written by shard_done.
  lk.unlock();
  auto adopted = node.storage().scan(family::meta, "cluster/in/", {}, 1 << 20);
  if (!adopted) return adopted.error();
  persistence::write_set ops;
  ledger::batch_builder w(ops);
  w.put_cluster_state(map_key, target.to_json(), wall_ms());
  w.erase_cluster_state(next_key);
  std::vector<std::string> names;
  for (auto& [k, v] : *adopted) {
    auto j = persistence::decode_object(value_type::cluster_state, v, "adopted shard");
    if (!j) return j.error();
    for (const auto& n : j->value("agents", json::array())) names.push_back(n.get<std::string>());
    w.erase_cluster_state(k);
  }
  {
    std::lock_guard g(map_mu);
    for (const auto& [shard, h] : outgoing) w.erase_cluster_state(handoff_key(shard));
  }
  KEEL_TRY(write_synced(node, ops));
  lk.lock();
  auto before = map;
  map = std::make_shared<const config::shard_map>(target);
  next.reset();
  outgoing.clear();
  lk.unlock();
  for (const auto& m : before->members())
    if (!target.find(m.id) && m.id != self.id) transport->remove_peer(m.id);
  KEEL_TRY(node.adopt(names));
  outbox->wake();
  change_cv.notify_all();
  log::info("cluster: node " + self.id + " now at epoch " + std::to_string(target.epoch()) + " (" +
            std::to_string(target.members().size()) + " members, took in " +
            std::to_string(names.size()) + " agents)");
  return status::ok();
}

json cluster_node::impl::change_status() {
  std::lock_guard lk(map_mu);
  json j{{"epoch", map->epoch()}, {"map_digest", digest(*map)}};
  if (next) {
    j["next_digest"] = digest(*next);
    std::size_t left = 0;
    for (const auto& [s, h] : outgoing) left += h.handed ? 0 : 1;
    j["next_epoch"] = next->epoch();
    j["handoffs_left"] = left;
    j["handoffs"] = outgoing.size();
  }
  return j;
}

void cluster_node::impl::change_loop() {
  std::unique_lock lk(map_mu);
  while (!change_stop) {
    if (!next) {
      change_cv.wait(lk);
      continue;
    }
    auto target = next;
    std::vector<std::pair<uint32_t, std::string>> todo;
    for (const auto& [s, h] : outgoing)
      if (!h.handed) todo.emplace_back(s, h.to);
    lk.unlock();
    // Every member of either map takes part (a leaving one hands off its
    // shards too); one that missed the prepare (down, or the change began
    // elsewhere) gets it again here.
    bool all_ready = true;
    std::vector<config::cluster_member> asked = target->members();
    for (const auto& m : current_map()->members())
      if (!target->find(m.id)) asked.push_back(m);
    for (const auto& m : asked) {
      if (m.id == self.id) continue;
      auto r = call_sync(m.id, {{"op", "change_status"}}, 5000);
      json st = r ? json::parse(*r, nullptr, false) : json();
      if (!st.is_object()) {
        all_ready = false;
        continue;
      }
      const std::string want = digest(*target);
      if (st.value("epoch", uint64_t{0}) >= target->epoch()) {
        // Committed already, unless to another map of the same epoch: two
        // changes were started at once. Never commit then: a stalled
        // change is visible in `keel cluster status`; two owners are not.
        if (st.value("epoch", uint64_t{0}) == target->epoch() &&
            st.value("map_digest", "") != want) {
          log::warn("cluster: " + m.id + " committed another map at epoch " +
                    std::to_string(target->epoch()) + "; change stalled");
          all_ready = false;
        }
        continue;
      }
      if (st.contains("next_digest") && st.value("next_digest", "") != want) {
        log::warn("cluster: " + m.id + " prepared another change to epoch " +
                  std::to_string(target->epoch()) + "; change stalled");
        all_ready = false;
        continue;
      }
      if (!st.contains("next_epoch")) {
        (void)call_sync(m.id, {{"op", "prepare"}, {"map", target->to_json()}}, 5000);
        all_ready = false;
      } else if (st.value("handoffs_left", 1) != 0) {
        all_ready = false;
      }
    }
    bool progress = true;
    for (const auto& [shard, to] : todo) {
      if (!transport->is_up(to) || !run_handoff(shard, to, target->epoch())) {
        progress = false;
        break;
      }
    }
    bool committed = false;
    if (progress && all_ready && locally_ready()) {
      // Members that leave are told too, so they stop serving.
      json msg{{"op", "commit"}, {"map", target->to_json()}};
      for (const auto& m : asked)
        if (m.id != self.id) (void)call_sync(m.id, msg, 5000);
      if (auto s = commit(*target); s) committed = true;
    }
    lk.lock();
    if (!committed && !change_stop)
      change_cv.wait_for(lk, std::chrono::milliseconds(progress ? 200 : 1000));
  }
}

void cluster_node::impl::start_change_thread() {
  change_thread = std::thread([this] { change_loop(); });
}

void cluster_node::impl::stop_change_thread() {
  {
    std::lock_guard lk(map_mu);
    change_stop = true;
  }
  change_cv.notify_all();
  if (change_thread.joinable()) change_thread.join();
}

void cluster_node::impl::on_change_call(const std::string& op, const json& msg,
                                        transport_handlers::respond_fn respond) {
  if (op == "change_status") return respond(api_detail::dump(change_status()));
  if (op == "prepare" || op == "commit") {
    auto m = config::shard_map::from_json(msg.value("map", json()), "cluster map");
    if (!m) return respond(m.error());
    auto target = std::make_shared<const config::shard_map>(std::move(*m));
    // Both write durably: off the transport thread.
    bool queued = workers.submit([this, op, target, respond] {
      keel::status s = op == "prepare" ? prepare(target) : commit(*target);
      if (!s) return respond(s);
      respond(std::string("{}"));
    });
    if (!queued) respond(error(code::unavailable, "node is shutting down"));
    return;
  }
  uint32_t shard = msg.value("shard", 0u);
  uint64_t epoch = msg.value("epoch", uint64_t{0});
  {
    std::lock_guard lk(map_mu);
    if (!next || next->epoch() != epoch || next->owner(shard) != self.id)
      return respond(error(code::conflict, "node " + self.id + " does not expect shard " +
                                               std::to_string(shard) + " at epoch " +
                                               std::to_string(epoch)));
  }
  if (op != "shard_data" && op != "shard_done")
    return respond(error(code::invalid_argument, "unknown cluster call '" + op + "'"));
  // Blocking reads and fsynced writes: off the transport thread.
  bool queued = workers.submit([this, op, msg, shard, epoch, respond] {
    persistence::write_set ops;
    if (op == "shard_data") {
      auto bundles = actors::decode_bundles(from_hex(msg.value("data", "")));
      if (!bundles) return respond(bundles.error());
      for (const auto& b : *bundles) {
        // A name stored here by an earlier attempt keeps its id, and what
        // that attempt wrote goes first: the sender's copy is the truth.
        auto existing = node.storage().get_agent(b.name);
        if (!existing) return respond(existing.error());
        uint64_t id = 0;
        if (*existing) {
          id = (*existing)->id;
          auto old = actors::export_agent(node.storage(), b.name);
          if (!old) return respond(old.error());
          ledger::batch_builder(ops).erase_bundle(*old);
        } else {
          auto fresh = node.storage().allocate_agent_id();
          if (!fresh) return respond(fresh.error());
          id = *fresh;
        }
        if (auto s = ledger::batch_builder(ops).put_bundle(b, id); !s) return respond(s);
      }
    } else {
      std::string k = "cluster/in/";
      put_u32_be(k, shard);
      ledger::batch_builder(ops).put_cluster_state(
          k, {{"epoch", epoch}, {"agents", msg.value("agents", json::array())}}, wall_ms());
    }
    if (auto s = write_synced(node, ops); !s) return respond(s);
    respond(std::string("{}"));
  });
  if (!queued) respond(error(code::unavailable, "node is shutting down"));
}

void cluster_node::impl::begin_change(std::shared_ptr<const config::shard_map> target,
                                      respond_fn respond) {
  bool queued = workers.submit([this, target, respond] {
    if (auto s = prepare(target); !s) return respond(error_response(s));
    std::size_t moved = 0;
    {
      auto cur = current_map();
      if (!cur->empty()) moved = config::moves_between(*cur, *target).size();
    }
    // The change runs in the background (every member drives it); the
    // caller gets the outcome if it completes within a minute.
    int64_t deadline = wall_ms() + 60'000;
    std::unique_lock lk(map_mu);
    while (map->epoch() < target->epoch() && wall_ms() < deadline && !change_stop)
      change_cv.wait_for(lk, std::chrono::milliseconds(200));
    bool done = map->epoch() >= target->epoch();
    lk.unlock();
    respond(api_detail::json_response(
        done ? 200 : 202,
        {{"epoch", target->epoch()}, {"moved", moved}, {"state", done ? "done" : "moving"}}));
  });
  if (!queued) respond(error_response(error(code::unavailable, "node is shutting down")));
}

}  // namespace keel::net
