#pragma once
// Internal to config/: typed reads of JSON config fields whose errors name
// where the value sits ("cluster.json: \"shards\""). Header-only, shared by
// the node and the cluster config parsers.

#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::config::detail {

// A non-negative integer that fits T.
template <class T>
status read_uint(const nlohmann::json& v, const std::string& where, T& out) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
    return error(code::invalid_argument, where + ": expected a non-negative integer");
  auto n = v.get<uint64_t>();
  if (n > std::numeric_limits<T>::max())
    return error(code::invalid_argument, where + ": value " + std::to_string(n) + " is too large");
  out = static_cast<T>(n);
  return status::ok();
}

inline status read_string(const nlohmann::json& v, const std::string& where, std::string& out) {
  if (!v.is_string()) return error(code::invalid_argument, where + ": expected a string");
  out = v.get<std::string>();
  return status::ok();
}

}  // namespace keel::config::detail
