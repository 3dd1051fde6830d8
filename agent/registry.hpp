#pragma once
// The agent types a node knows: the built-in ones (counter) and one agent
// loop per agent-type spec loaded from JSON. Built once at start-up, then
// only read: safe to share between threads without locks.

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/core.hpp"
#include "config/agent_spec.hpp"

namespace keel::agent {

class type_registry {
 public:
  type_registry();  // the built-in types
  ~type_registry();
  type_registry(const type_registry&) = delete;
  type_registry& operator=(const type_registry&) = delete;

  // Adds an agent loop for `spec`. Errors: already_exists (a type of that
  // name, built-in or loaded, is known).
  status add(std::shared_ptr<const config::agent_spec> spec);
  // nullptr when unknown.
  const agent_type* find(std::string_view name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, std::unique_ptr<agent_type>, std::less<>> loops_;
};

}  // namespace keel::agent
