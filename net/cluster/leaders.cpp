// A replicated member's routing (docs/replication.md): which member leads
// an agent's group, waiting a bounded time for one during an election,
// read indexes, and what the member shows of its groups.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "base/clock.hpp"
#include "base/sha256.hpp"
#include "ledger/audit.hpp"
#include "net/api/support.hpp"
#include "net/cluster/node_impl.hpp"

namespace keel::net {

using api_detail::json_response;

void cluster_node::read_index(std::string_view name,
                              std::function<void(const keel::status&)> then) {
  auto* r = impl_->opts.repl;
  if (!r) return then(keel::status::ok());
  // The read goes on off the raft loop: it may read the store.
  r->barrier(r->group_of(name), [p = impl_.get(), then = std::move(then)](const keel::status& s) {
    if (!p->workers.submit([then, s] { then(s); }))
      then(error(code::unavailable, "node is shutting down"));
  });
}

std::string cluster_node::impl::known_leader(uint32_t g, bool ask) {
  if (opts.repl->replicates(self.id, g)) return opts.repl->leader_of(g);
  return ask ? ask_leader(g) : hinted_leader(g);
}

std::string cluster_node::impl::hinted_leader(uint32_t g) const {
  std::lock_guard lk(hints_mu);
  auto it = hints.find(g);
  if (it == hints.end() || wall_ms() - it->second.at_ms > 1000) return {};
  return it->second.member;
}

std::string cluster_node::impl::ask_leader(uint32_t g) {
  for (const auto& id : opts.repl->replicas_of(g)) {
    if (!transport->is_up(id)) continue;
    auto r = call_sync(id, {{"op", "leader_of"}, {"group", g}}, 1000);
    if (!r) continue;
    auto j = json::parse(*r, nullptr, false);
    std::string leader = j.is_object() ? j.value("leader", "") : "";
    if (leader.empty()) continue;
    std::lock_guard lk(hints_mu);
    hints[g] = {leader, wall_ms()};
    return leader;
  }
  return {};
}

void cluster_node::impl::wait_for_leader(uint32_t g, http_request req, respond_fn respond) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(opts.cluster.leader_wait_ms);
  while (!stopped.load(std::memory_order_acquire)) {
    if (opts.repl->leading(g)) {
      // Led here now: answered as if forwarded, so it is never sent on.
      api* a = http.load(std::memory_order_acquire);
      if (!a) break;
      return a->handle_forwarded(std::move(req), self.id, std::move(respond));
    }
    std::string leader = known_leader(g, true);
    if (!leader.empty() && leader != self.id && transport->is_up(leader))
      return forward_to(leader, std::move(req), std::move(respond));
    std::unique_lock lk(leader_mu);
    // Woken by this node's own leadership changes; another node's election
    // shows in leader_of, looked at again every 50 ms.
    if (leader_cv.wait_until(lk, std::min(deadline, std::chrono::steady_clock::now() +
                                                        std::chrono::milliseconds(50))) ==
            std::cv_status::timeout &&
        std::chrono::steady_clock::now() >= deadline)
      break;
  }
  json j{{"error",
          {{"code", "unavailable"},
           {"message", "group " + std::to_string(g) + " has no leader reachable from node " +
                           self.id + " (an election, or too few members up); retry"},
           {"group", g}}}};
  http_response r = json_response(503, j);
  r.headers.emplace_back("Retry-After", "1");
  respond(std::move(r));
}

result<json> cluster_node::impl::group_digest(uint32_t g) {
  auto& db = node.storage();
  json agents = json::object();
  std::string after;
  for (;;) {
    auto page = db.list_agents("", after, 1000);
    if (!page) return page.error();
    for (const auto& a : *page) {
      if (opts.repl->group_of(a.name) != g) continue;
      auto seq = db.last_ledger_seq(a.meta.id);
      if (!seq) return seq.error();
      auto head = actors::chain_head_at(db, a.meta.id, *seq, a.name);
      if (!head) return head.error();
      agents[a.name] = {{"seq", *seq}, {"head", to_hex(*head)}};
    }
    if (page->size() < 1000) break;
    after = page->back().name;
  }
  uint64_t applied = 0;
  for (const auto& s : opts.repl->group_status())
    if (s.id == g) applied = s.applied_index;
  return json{{"group", g}, {"member", self.id}, {"applied_index", applied}, {"agents", agents}};
}

json cluster_node::impl::groups_json() const {
  json groups = json::array();
  for (const auto& g : opts.repl->group_status()) {
    json replicas = json::array();
    for (const auto& rep : g.replicas)
      replicas.push_back({{"member", rep.member},
                          {"raft_id", rep.id},
                          {"role", rep.role},
                          {"match_index", rep.match_index}});
    json gj{{"group", g.id},
            {"role", g.role},
            {"term", g.term},
            {"leader", g.leader},
            {"last_index", g.last_index},
            {"commit_index", g.commit_index},
            {"applied_index", g.applied_index},
            {"ready", g.leading.has_value()}};
    if (!replicas.empty()) gj["replicas"] = std::move(replicas);
    if (!g.joining.empty()) gj["joining"] = g.joining;
    // Catching up from another replica's state (a snapshot install).
    const auto& f = g.fetch;
    if (f.fetching || f.incomplete || f.installed != 0 || f.failed != 0)
      gj["snapshot"] = {{"fetching", f.fetching},   {"incomplete", f.incomplete},
                        {"bytes", f.bytes},         {"keys", f.keys},
                        {"installed", f.installed}, {"failed", f.failed}};
    groups.push_back(std::move(gj));
  }
  return groups;
}

}  // namespace keel::net
