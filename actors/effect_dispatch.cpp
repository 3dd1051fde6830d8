#include "actors/effect_dispatch.hpp"

#include "base/clock.hpp"
#include "base/names.hpp"
#include "effects/secret_table.hpp"

namespace keel::actors {

namespace {

using blocking_call =
    std::function<effect_outcome(const secret_scope&, std::shared_ptr<const abort_signal>)>;

// False when the pool is stopping: the effect is left to recovery. The
// call gets the node's secrets as they are when it starts (references are
// expanded then, on this node), and its outcome is redacted before the
// agent records it.
//
// From submission until it returns, the call is registered in rt->calls
// under its agent, with the abort signal its runner gets: a call aborted
// while still queued never starts and fails, retryable and not applied.
// A job the pool drops at stop() unregisters as it is destroyed.
//
// Replicated, a call starts only while this node leads the agent's group
// in the shell's term and holds its lease (docs/replication.md, "The
// leader lease"). Registered first, checked second: a node that lets go
// of the group after the check raises the signal of this call too.
bool run_on_pool(const effect_target& t, uint64_t effect, uint32_t attempt, blocking_call call) {
  runtime* rt = t.rt;
  std::string name = t.agent;
  auto reg = rt->calls.add(name);
  return rt->pool->submit([rt, name, effect, attempt, call = std::move(call), reg, group = t.group,
                           term = t.term]() mutable {
    effect_outcome o;
    if (reg->signal()->raised()) {
      o = effect_outcome::failure("the call was aborted before it started", true);
    } else if (rt->repl != nullptr && rt->repl->leading(group) != term) {
      o = effect_outcome::failure(
          "the call was not started: this node no longer leads the agent's group", true);
    } else {
      const secret_scope secrets = rt->secrets ? rt->secrets->scope() : secret_scope();
      try {
        o = call(secrets, reg->signal());
      } catch (const std::exception& e) {
        // A runner that threw may have got as far as the tool.
        o = effect_outcome::unknown(std::string("effect threw: ") + e.what(), true);
      }
      secrets.redact(o);
    }
    reg.reset();  // returned: no longer abortable
    post_result(rt, name, effect, attempt, std::move(o));
  });
}

// A reference to a secret that is missing (or unusable) fails the call
// before anything is sent: not applied, and not worth retrying until an
// operator sets it.
effect_outcome unresolved(const std::string& who, const status& s) {
  return effect_outcome::failure(who + ": " + s.message(), false);
}

}  // namespace

// Hands an effect's outcome back to its agent, through the supervisor: the
// agent may have left and is then activated again.
agent::effect_result_input result_input(uint64_t effect, uint32_t attempt, effect_outcome o) {
  return {effect,      attempt,        o.ok, std::move(o.result), std::move(o.error),
          o.retryable, o.maybe_applied};
}

void post_result(runtime* rt, const std::string& agent, uint64_t effect, uint32_t attempt,
                 effect_outcome o) {
  if (!o.ok) rt->metrics.effect_failures.fetch_add(1, std::memory_order_relaxed);
  auto r = make_request(agent, effect_result_call{result_input(effect, attempt, std::move(o)), {}});
  r->received_ns = mono_ns();
  rt->route(std::move(r));
}

std::string effect_key(const std::string& agent, uint64_t effect) {
  return agent + "#" + std::to_string(effect);
}

bool dispatch_model(const effect_target& s, const agent::agent_state& st,
                    const agent::model_call_effect& m) {
  const agent::loop_type* loop = s.loop;
  if (!loop) return false;
  const config::agent_spec& spec = loop->spec();
  s.rt->metrics.model_calls.fetch_add(1, std::memory_order_relaxed);
  auto it = s.rt->plugins.providers.find(spec.model.provider);
  if (it == s.rt->plugins.providers.end()) {
    post_result(s.rt, s.agent, m.effect, m.attempt,
                effect_outcome::failure(
                    "no model provider '" + spec.model.provider + "' on this node", false));
    return true;
  }
  std::shared_ptr<model_provider> provider = it->second;
  model_call_context ctx{
      s.agent, m.call_index, effect_key(s.agent, m.effect), m.attempt, spec.model.retry.timeout_ms,
      nullptr};
  json req = loop->model_request(st);
  return run_on_pool(s, m.effect, m.attempt,
                     [provider, &spec, req = std::move(req), ctx](
                         const secret_scope& secrets, std::shared_ptr<const abort_signal> abort) {
                       auto resolved = secrets.resolve(spec.model);
                       if (!resolved)
                         return unresolved("model " + spec.model.model, resolved.error());
                       model_call_context c = ctx;
                       c.abort = std::move(abort);
                       return provider->complete(*resolved ? **resolved : spec.model, req, c);
                     });
}

bool dispatch_tool(const effect_target& s, const agent::tool_call_effect& t) {
  const agent::loop_type* loop = s.loop;
  if (!loop) return false;
  const config::tool_spec* ts = loop->spec().find_tool(t.tool);
  if (!ts) return false;  // the spec changed under a running effect: recovery decides
  s.rt->metrics.tool_calls.fetch_add(1, std::memory_order_relaxed);
  runtime* rt = s.rt;
  const std::string name = s.agent;
  const std::string key = effect_key(name, t.effect);
  const uint64_t effect = t.effect;
  const uint32_t attempt = t.attempt;
  switch (ts->kind) {
    case config::tool_kind::worker:
      rt->tasks.add({task_id(s.agent_id, effect, attempt),
                     ts->queue,
                     name,
                     effect,
                     attempt,
                     ts->name,
                     t.arguments,
                     ts->lease_ms,
                     {},
                     0,
                     0,
                     ts->idempotent});
      return false;
    case config::tool_kind::send_message: {
      const std::string to = t.arguments.value("to", "");
      message_call m;
      m.id = key;
      m.from = name;
      m.body = t.arguments.value("message", json());
      m.accepted = [rt, name, effect, attempt, to](result<send_ack> a) {
        // queued: durable in this node's outbox; the receiver's node is down
        // and gets it (once) when it returns.
        effect_outcome o =
            a ? effect_outcome::success({{"delivered", !a->queued},
                                         {"queued", a->queued},
                                         {"to", to},
                                         {"id", a->id},
                                         {"duplicate", a->duplicate}})
              : effect_outcome::failure("cannot deliver to " + to + ": " + a.error().message(),
                                        a.error().error_code() == code::unavailable);
        post_result(rt, name, effect, attempt, std::move(o));
      };
      if (to.empty() || !validate_agent_name(to)) {
        call_once(m.accepted,
                  result<send_ack>(error(code::invalid_argument, "\"to\" must name an agent")));
        return true;
      }
      auto r = make_request(to, std::move(m));
      r->received_ns = mono_ns();
      rt->route(std::move(r));
      return true;
    }
    case config::tool_kind::spawn_agent: {
      const std::string child = t.arguments.value("name", "");
      spawn_call c;
      c.type = t.arguments.value("type", "");
      c.input = t.arguments.value("input", json());
      c.viewed = [rt, name, effect, attempt, child](result<agent_view> v) {
        effect_outcome o;
        if (v)
          o = effect_outcome::success({{"spawned", child}, {"type", v->type}});
        else if (v.error().error_code() == code::already_exists && attempt > 1)
          o = effect_outcome::success(
              {{"spawned", child}, {"existed", true}});  // our own earlier attempt
        else
          o = effect_outcome::failure("cannot spawn " + child + ": " + v.error().message(),
                                      v.error().error_code() == code::unavailable);
        post_result(rt, name, effect, attempt, std::move(o));
      };
      if (!validate_agent_name(child) || !rt->types->find(c.type)) {
        call_once(c.viewed, result<agent_view>(
                                error(code::invalid_argument,
                                      "spawn_agent needs a valid \"name\" and a known \"type\"")));
        return true;
      }
      auto r = make_request(child, std::move(c));
      r->received_ns = mono_ns();
      rt->route(std::move(r));
      return true;
    }
    case config::tool_kind::http:
    case config::tool_kind::exec: {
      auto it = rt->plugins.runners.find(ts->kind);
      if (it == rt->plugins.runners.end()) {
        post_result(rt, name, effect, attempt,
                    effect_outcome::failure(std::string("no runner for ") +
                                                config::to_string(ts->kind) + " tools on this node",
                                            false));
        return true;
      }
      std::shared_ptr<tool_runner> runner = it->second;
      tool_call_context ctx{name, key, attempt, ts->retry.timeout_ms, nullptr};
      return run_on_pool(
          s, effect, attempt,
          [runner, ts, args = t.arguments, ctx](const secret_scope& secrets,
                                                std::shared_ptr<const abort_signal> abort) {
            auto resolved = secrets.resolve(*ts);
            if (!resolved) return unresolved("tool " + ts->name, resolved.error());
            tool_call_context c = ctx;
            c.abort = std::move(abort);
            return runner->run(*resolved ? **resolved : *ts, args, c);
          });
    }
    case config::tool_kind::sleep:
    case config::tool_kind::ask_human:
      return false;  // the loop waits for a timer or a signal
  }
  return false;
}

}  // namespace keel::actors
