#include "base/names.hpp"

#include <algorithm>
#include <string>

namespace keel {

namespace {
bool lower_or_digit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
}  // namespace

status validate_agent_name(std::string_view name) {
  if (name.empty()) return error(code::invalid_argument, "agent name is empty");
  if (name.size() > max_agent_name)
    return error(code::invalid_argument, "agent name is longer than 128 characters");
  if (!lower_or_digit(name[0]))
    return error(
        code::invalid_argument,
        "agent name must start with a lowercase letter or digit: '" + std::string(name) + "'");
  for (std::size_t i = 1; i < name.size(); ++i) {
    char c = name[i];
    if (!(lower_or_digit(c) || c == '.' || c == '_' || c == '/' || c == '-'))
      return error(code::invalid_argument,
                   "agent name '" + std::string(name) +
                       "' has a character outside [a-z0-9._/-] at position " + std::to_string(i));
  }
  return status::ok();
}

status validate_signal_name(std::string_view name) {
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == ':';
  };
  if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), allowed))
    return error(code::invalid_argument,
                 "signal name must be 1 to 64 letters, digits, '_', '-', '.' or ':'");
  return status::ok();
}

namespace {

// Edits between a and b: insert, delete, replace, or swap two neighbours
// ("spwan" -> "spawn" is one), three rows at a time.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> before(b.size() + 1), prev(b.size() + 1), row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      row[j] =
          std::min({prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        row[j] = std::min(row[j], before[j - 2] + 1);
    }
    std::swap(before, prev);
    std::swap(prev, row);
  }
  return prev[b.size()];
}

}  // namespace

std::string nearest_name(std::string_view word, const std::vector<std::string>& choices) {
  std::string best;
  std::size_t best_d = 3;  // anything farther than 2 is no typo
  bool tie = false;
  for (const auto& c : choices) {
    const std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best = c;
      best_d = d;
      tie = false;
    } else if (d == best_d && c != best) {
      tie = true;
    }
  }
  if (best.empty() || tie || best_d * 2 >= word.size()) return {};
  return best;
}

}  // namespace keel
