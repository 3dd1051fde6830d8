#include "base/names.hpp"

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

}  // namespace keel
