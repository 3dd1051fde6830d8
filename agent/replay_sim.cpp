// What-if runs: a strict replay up to the first override, then a
// simulation of the agent in which every model and tool call is answered by
// an override, the original run's record or a script, and never by the
// outside world.

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include "agent/loop.hpp"
#include "agent/loop_fold.hpp"
#include "agent/replay.hpp"
#include "agent/replay_walk.hpp"

namespace keel::agent {

namespace {

using namespace replay_detail;
using loop_detail::member;
using loop_detail::u64;

// One attempt of a model or tool call that the agent asked for.
struct call {
  uint64_t effect = 0;
  uint32_t attempt = 1;
  bool model = false;
  json request;  // model: the request loop_type::model_request() built
  std::string tool;
  json arguments;
  uint64_t call_index = 0;  // model: the agent's calls before this one
  uint64_t seq = 0;         // the event that started this attempt
};

// A call of the original run with the answer it got.
struct answered_call {
  call asked;
  effect_result_input outcome;
  int64_t time = 0;  // when the answer was recorded
  uint64_t seq = 0;  // the outcome's seq
  bool used = false;
  const json* replacement = nullptr;  // an override of this answer
};

bool same_call(const call& a, const call& b) {
  return a.model == b.model &&
         (a.model ? a.request == b.request : a.tool == b.tool && a.arguments == b.arguments);
}

// The calls an agent has running, as the shell would: started by
// model_call_effect and tool_call_effect, over with their result or an
// end_effect.
struct call_book {
  const type_versions* versions = nullptr;
  std::deque<call> pending;

  void forget(uint64_t effect) {
    std::erase_if(pending, [effect](const call& c) { return c.effect == effect; });
  }
  std::optional<call> take(uint64_t effect, uint32_t attempt) {
    for (auto it = pending.begin(); it != pending.end(); ++it)
      if (it->effect == effect && it->attempt == attempt) {
        call c = std::move(*it);
        pending.erase(it);
        return c;
      }
    return std::nullopt;
  }
  // After decision `d` was applied to `st`.
  void note(const decision& d, const agent_state& st) {
    const uint64_t first_seq = st.last_seq + 1 - d.events.size();
    auto started_at = [&](uint64_t effect, uint32_t attempt) {
      for (std::size_t i = 0; i < d.events.size(); ++i)
        if (u64(d.events[i].data, "effect") == effect &&
            u64(d.events[i].data, "attempt") == attempt)
          return first_seq + i;
      return st.last_seq;
    };
    for (const auto& fx : d.effects) {
      if (const auto* m = std::get_if<model_call_effect>(&fx)) {
        forget(m->effect);  // a new attempt supersedes an abandoned one
        // The request as the version the agent runs builds it.
        const auto* loop = dynamic_cast<const loop_type*>(versions->find(st.version));
        call c{m->effect, m->attempt, true,          loop ? loop->model_request(st) : json(),
               {},        {},         m->call_index, started_at(m->effect, m->attempt)};
        pending.push_back(std::move(c));
      } else if (const auto* tc = std::get_if<tool_call_effect>(&fx)) {
        forget(tc->effect);
        pending.push_back({tc->effect,
                           tc->attempt,
                           false,
                           {},
                           tc->tool,
                           tc->arguments,
                           0,
                           started_at(tc->effect, tc->attempt)});
      } else if (const auto* end = std::get_if<end_effect>(&fx)) {
        forget(end->effect);
      }
    }
  }
};

// Follows a strict walk: the calls running at each point and, for every
// call answered in the ledger, the call and its answer.
class call_recorder final : public walk_observer {
 public:
  explicit call_recorder(const type_versions& vs) { book.versions = &vs; }

  call_book book;
  std::vector<answered_call> answered;

  void before(const input* in, const agent_state&, uint64_t seq) override {
    current_.reset();
    seq_ = seq;
    // A recovery follows a restart: whatever ran before is gone, and the
    // recovery starts again what it retries.
    if (in && std::holds_alternative<recover_input>(*in)) book.pending.clear();
    const auto* r = in ? std::get_if<effect_result_input>(in) : nullptr;
    if (!r) return;
    // A call started before the walk's base is unknown here; it is
    // answered before or by the first override, so nothing is lost.
    current_ = book.take(r->effect, r->attempt);
  }
  void after(const input* in, const decision& d, const agent_state& st) override {
    const auto* r = in ? std::get_if<effect_result_input>(in) : nullptr;
    if (r && current_) answered.push_back({*current_, *r, d.events.front().time_ms, seq_});
    book.note(d, st);
  }

