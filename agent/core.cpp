#include "agent/core.hpp"

#include <algorithm>

#include "agent/counter.hpp"
#include "base/names.hpp"
#include "config/agent_spec.hpp"

namespace keel::agent {

reply_effect reply_ok(json body) {
  return {true, std::move(body), {}, {}, {}};
}
reply_effect reply_error(std::string code, std::string message) {
  return {false, nullptr, std::move(code), std::move(message), {}};
}

const agent_type* find_builtin_type(std::string_view name) {
  static const counter_type counter;
  if (name == counter.name()) return &counter;
  return nullptr;
}

json state_to_json(const agent_state& s) {
  json timers = json::array();
  for (const auto& [id, t] : s.timers)
    timers.push_back({{"id", id}, {"due_ms", t.due_ms}, {"payload", t.payload}});
  json j = {{"type", s.type},
            {"status", std::string(to_string(s.status))},
            {"last_seq", s.last_seq},
            {"last_arrival", s.last_arrival},
            {"next_timer_id", s.next_timer_id},
            {"timers", std::move(timers)},
            {"data", type_data(s)}};
  // Written only when set: snapshots of agents that never used them keep
  // their size.
  if (!s.version.empty()) j["version"] = s.version;
  if (s.paused) j["paused"] = true;
  if (!s.forks.empty()) {
    json forks = json::array();
    for (const auto& f : s.forks) forks.push_back({{"name", f.name}, {"at", f.at}});
    j["forks"] = std::move(forks);
  }
  return j;
}

bool is_operator_signal(std::string_view name) {
  return std::find(config::node_signals.begin(), config::node_signals.end(), name) !=
         config::node_signals.end();
}

std::string signal_input_id(uint64_t arrival) {
  return "auto-signal-" + std::to_string(arrival);
}

status check_signal_name(const agent_type& t, std::string_view name, std::string_view agent) {
  if (is_operator_signal(name)) return status::ok();
  const std::vector<std::string> own = t.signals();
  if (std::find(own.begin(), own.end(), name) != own.end()) return status::ok();
  std::string takes;
  for (const auto& n : own) takes += (takes.empty() ? "" : ", ") + n;
  std::string msg = "agent " + std::string(agent) + " (type " + std::string(t.name()) +
                    ") takes no signal '" + std::string(name) + "'";
  if (const std::string near = nearest_name(name, own); !near.empty())
    msg += " (did you mean " + near + "?)";
  msg += takes.empty() ? "; it takes only pause and resume" : "; it takes " + takes;
  return error(code::invalid_argument, std::move(msg));
}

status check_signal_now(const agent_type& t, const agent_state& s, const signal_input& sig,
                        std::string_view agent) {
  // The node's own records: a terminated parent still records its forks.
  if (sig.name == "forked" || sig.name == "salvaged") return status::ok();
  const std::string who = "agent " + std::string(agent);
  if (s.status != agent_status::active)
    return error(code::conflict, who + " is " + std::string(to_string(s.status)));
  if (sig.name == "pause" && s.paused) return error(code::conflict, who + " is already paused");
  if (sig.name == "resume" && !s.paused) return error(code::conflict, who + " is not paused");
  if (is_operator_signal(sig.name)) return status::ok();
  status ok = t.signal_applies(s, sig);
  if (ok || ok.error_code() != code::conflict) return ok;
  return error(code::conflict, who + " is " + listed_phase(t, s) + ": " + ok.message());
}

bool waits_for_human(std::string_view phase) {
  return phase == "waiting_approval" || phase == "waiting_human" || phase == "in_doubt";
}

const std::vector<std::string>& known_phases() {
  static const std::vector<std::string> phases = {
      "idle",          "running",  "thinking", "running_tool", "waiting_worker", "waiting_approval",
      "waiting_human", "sleeping", "in_doubt", "retrying",     "compensating",   "terminated",
      "failed",        "unknown"};
  return phases;
}

std::string listed_phase(const agent_type& t, const agent_state& s) {
  if (s.status != agent_status::active) return std::string(to_string(s.status));
  std::string p = t.phase(s);
  return p.empty() ? "idle" : p;
}

bool passes_pause(std::string_view signal) {
  return is_operator_signal(signal) || signal == "cancel" || signal == "resolve";
}

result<agent_state> state_from_json(const json& j, std::string_view what) {
  try {
    agent_state s;
    s.type = j.at("type").get<std::string>();
    const std::string st = j.at("status").get<std::string>();
    const auto parsed = agent_status_from_string(st);
    if (!parsed)
      return error(code::corruption, "corrupt snapshot (" + std::string(what) +
                                         "): unknown agent status '" + st + "'");
    s.status = *parsed;
    s.last_seq = j.at("last_seq").get<uint64_t>();
    s.last_arrival = j.at("last_arrival").get<uint64_t>();
    s.next_timer_id = j.at("next_timer_id").get<uint64_t>();
    for (const auto& t : j.at("timers"))
      s.timers[t.at("id").get<uint64_t>()] = {t.at("due_ms").get<int64_t>(), t.at("payload")};
    const json& data = j.at("data");
    // Snapshots written before versions were recorded: the loop's data.
    s.version = j.value("version", legacy_version(data));
    if (status ok = load_type_data(s, data, what); !ok) return ok;
    s.paused = j.value("paused", false);
    if (j.contains("forks"))
      for (const auto& f : j.at("forks"))
        s.forks.push_back({f.at("name").get<std::string>(), f.at("at").get<uint64_t>()});
    return s;
  } catch (const json::exception& e) {
    return error(code::corruption,
                 "corrupt snapshot (" + std::string(what) + "): " + std::string(e.what()));
  }
}

json type_data(const agent_state& s) {
  if (!s.loop) return s.data;
  json d = s.data;
  d["ctl"] = to_json(*s.loop);
  return d;
}

status load_type_data(agent_state& s, json data, std::string_view what) {
  auto ctl = data.is_object() ? data.find("ctl") : data.end();
  if (ctl == data.end()) {
    s.data = std::move(data);
    s.loop.reset();
    return status::ok();
  }
  auto loop = loop_state_from_json(*ctl, what);
  if (!loop) return loop.error();
  data.erase(ctl);
  s.data = std::move(data);
  s.loop = std::move(*loop);
  return status::ok();
}

std::string legacy_version(const json& type_data) {
  if (!type_data.is_object()) return {};
  auto ctl = type_data.find("ctl");
  if (ctl == type_data.end() || !ctl->is_object()) return {};
  auto h = ctl->find("spec_hash");
  return h != ctl->end() && h->is_string() ? h->get<std::string>() : std::string();
}

std::string version_of(const agent_state& st, const event& first) {
  if (first.type != event_type::spawned) return st.version;
  auto v = first.data.find("version");
  if (v != first.data.end() && v->is_string()) return v->get<std::string>();
  auto d = first.data.find("data");
  return d == first.data.end() ? std::string() : legacy_version(*d);
}

namespace {

struct decider {
  const agent_type& t;
  const agent_state& s;
  int64_t now;
  decision out;

