#include "actors/event_log.hpp"

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "base/log.hpp"

namespace keel::actors {

namespace {

using agent::event_type;
using json = nlohmann::json;

constexpr std::size_t max_detail = 200;

// How an event type is logged; nullopt when it is not.
struct shape {
  log::level lvl;
  const char* msg;
};

std::optional<shape> shape_of(const agent::event& e) {
  switch (e.type) {
    case event_type::turn_started:
      return shape{log::level::info, "turn started"};
    case event_type::turn_completed: {
      const std::string status = e.data.value("status", "");
      if (status == "completed") return shape{log::level::info, "turn completed"};
      if (status == "failed") return shape{log::level::warn, "turn failed"};
      return shape{log::level::info, "turn ended"};  // cancelled, stopped
    }
    case event_type::approval_requested:
      return shape{log::level::info, "approval awaited"};
    case event_type::effect_started:
      return shape{log::level::info, "effect started"};
    case event_type::effect_completed:
      return shape{log::level::info, "effect completed"};
    case event_type::effect_failed:
      return shape{log::level::warn, "effect failed"};
    case event_type::effect_in_doubt:
      return shape{log::level::warn, "effect in doubt: waiting for keel resolve"};
    case event_type::compensation_started:
      return shape{log::level::info, "compensation started"};
    case event_type::compensation_completed:
      return shape{log::level::info, "compensation completed"};
    case event_type::failed:
      return shape{log::level::error, "agent failed"};
    case event_type::model_requested:
      return shape{log::level::debug, "model requested"};
    case event_type::model_replied:
      return shape{log::level::debug, "model replied"};
    default:
      return std::nullopt;
  }
}

std::string cut(std::string s) {
  if (s.size() > max_detail) {
    // Not inside a UTF-8 sequence.
    std::size_t at = max_detail;
    while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
    s.resize(at);
    s += "...";
  }
  return s;
}

// A detail of the event: its text fields cut short, its numbers and flags.
struct detail {
  std::vector<std::pair<std::string, std::string>> text;
  std::vector<std::pair<std::string, uint64_t>> numbers;
  std::vector<std::pair<std::string, bool>> flags;
};

detail detail_of(const agent::event& e) {
  detail d;
  const json& j = e.data;
  if (!j.is_object()) return d;
  for (const char* k : {"tool", "status", "reason", "error", "rule", "finish_reason", "from", "id"})
    if (auto it = j.find(k); it != j.end() && it->is_string() && !it->get<std::string>().empty())
      d.text.emplace_back(k, cut(it->get<std::string>()));
  for (const char* k : {"turn", "effect", "attempt", "for"})
    if (auto it = j.find(k); it != j.end() && it->is_number_unsigned())
      d.numbers.emplace_back(k, it->get<uint64_t>());
  for (const char* k : {"final", "retryable", "ok"})
    if (auto it = j.find(k); it != j.end() && it->is_boolean())
      d.flags.emplace_back(k, it->get<bool>());
  return d;
}

}  // namespace

std::function<void()> event_log_record(const std::string& agent, uint64_t seq,
                                       const agent::event& e) {
  auto s = shape_of(e);
  if (!s || !log::enabled(s->lvl)) return {};
  return [agent, seq, s = *s, type = std::string(to_string(e.type)), d = detail_of(e)] {
    std::vector<log::field> fs;
    fs.reserve(3 + d.text.size() + d.numbers.size() + d.flags.size());
    fs.emplace_back("agent", agent);
    fs.emplace_back("seq", seq);
    fs.emplace_back("event", type);
    for (const auto& [k, v] : d.numbers) fs.emplace_back(k, v);
    for (const auto& [k, v] : d.text) fs.emplace_back(k, v);
    for (const auto& [k, v] : d.flags) fs.emplace_back(k, v);
    log::write(s.lvl, s.msg, fs);
  };
}

}  // namespace keel::actors