 private:
  std::optional<call> current_;
  uint64_t seq_ = 0;
};

// A recorded message, signal or termination, fed again in its order.
struct external {
  input in;
  int64_t time = 0;
};

// A timer of the original run, so a what-if fires the same timer as late
// as the node did.
struct recorded_timer {
  int64_t due_ms = 0;
  json payload;
  std::optional<int64_t> fired_ms;
};

class simulation {
 public:
  // A simulation runs one version, `t` (it feeds no upgrade).
  simulation(const type_versions& vs, const agent_type& t, const what_if_options& opts,
             what_if_result& out)
      : t_(t), opts_(opts), out_(out) {
    book_.versions = &vs;
  }

  agent_state st;
  int64_t now = 0;
  std::vector<answered_call> original;
  std::deque<external> inputs;
  std::map<uint64_t, recorded_timer> timers;

  call_book& book() { return book_; }

  // Decides `in` at `at` (or later: time never goes back) and records it.
  void decide(const input& in, int64_t at) {
    now = std::max(now, at);
    const decision d = decide_guarded(t_, st, in, now);
    ++decisions_;
    for (const auto& e : d.events) {
      apply(t_, st, e);
      out_.events.push_back({st.last_seq, e});
    }
    book_.note(d, st);
  }

  // Runs until the agent settles or something cannot be answered.
  void run() {
    for (;;) {
      if (decisions_ >= opts_.max_decisions) {
        out_.stopped = "the run did not settle within " + std::to_string(opts_.max_decisions) +
                       " decisions (max_decisions)";
        return;
      }
      // A paused agent starts nothing and hears only what passes a pause.
      if (!st.paused && !book_.pending.empty()) {
        const call c = book_.pending.front();
        book_.pending.pop_front();
        if (!answer(c)) return;
        continue;
      }
      if (!st.paused && !st.timers.empty()) {
        fire_earliest_timer();
        continue;
      }
      auto next = inputs.begin();
      if (st.paused)
        next = std::find_if(inputs.begin(), inputs.end(), [](const external& x) {
          const auto* s = std::get_if<signal_input>(&x.in);
          return s && passes_pause(s->name);
        });
      if (next != inputs.end()) {
        const external x = *next;
        inputs.erase(next);
        decide(x.in, x.time);
        continue;
      }
      if (st.paused && (!book_.pending.empty() || !st.timers.empty() || !inputs.empty()))
        out_.stopped = "the agent is paused and no recorded signal resumes it";
      return;
    }
  }

 private:
  void fire_earliest_timer() {
    auto due = std::min_element(st.timers.begin(), st.timers.end(),
                                [](auto& a, auto& b) { return a.second.due_ms < b.second.due_ms; });
    const uint64_t id = due->first;
    int64_t at = due->second.due_ms;
    // The same timer as the original's: as late as the node fired it.
    if (auto it = timers.find(id); it != timers.end() && it->second.fired_ms &&
                                   it->second.due_ms == due->second.due_ms &&
                                   it->second.payload == due->second.payload)
      at = std::max(at, *it->second.fired_ms);
    decide(timer_input{id}, at);
  }

  std::string describe(const call& c) const {
    if (c.model)
      return "model call " + std::to_string(c.call_index + 1) + " at seq " + std::to_string(c.seq);
    return "tool call " + shorten(c.tool + "(" + c.arguments.dump() + ")", 120) + " at seq " +
           std::to_string(c.seq);
  }

