// The agent shell's other requests (CAF-free): spawn, terminate, upgrade,
// reads, timers and effect results, and the dispatch of every request to
// its handler.

#include "actors/shell_state.hpp"
#include "ledger/type_catalog.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors::shell_detail {

namespace {

void handle_spawn(shell_state& s, const request_ptr& r, spawn_call& c, int64_t now, batch& b) {
  if (s.exists) {
    fail(*r, error(code::already_exists, "agent " + s.name + " already exists"));
    return;
  }
  const agent::agent_type* t = s.rt->types->find(c.type);
  if (!t) {
    fail(*r, error(code::invalid_argument, "unknown agent type '" + c.type + "'"));
    return;
  }
  // Validate the input before anything is allocated or written.
  auto data = t->initial_data(c.input);
  if (!data) {
    fail(*r, data.error());
    return;
  }
  if (!create(s, r, t, agent_status::active, now)) return;
  s.st = agent::agent_state{};
  s.st.type = s.meta.type;
  ledger::batch_builder(b.ops).put_directory_entry(s.name, s.meta, now);
  decide_into(s, agent::spawn_input{s.meta.type, std::move(c.input), std::string(t->version())},
              now, b);
  s.rt->metrics.spawns.fetch_add(1, std::memory_order_relaxed);
  b.reqs.push_back(r);
  b.done.push_back([r, v = make_view(s)] { call_once(call_of<spawn_call>(r).viewed, v); });
}

void handle_terminate(shell_state& s, const request_ptr& r, const terminate_call& c, int64_t now,
                      batch& b) {
  if (s.meta.origin == persistence::agent_origin::imported) {
    fail(*r, error(code::conflict, "agent " + s.name + " is an imported ledger: it is read-only"));
    return;
  }
  auto reply = decide_into(s, agent::terminate_input{c.by}, now, b);
  if (reply && !reply->ok) {
    fail(*r, error(code::conflict, "agent " + s.name + ": " + reply->message));
    return;
  }
  s.meta.status = s.st.status;
  ledger::batch_builder(b.ops).put_directory_entry(s.name, s.meta, now);
  b.reqs.push_back(r);
  b.done.push_back([r, v = make_view(s)] { call_once(call_of<terminate_call>(r).viewed, v); });
}

// Moves the agent to another version of its type between two steps: c.to
// names it (a hash, a unique prefix of one, or "" for the latest).
void handle_upgrade(shell_state& s, const request_ptr& r, const upgrade_call& c, int64_t now,
                    batch& b) {
  if (s.meta.origin == persistence::agent_origin::imported) {
    fail(*r, error(code::conflict, "agent " + s.name + " is an imported ledger: it is read-only"));
    return;
  }
  const std::string& type = s.meta.type;
  auto resolved = s.rt->types->resolve(type, c.to);
  if (!resolved) {
    fail(*r, resolved.error());
    return;
  }
  const std::string& to = *resolved;
  const agent::agent_type* t = s.rt->catalog->find(type, to);
  if (!t) {
    fail(*r, error(code::not_found, "version " + to + " of agent type " + type + " does not load"));
    return;
  }
  if (status ok = t->can_take_over(s.st); !ok) {
    fail(*r, error(code::conflict,
                   "agent " + s.name + " cannot move to version " + to + ": " + ok.message()));
    return;
  }
  auto reply = decide_into(s, agent::upgrade_input{to, c.by, ""}, now, b);
  if (!reply || !reply->ok) {
    fail(*r, error(code::conflict,
                   "agent " + s.name + ": " + (reply ? reply->message : "nothing to upgrade")));
    return;
  }
  s.type = t;
  b.reqs.push_back(r);
  b.done.push_back([r, body = std::move(reply->body)] {
    call_once(call_of<upgrade_call>(r).answered, result<json>(body));
  });
}

void handle_query(shell_state& s, const request_ptr& r, const query_call& c, batch& b) {
  s.rt->metrics.queries.fetch_add(1, std::memory_order_relaxed);
  result<json> answer = error(code::internal, "query failed");
  try {
    answer = s.type->query(s.st, c.question);
  } catch (const std::exception& e) {
    // A type's bug on odd input must not kill the agent.
    answer = error(code::invalid_argument, std::string("query failed: ") + e.what());
  }
  b.done.push_back(
      [r, answer = std::move(answer)] { call_once(call_of<query_call>(r).answered, answer); });
}

void handle_timer(shell_state& s, const timer_call& c, int64_t now, batch& b) {
  if (holding(s)) {
    // Stays on disk; fed again on resume (and offered again by the timer
    // service meanwhile).
    s.timers_held = true;
    return;
  }
  s.rt->metrics.timers_fired.fetch_add(1, std::memory_order_relaxed);
  decide_into(s, agent::timer_input{c.timer_id}, now, b);
}

// The outcome comes as the agent's input, every field as the effect (or
// the worker) produced it.
void handle_effect_result(shell_state& s, const request_ptr& r, effect_result_call& c, int64_t now,
                          batch& b) {
  s.running.erase({c.outcome.effect, c.outcome.attempt});
  auto reply = decide_into(s, std::move(c.outcome), now, b);
  b.reqs.push_back(r);
  b.done.push_back([r, reply = std::move(reply)] {
    auto& answered = call_of<effect_result_call>(r).answered;
    if (reply && !reply->ok)
      call_once(answered, result<json>(error(code::conflict, reply->message)));
    else
      call_once(answered, result<json>(json{{"recorded", true}}));
  });
}

}  // namespace

