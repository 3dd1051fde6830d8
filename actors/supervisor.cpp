// The supervisor: the node's table name -> live agent shell.
//
// Activation is single-flight by construction: the first request for a
// dormant name spawns its shell and enters it in the table at once; later
// requests go to the same shell's mailbox and are handled after it has
// loaded. A shell that wants to hibernate asks first; the supervisor forgets
// it only if the table still points at that shell, and any request that
// reached the shell meanwhile is sent back here and activates a new one.
//
// Idleness is swept, not timed per agent: each shell stamps an atomic on
// every request and write, and one periodic tick here tells the shells that
// have been quiet for idle_ms to check themselves. A per-agent CAF timer
// would be (re-)registered on the activation and message paths.

#include <algorithm>
#include <unordered_map>

#include "base/clock.hpp"

#include "actors/caf_types.hpp"
#include "actors/effect_dispatch.hpp"

namespace keel::actors {

namespace {

struct live_shell {
  caf::actor shell;
  std::shared_ptr<std::atomic<int64_t>> last_active;
};

struct supervisor_state {
  std::unordered_map<std::string, live_shell> live;
  std::unordered_map<caf::actor_addr, std::string> names;
  // Shells stopped by an evict order, until their down message.
  std::unordered_map<caf::actor_addr, evict_ptr> evicting;
  static inline const char* name = "keel.supervisor";
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

void forget(supervisor_actor* self, runtime* rt, const caf::actor_addr& who) {
  auto& s = self->state;
  auto n = s.names.find(who);
  if (n == s.names.end()) return;
  auto it = s.live.find(n->second);
  if (it != s.live.end() && it->second.shell.address() == who) s.live.erase(it);
  rt->set_live(n->second, false);
  s.names.erase(n);
}

caf::behavior supervisor(supervisor_actor* self, runtime* rt) {
  // A quarter of idle_ms, between 1 ms and 1 s: agents hibernate within
  // idle_ms plus one tick.
  // (Read at each tick: a type registered at run time may lower it.)
  auto tick = [rt] {
    return std::chrono::milliseconds(
        std::clamp<int64_t>(int64_t{rt->sweep_idle_ms.load()} / 4, 1, 1000));
  };
  self->delayed_send(self, tick(), idle_atom::value);
  self->set_down_handler([self, rt](caf::down_msg& dm) {
    if (auto ev = self->state.evicting.find(dm.source); ev != self->state.evicting.end()) {
      evict_ptr e = std::move(ev->second);
      self->state.evicting.erase(ev);
      if (--e->waiting == 0) e->done(e->stopped);
      return;
    }
    // A shell died without asking (an escaped exception): forget it.
    if (self->state.names.count(dm.source)) {
      rt->metrics.agent_failures.fetch_add(1, std::memory_order_relaxed);
      rt->metrics.live.fetch_sub(1, std::memory_order_relaxed);
      forget(self, rt, dm.source);
    }
  });
  return {
      [self, rt](request_ptr& r) {
        // Checked here too, not only at intake: a request that passed intake
        // just before its shard started moving, or one a hibernating shell
        // sends back, must not activate the agent again.
        if (hand_elsewhere(*rt, r)) return;
        auto& s = self->state;
        auto it = s.live.find(r->name);
        if (it == s.live.end()) {
          auto stamp = std::make_shared<std::atomic<int64_t>>(mono_ns());
          caf::actor shell =
              spawn_agent_shell(self, rt, caf::actor_cast<caf::actor>(self), r->name, stamp);
          self->monitor(shell);
          s.names.emplace(shell.address(), r->name);
          it = s.live.emplace(r->name, live_shell{std::move(shell), std::move(stamp)}).first;
          rt->metrics.activations.fetch_add(1, std::memory_order_relaxed);
          rt->metrics.live.fetch_add(1, std::memory_order_relaxed);
          rt->set_live(r->name, true);
        }
        self->send(it->second.shell, std::move(r));
      },
      [self, rt](hibernate_atom, const std::string& name) -> bool {
        auto& s = self->state;
        auto it = s.live.find(name);
        auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
        if (it == s.live.end() || it->second.shell.address() != sender) return false;
        self->demonitor(it->second.shell);
        s.names.erase(sender);
        s.live.erase(it);
        rt->set_live(name, false);
        rt->metrics.hibernations.fetch_add(1, std::memory_order_relaxed);
        rt->metrics.live.fetch_sub(1, std::memory_order_relaxed);
        return true;
      },
      [self, rt, tick](idle_atom) {
        const int64_t now = mono_ns();
        const int64_t idle_ns = int64_t{rt->sweep_idle_ms.load()} * 1'000'000;
        for (auto& [name, entry] : self->state.live)
          if (now - entry.last_active->load(std::memory_order_relaxed) >= idle_ns)
            self->send(entry.shell, idle_atom::value);
        // A worker that let the lease of a non-idempotent task run out may
        // have done the work: its agent puts the call in doubt.
        for (auto& t : rt->tasks.take_lapsed(wall_ms()))
          post_result(rt, t.agent, t.effect, t.attempt,
                      effect_outcome::unknown("worker " + t.worker + " held task " + t.id +
                                                  " past its lease without reporting: it may "
                                                  "have done the work",
                                              false));
        self->delayed_send(self, tick(), idle_atom::value);
      },
      [self, rt](evict_atom, evict_ptr& e) {
        auto& s = self->state;
        std::size_t n = 0;
        for (auto it = s.live.begin(); it != s.live.end();) {
          if (!e->pick(it->first)) {
            ++it;
            continue;
          }
          // Still monitored: done runs once the last of them is down.
          self->send_exit(it->second.shell, caf::exit_reason::user_shutdown);
          s.names.erase(it->second.shell.address());
          s.evicting.emplace(it->second.shell.address(), e);
          rt->set_live(it->first, false);
          rt->metrics.live.fetch_sub(1, std::memory_order_relaxed);
          it = s.live.erase(it);
          ++n;
        }
        e->stopped = e->waiting = n;
        if (n == 0) e->done(0);
      },
      [self](shutdown_atom) {
        for (auto& [name, entry] : self->state.live)
          self->send_exit(entry.shell, caf::exit_reason::user_shutdown);
        self->state.live.clear();
        self->state.names.clear();
        self->quit();
      },
  };
}

}  // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, runtime* rt) {
  return sys.spawn(supervisor, rt);
}

}  // namespace keel::actors