  // Answers `c` by policy; false (with out_.stopped set) when nothing may.
  bool answer(const call& c) {
    answered_call* match = nullptr;
    for (auto& a : original)
      if (!a.used && same_call(a.asked, c)) {
        match = &a;
        break;
      }
    if (match && (match->replacement || opts_.policy != mock_policy::stop)) {
      match->used = true;
      effect_result_input in = match->outcome;
      if (match->replacement) {
        // Validated before the run: the same call kind, only new ids.
        in = *parse_outcome(*match->replacement, c.model, c.effect, c.attempt);
      } else {
        in.effect = c.effect;
        in.attempt = c.attempt;
        ++out_.answered_recorded;
      }
      decide(in, match->time);
      return true;
    }
    if (opts_.policy == mock_policy::scripted) {
      if (const json* next = next_scripted(c)) {
        decide(*parse_outcome(*next, c.model, c.effect, c.attempt), now);
        ++out_.answered_scripted;
        return true;
      }
      out_.stopped = describe(c) + " has no answer: " +
                     (c.model ? std::string("the script has no more model replies")
                              : "the script has no more answers for " + c.tool) +
                     " (policy scripted)";
      return false;
    }
    out_.stopped = describe(c) + " has no answer" +
                   (opts_.policy == mock_policy::stop
                        ? std::string(" (policy stop)")
                        : std::string(c.model ? ": no recorded call made this request"
                                              : ": no recorded call had these arguments") +
                              " (policy recorded)");
    return false;
  }

  const json* next_scripted(const call& c) {
    const json& s = opts_.script;
    const json& list = c.model ? member(s, "model") : member(member(s, "tools"), c.tool.c_str());
    std::size_t& used = c.model ? model_used_ : tool_used_[c.tool];
    if (!list.is_array() || used >= list.size()) return nullptr;
    return &list[used++];
  }

