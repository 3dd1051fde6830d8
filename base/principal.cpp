#include "base/principal.hpp"

#include <nlohmann/json.hpp>

namespace keel {

namespace {

constexpr scope every_scope[] = {scope::read,    scope::send,  scope::approve,
                                 scope::operate, scope::admin, scope::work};

bool matches(std::string_view pattern, std::string_view agent) {
  if (!pattern.empty() && pattern.back() == '*')
    return agent.substr(0, pattern.size() - 1) == pattern.substr(0, pattern.size() - 1);
  return agent == pattern;
}

}  // namespace

const char* to_string(scope s) {
  switch (s) {
    case scope::read:
      return "read";
    case scope::send:
      return "send";
    case scope::approve:
      return "approve";
    case scope::operate:
      return "operate";
    case scope::admin:
      return "admin";
    case scope::work:
      return "work";
  }
  return "?";
}

std::optional<scope> parse_scope(std::string_view name) {
  for (scope s : every_scope)
    if (name == to_string(s)) return s;
  return std::nullopt;
}

std::optional<uint32_t> parse_scopes(std::string_view list, std::string* bad) {
  uint32_t bits = 0;
  while (!list.empty()) {
    auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    auto s = parse_scope(item);
    if (!s) {
      if (bad) *bad = std::string(item);
      return std::nullopt;
    }
    bits |= static_cast<uint32_t>(*s);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return bits;
}

const char* const scope_choices = "read, send, approve, operate, admin, work";

result<uint32_t> scopes_from_json(const nlohmann::json& list) {
  if (!list.is_array())
    return error(code::invalid_argument,
                 std::string("expected an array of scopes (") + scope_choices + ")");
  uint32_t bits = 0;
  for (const auto& name : list) {
    auto bit = name.is_string() ? parse_scope(name.get<std::string>()) : std::nullopt;
    if (!bit)
      return error(code::invalid_argument,
                   "unknown scope " + name.dump() + " (" + scope_choices + ")");
    bits |= static_cast<uint32_t>(*bit);
  }
  return bits;
}

std::vector<std::string> scope_names(uint32_t bits) {
  std::vector<std::string> names;
  for (scope s : every_scope)
    if (bits & static_cast<uint32_t>(s)) names.emplace_back(to_string(s));
  return names;
}

bool principal::has(scope s) const {
  return (scopes & static_cast<uint32_t>(scope::admin)) != 0 ||
         (scopes & static_cast<uint32_t>(s)) != 0;
}

bool principal::may(scope s, std::string_view agent) const {
  if (!has(s)) return false;
  if (agents.empty()) return true;
  if (agent.empty()) return s == scope::read;
  for (const auto& pattern : agents)
    if (matches(pattern, agent)) return true;
  return false;
}

bool valid_agent_pattern(std::string_view pattern) {
  if (pattern.empty() || pattern == "*") return false;
  auto star = pattern.find('*');
  return star == std::string_view::npos || star == pattern.size() - 1;
}

bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace keel