  void emit(event_type type, json data) { out.events.push_back({type, now, std::move(data)}); }

  // A message or signal that reaches an agent which is no longer active
  // was accepted earlier (it waited in the inbox): it is still recorded, and
  // refused, so no acknowledged message leaves no trace in the ledger.
  bool refuse_if_inactive(const std::string& id) {
    if (s.status == agent_status::active) return false;
    emit(event_type::message_rejected,
         {{"id", id},
          {"code", "conflict"},
          {"reason", "agent is " + std::string(to_string(s.status))}});
    out.effects.push_back(reply_error("conflict", "agent is " + std::string(to_string(s.status))));
    return true;
  }
  void operator()(const message_input& m) {
    emit(event_type::message_received,
         {{"arrival", m.arrival}, {"id", m.id}, {"from", m.from}, {"body", m.body}});
    if (refuse_if_inactive(m.id)) return;
    t.on_message(s, m, now, out);
  }
  void operator()(const signal_input& sig) {
    emit(event_type::signal_received,
         {{"arrival", sig.arrival}, {"signal", sig.name}, {"payload", sig.payload}});
    if (is_operator_signal(sig.name)) return operator_signal(sig);
    if (refuse_if_inactive(sig.name)) return;
    t.on_signal(s, sig, now, out);
  }
  void operator_signal(const signal_input& sig) {
    const json& p = sig.payload;
    auto field = [&p](const char* k) {
      return p.is_object() && p.contains(k) && p[k].is_string() ? p[k].get<std::string>()
                                                                : std::string();
    };
    if (sig.name == "salvaged") {
      // A record of loss, not a change: what the report says is kept as is.
      emit(event_type::salvaged, p.is_object() ? p : json::object());
      out.effects.push_back(reply_ok({{"salvaged", true}}));
      return;
    }
    if (sig.name == "forked") {
      // Any non-negative integer: JSON built in-process may hold a signed one.
      const bool has_at = p.is_object() && p.contains("at") && p["at"].is_number_integer() &&
                          p["at"].get<int64_t>() >= 0;
      const uint64_t at = has_at ? p["at"].get<uint64_t>() : 0;
      emit(event_type::forked, {{"as", field("as")}, {"at", at}, {"by", field("by")}});
      out.effects.push_back(reply_ok({{"forked", field("as")}}));
      return;
    }
    if (s.status != agent_status::active) {
      out.effects.push_back(
          reply_error("conflict", "agent is " + std::string(to_string(s.status))));
      return;
    }
    const bool pause = sig.name == "pause";
    if (pause == s.paused) {
      out.effects.push_back(
          reply_error("conflict", pause ? "agent is already paused" : "agent is not paused"));
      return;
    }
    emit(pause ? event_type::paused : event_type::resumed, {{"by", field("by")}});
    out.effects.push_back(reply_ok({{"paused", pause}}));
  }
  void operator()(const timer_input& ti) {
    auto it = s.timers.find(ti.timer_id);
    if (it == s.timers.end()) return;  // already fired or cancelled
    emit(event_type::timer_fired, {{"timer", ti.timer_id}});
    out.effects.push_back(cancel_timer_effect{ti.timer_id, it->second.due_ms});
    if (s.status == agent_status::active) t.on_timer(s, it->second, now, out);
  }
  void operator()(const spawn_input& sp) {
    auto data = t.initial_data(sp.input);
    if (!data) {
      out.effects.push_back(reply_error("invalid_argument", data.error().message()));
      return;
    }
    json ev = {{"type", sp.type}, {"input", sp.input}, {"data", *data}};
    if (!sp.version.empty()) ev["version"] = sp.version;
    emit(event_type::spawned, std::move(ev));
    out.effects.push_back(reply_ok(*data));
  }
  void operator()(const upgrade_input& u) {
    if (s.status != agent_status::active) {
      out.effects.push_back(
          reply_error("conflict", "agent is " + std::string(to_string(s.status))));
      return;
    }
    if (u.to == s.version) {
      out.effects.push_back(reply_error("conflict", "agent already runs version " + u.to));
      return;
    }
    json ev = {{"from", s.version}, {"to", u.to}, {"by", u.by}};
    if (!u.reason.empty()) ev["reason"] = u.reason;
    emit(event_type::upgraded, std::move(ev));
    out.effects.push_back(reply_ok({{"from", s.version}, {"to", u.to}}));
  }
  void operator()(const effect_result_input& r) {
    if (s.status == agent_status::active)
      t.on_effect_result(s, r, now, out);
    else
      out.effects.push_back(
          reply_error("conflict", "agent is " + std::string(to_string(s.status))));
  }
  void operator()(const fork_input& f) {
    emit(event_type::fork_started, {{"parent", f.parent},
                                    {"at", f.at},
                                    {"by", f.by},
                                    {"gap_ms", std::max<int64_t>(0, f.gap_ms)}});
  }
  void operator()(const recover_input& r) {
    if (s.status == agent_status::active) t.on_recover(s, r, now, out);
  }
  void operator()(const terminate_input& ti) {
    if (s.status == agent_status::terminated) {
      out.effects.push_back(reply_error("conflict", "agent is already terminated"));
      return;
    }
    emit(event_type::terminated, {{"by", ti.by}});
    for (uint64_t e : t.open_effects(s)) out.effects.push_back(end_effect{e});
    for (const auto& [id, timer] : s.timers)
      out.effects.push_back(cancel_timer_effect{id, timer.due_ms});
    out.effects.push_back(reply_ok({{"status", "terminated"}}));
  }
};

}  // namespace

decision decide(const agent_type& t, const agent_state& s, const input& in, int64_t now_ms) {
  decider d{t, s, now_ms, {}};
  std::visit(d, in);
  return std::move(d.out);
}

decision decide_guarded(const agent_type& t, const agent_state& s, const input& in,
                        int64_t now_ms) {
  try {
    return decide(t, s, in, now_ms);
  } catch (const std::exception& e) {
    decision d;
    d.events.push_back({event_type::failed, now_ms, {{"reason", e.what()}}});
    d.effects.push_back(reply_error("internal", std::string("agent failed: ") + e.what()));
    // A failed agent abandons what it waited on: no marker may outlive it.
    for (uint64_t eff : t.open_effects(s)) d.effects.push_back(end_effect{eff});
    return d;
  }
}

void apply(const agent_type& t, agent_state& s, const event& e) {
  ++s.last_seq;
  switch (e.type) {
    case event_type::spawned:
      s.type = e.data.value("type", s.type);
      // Our own initial_data(), recorded: a control state that does not
      // decode stays in `data`, and the loop refuses to decide on it.
      if (status ok = load_type_data(s, e.data.value("data", json::object()), "spawned"); !ok) {
        s.data = e.data.value("data", json::object());
        s.loop.reset();
      }
      s.version = version_of(s, e);
      break;
    case event_type::upgraded:
      s.version = e.data.value("to", s.version);
      break;
    case event_type::message_received:
    case event_type::signal_received:
      s.last_arrival = std::max(s.last_arrival, e.data.value("arrival", uint64_t{0}));
      break;
    case event_type::timer_set: {
      uint64_t id = e.data.value("timer", uint64_t{0});
      s.timers[id] = {e.data.value("due_ms", int64_t{0}), e.data.value("payload", json())};
      s.next_timer_id = std::max(s.next_timer_id, id + 1);
      break;
    }
    case event_type::timer_fired:
      s.timers.erase(e.data.value("timer", uint64_t{0}));
      break;
    case event_type::failed:
      s.status = agent_status::failed;
      break;
    case event_type::terminated:
      s.status = agent_status::terminated;
      s.timers.clear();
      break;
    case event_type::paused:
      s.paused = true;
      break;
    case event_type::resumed:
      s.paused = false;
      break;
    case event_type::forked:
      s.forks.push_back({e.data.value("as", ""), e.data.value("at", uint64_t{0})});
      break;
    default:
      break;
  }
  // Every event reaches the type too: the loop keeps its own view of
  // messages, signals and timers.
  if (e.type != event_type::spawned) t.apply(s, e);
}

}  // namespace keel::agent