  const agent_type& t_;
  const what_if_options& opts_;
  what_if_result& out_;
  call_book book_;
  uint32_t decisions_ = 0;
  std::size_t model_used_ = 0;
  std::map<std::string, std::size_t> tool_used_;
};

status check_script(const json& script) {
  auto bad = [](const std::string& why) {
    return error(code::invalid_argument,
                 "script: " + why +
                     " (a script is {\"model\": [reply...], \"tools\": {\"NAME\": [answer...]}})");
  };
  if (script.is_null()) return status::ok();
  if (!script.is_object()) return bad("not an object");
  for (auto it = script.begin(); it != script.end(); ++it)
    if (it.key() != "model" && it.key() != "tools")
      return bad("unknown field \"" + it.key() + "\"");
  const json& model = member(script, "model");
  if (!model.is_null() && !model.is_array()) return bad("\"model\" must be an array");
  if (model.is_array())
    for (std::size_t i = 0; i < model.size(); ++i)
      if (auto r = parse_outcome(model[i], true, 0, 1); !r)
        return bad("model reply " + std::to_string(i) + ": " + r.error().message());
  const json& tools = member(script, "tools");
  if (!tools.is_null() && !tools.is_object()) return bad("\"tools\" must be an object");
  if (tools.is_object())
    for (auto it = tools.begin(); it != tools.end(); ++it) {
      if (!it->is_array()) return bad("the answers for " + it.key() + " must be an array");
      for (std::size_t i = 0; i < it->size(); ++i)
        if (auto r = parse_outcome((*it)[i], false, 0, 1); !r)
          return bad(it.key() + " answer " + std::to_string(i) + ": " + r.error().message());
    }
  return status::ok();
}

}  // namespace

result<what_if_result> replay_what_if(const type_versions& vs, agent_state base,
                                      const std::vector<recorded_event>& events,
                                      const what_if_options& opts) {
  auto invalid = [](std::string why) { return error(code::invalid_argument, std::move(why)); };
  if (opts.overrides.empty()) return invalid("a what-if needs at least one override");
  if (status s = check_script(opts.script); !s) return s;
  auto find = [&events](uint64_t seq) -> const recorded_event* {
    auto it = std::lower_bound(events.begin(), events.end(), seq,
                               [](const recorded_event& e, uint64_t s) { return e.seq < s; });
    return it != events.end() && it->seq == seq ? &*it : nullptr;
  };
  for (const auto& [seq, rep] : opts.overrides) {
    const recorded_event* at = find(seq);
    if (!at)
      return invalid("override at seq " + std::to_string(seq) + ": the ledger has no such seq" +
                     (events.empty() ? std::string()
                                     : " (it holds seqs " + std::to_string(events.front().seq) +
                                           " to " + std::to_string(events.back().seq) + ")"));
    if (!is_outcome(at->ev.type))
      return invalid("override at seq " + std::to_string(seq) + ": seq " + std::to_string(seq) +
                     " holds " + std::string(to_string(at->ev.type)) +
                     ", not the outcome of a model or tool call (model_replied, "
                     "effect_completed, effect_failed or compensation_completed)");
  }

  what_if_result out;
  out.original = trace_of(events);
  const uint64_t first = opts.overrides.begin()->first;

  // The original run's calls and answers, from a walk of the whole ledger.
  call_recorder whole(vs);
  const strict_result all = walk(vs, base, events, 0, &whole);

  call_recorder upto(vs);
  out.prefix = walk(vs, std::move(base), events, first, &upto);
  const std::size_t done = out.prefix.events;
  out.events.assign(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(done));
  if (out.prefix.diverged) {
    const divergence& d = *out.prefix.diverged;
    out.stopped = "the recorded ledger does not replay: it diverges at seq " +
                  std::to_string(d.seq) + " (" + d.reason + "), before the first override at seq " +
                  std::to_string(first);
    out.replayed = trace_of(out.events);
    return out;
  }
  const recorded_event& at = *find(first);
  if (done == events.size() || events[done].seq != first)
    return invalid("override at seq " + std::to_string(first) + ": that " +
                   std::string(to_string(at.ev.type)) +
                   " does not begin a decision (it follows a timer, a signal or a recovery in "
                   "the same decision): only an outcome fed to the agent can be replaced");
  const agent_type* tp = vs.find(out.prefix.state.version);
  if (!tp)
    return invalid("override at seq " + std::to_string(first) + ": the agent runs version " +
                   out.prefix.state.version + " of type " + out.prefix.state.type +
                   " there, which this node does not have");
  const agent_type& t = *tp;
  auto in = override_input(t, out.prefix.state, at.ev, opts.overrides.begin()->second);
  if (!in) return invalid("override at seq " + std::to_string(first) + ": " + in.error().message());

  simulation sim(vs, t, opts, out);
  sim.original = std::move(whole.answered);
  for (auto& a : sim.original) {
    if (a.seq <= first) a.used = true;  // answered before, or by, the first override
    if (a.seq > first)
      if (auto it = opts.overrides.find(a.seq); it != opts.overrides.end())
        a.replacement = &it->second;
  }
  for (auto it = std::next(opts.overrides.begin()); it != opts.overrides.end(); ++it) {
    const auto a = std::find_if(sim.original.begin(), sim.original.end(),
                                [&](const answered_call& x) { return x.seq == it->first; });
    const std::string where = "override at seq " + std::to_string(it->first) + ": ";
    if (a == sim.original.end()) {
      if (all.diverged && all.diverged->seq <= it->first)
        return invalid(where + "the ledger replays only up to seq " +
                       std::to_string(all.diverged->seq) + ", so its call cannot be identified");
      return invalid(where + "that event answers no model or tool call fed to the agent");
    }
    if (auto r = parse_outcome(it->second, a->asked.model, 0, 1); !r)
      return invalid(where + r.error().message());
  }

  for (const auto& e : events) {
    if (e.ev.type == event_type::timer_set)
      sim.timers[u64(e.ev.data, "timer")] = {e.ev.data.value("due_ms", int64_t{0}),
                                             member(e.ev.data, "payload"), std::nullopt};
    if (e.ev.type == event_type::timer_fired)
      if (auto it = sim.timers.find(u64(e.ev.data, "timer")); it != sim.timers.end())
        it->second.fired_ms = e.ev.time_ms;
    // Messages, signals and terminations always begin their decision.
    if (e.seq > first &&
        (e.ev.type == event_type::message_received || e.ev.type == event_type::signal_received ||
         e.ev.type == event_type::terminated))
      if (auto x = input_of(t, out.prefix.state, e.ev))
        sim.inputs.push_back({std::move(*x), e.ev.time_ms});
  }

  sim.st = out.prefix.state;
  sim.now = done > 0 ? events[done - 1].ev.time_ms : 0;
  sim.book().pending = std::move(upto.book.pending);
  sim.book().take(in->effect, in->attempt);  // answered by the override
  if (opts.max_decisions == 0) {
    out.stopped = "the run did not settle within 0 decisions (max_decisions)";
  } else {
    sim.decide(*in, at.ev.time_ms);
    sim.run();
  }
  out.replayed = trace_of(out.events);
  if (!out.stopped.empty())
    out.replayed.push_back(
        {out.events.empty() ? 0 : out.events.back().seq, "stopped", out.stopped, nullptr});
  return out;
}

}  // namespace keel::agent
