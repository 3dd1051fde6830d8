#include "agent/counter.hpp"

#include <limits>

namespace keel::agent {

namespace {

constexpr int64_t max_delay_ms = 366LL * 24 * 3600 * 1000;
constexpr std::size_t max_label = 64 * 1024;

int64_t total_of(const agent_state& s) {
  return s.data.value("total", int64_t{0});
}

void reject(const message_input& m, int64_t now, std::string reason, decision& out) {
  out.events.push_back({event_type::message_rejected,
                        now,
                        {{"id", m.id}, {"code", "invalid_message"}, {"reason", reason}}});
  out.effects.push_back(reply_error("invalid_message", std::move(reason)));
}

bool is_integer(const json& v) {
  return v.is_number_integer();
}

}  // namespace

result<json> counter_type::initial_data(const json& input) const {
  const char* shape = "counter input must be null or {\"total\": <integer>, \"label\": <string>}";
  json data = {{"total", 0}};
  if (input.is_null()) return data;
  if (!input.is_object()) return error(code::invalid_argument, shape);
  for (auto it = input.begin(); it != input.end(); ++it) {
    if (it.key() == "total" && is_integer(*it) &&
        !(it->is_number_unsigned() &&
          it->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
      data["total"] = it->get<int64_t>();
    else if (it.key() == "label" && it->is_string() &&
             it->get_ref<const std::string&>().size() <= max_label)
      data["label"] = *it;
    else
      return error(code::invalid_argument, std::string(shape) + " (bad field \"" + it.key() +
                                               "\"; labels are at most 64 KiB)");
  }
  return data;
}

void counter_type::on_message(const agent_state& s, const message_input& m, int64_t now,
                              decision& out) const {
  const json& b = m.body;
  if (b.is_object() && b.size() == 1 && b.contains("get") && b["get"] == true) {
    out.effects.push_back(reply_ok({{"total", total_of(s)}}));
    return;
  }
  if (!b.is_object() || !b.contains("add")) {
    reject(m, now, "counter accepts {\"add\": n}, {\"add\": n, \"delay_ms\": d} or {\"get\": true}",
           out);
    return;
  }
  for (auto it = b.begin(); it != b.end(); ++it)
    if (it.key() != "add" && it.key() != "delay_ms") {
      reject(m, now, "unknown field \"" + it.key() + "\" in counter message", out);
      return;
    }
  if (!is_integer(b["add"]) ||
      (b["add"].is_number_unsigned() &&
       b["add"].get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))) {
    reject(m, now, "\"add\" must be a 64-bit integer", out);
    return;
  }
  int64_t n = b["add"].get<int64_t>();
  if (b.contains("delay_ms")) {
    const json& d = b["delay_ms"];
    if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > max_delay_ms) {
      reject(m, now, "\"delay_ms\" must be an integer in [0, 366 days]", out);
      return;
    }
    uint64_t id = s.next_timer_id;
    int64_t due = now + d.get<int64_t>();
    json payload = {{"add", n}};
    out.events.push_back(
        {event_type::timer_set, now, {{"timer", id}, {"due_ms", due}, {"payload", payload}}});
    out.effects.push_back(set_timer_effect{id, due, payload});
    out.effects.push_back(reply_ok({{"timer", id}, {"due_ms", due}}));
    return;
  }
  int64_t total = total_of(s), sum = 0;
  if (__builtin_add_overflow(total, n, &sum)) {
    reject(m, now, "adding " + std::to_string(n) + " would overflow the total", out);
    return;
  }
  out.events.push_back({event_type::state_changed, now, {{"total", sum}}});
  out.effects.push_back(reply_ok({{"total", sum}}));
}

void counter_type::on_signal(const agent_state&, const signal_input& sig, int64_t now,
                             decision& out) const {
  if (sig.name == "reset") {
    out.events.push_back({event_type::state_changed, now, {{"total", 0}}});
    out.effects.push_back(reply_ok({{"total", 0}}));
    return;
  }
  out.effects.push_back(reply_ok({{"signal", sig.name}, {"recorded", true}}));
}

void counter_type::on_timer(const agent_state& s, const pending_timer& t, int64_t now,
                            decision& out) const {
  int64_t n = t.payload.value("add", int64_t{0}), sum = 0;
  if (__builtin_add_overflow(total_of(s), n, &sum)) return;  // nothing to add safely
  out.events.push_back({event_type::state_changed, now, {{"total", sum}}});
}

void counter_type::apply(agent_state& s, const event& e) const {
  if (e.type == event_type::state_changed && e.data.contains("total"))
    s.data["total"] = e.data["total"];
}

result<json> counter_type::query(const agent_state& s, const json& q) const {
  if (q.is_null() ||
      (q.is_object() && (q.empty() || (q.size() == 1 && q.contains("get") && q["get"] == true))))
    return json{{"total", total_of(s)}};
  return error(code::invalid_argument, "counter answers the query {\"get\": true}");
}

}  // namespace keel::agent
