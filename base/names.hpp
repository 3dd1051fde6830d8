#pragma once
// Agent names: [a-z0-9][a-z0-9._/-]{0,127}. They are routing keys and
// RocksDB keys, so the alphabet is small and the length bounded.

#include <string_view>

#include "base/status.hpp"

namespace keel {

inline constexpr std::size_t max_agent_name = 128;

// ok, or invalid_argument saying which character or rule failed.
status validate_agent_name(std::string_view name);

}  // namespace keel