bool handle(shell_state& s, const request_ptr& r, int64_t now, batch& b, uint32_t& direct) {
  const bool inbound = inbound_of(*r) != nullptr;
  // Only the request that woke the agent reports it as having been dormant.
  if (!std::holds_alternative<get_call>(r->what) &&
      !std::holds_alternative<terminate_call>(r->what))
    s.view_pending_hibernated = false;
  // Messages spilled to the inbox by this pump are consumed by the next one;
  // anything else queued behind them (a terminate, a timer, a read) must see
  // them first, so it waits too.
  // A paused agent's inbox waits for its resume, not the requests behind it
  // (effect results finish the step in flight; reads answer).
  if (!s.inbox.empty() && !holding(s) && !inbound) return false;
  // Spawn and import create the agent; a timer or wake for one that does
  // not exist does nothing, and anything else is refused.
  const auto missing = [&s, &r] {
    fail(*r, error(code::not_found, "agent " + s.name + " does not exist"));
    return true;
  };
  return std::visit(
      overload{
          [&](spawn_call& c) {
            handle_spawn(s, r, c, now, b);
            return true;
          },
          [&](import_call& c) {
            handle_import(s, r, c, now, b);
            return true;
          },
          [&](timer_call& c) {
            if (s.exists) handle_timer(s, c, now, b);
            return true;
          },
          [&](wake_call&) { return true; },
          [&](message_call& c) {
            return s.exists ? handle_inbound(s, r, inbound_input{c}, now, b, direct) : missing();
          },
          [&](signal_call& c) {
            return s.exists ? handle_inbound(s, r, inbound_input{c}, now, b, direct) : missing();
          },
          [&](query_call& c) {
            if (!s.exists) return missing();
            handle_query(s, r, c, b);
            return true;
          },
          [&](get_call&) {
            if (!s.exists) return missing();
            b.done.push_back([r, v = make_view(s)] { call_once(call_of<get_call>(r).viewed, v); });
            return true;
          },
          [&](terminate_call& c) {
            if (!s.exists) return missing();
            handle_terminate(s, r, c, now, b);
            return true;
          },
          [&](upgrade_call& c) {
            if (!s.exists) return missing();
            handle_upgrade(s, r, c, now, b);
            return true;
          },
          [&](effect_result_call& c) {
            if (!s.exists) return missing();
            handle_effect_result(s, r, c, now, b);
            return true;
          },
          [&](compact_call& c) {
            if (!s.exists) return missing();
            handle_compact(s, r, c, now, b);
            return true;
          },
      },
      r->what);
}

}  // namespace keel::actors::shell_detail
