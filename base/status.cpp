#include "base/status.hpp"

namespace keel {

const char* to_string(code c) {
  switch (c) {
    case code::ok:
      return "ok";
    case code::invalid_argument:
      return "invalid_argument";
    case code::not_found:
      return "not_found";
    case code::already_exists:
      return "already_exists";
    case code::conflict:
      return "conflict";
    case code::corruption:
      return "corruption";
    case code::io_error:
      return "io_error";
    case code::unavailable:
      return "unavailable";
    case code::timeout:
      return "timeout";
    case code::too_large:
      return "too_large";
    case code::unauthorized:
      return "unauthorized";
    case code::internal:
      return "internal";
    case code::no_space:
      return "no_space";
  }
  return "internal";
}

code code_from_string(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(last_code); ++i)
    if (name == to_string(static_cast<code>(i))) return static_cast<code>(i);
  return code::internal;
}

std::string status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(keel::to_string(code_)) + ": " + message_;
}

}  // namespace keel
