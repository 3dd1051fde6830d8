#pragma once
// Reading a decision in the agent layer's unit tests.

#include <variant>
#include <vector>

#include "agent/core.hpp"

namespace keel::test {

// The effects of kind T in `d`, in order.
template <class T>
std::vector<T> effects_of(const agent::decision& d) {
  std::vector<T> out;
  for (const auto& fx : d.effects)
    if (auto* x = std::get_if<T>(&fx)) out.push_back(*x);
  return out;
}

}  // namespace keel::test
