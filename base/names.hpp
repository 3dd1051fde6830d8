#pragma once
// Agent names: [a-z0-9][a-z0-9._/-]{0,127}. They are routing keys and
// RocksDB keys, so the alphabet is small and the length bounded.

#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"

namespace keel {

inline constexpr std::size_t max_agent_name = 128;

// ok, or invalid_argument saying which character or rule failed.
status validate_agent_name(std::string_view name);

// A signal's name: 1 to 64 of [A-Za-z0-9_.:-]. Errors: invalid_argument.
status validate_signal_name(std::string_view name);

// The one of `choices` a mistyped `word` most likely meant: the nearest by
// edit distance (a swap of two neighbours is one edit), when that is at most 2 and less than half
// of `word`
// ("aprove" -> "approve"); "" when none is that near or two tie.
std::string nearest_name(std::string_view word, const std::vector<std::string>& choices);

}  // namespace keel
