#include "agent/registry.hpp"

#include "agent/loop.hpp"

namespace keel::agent {

type_registry::type_registry() = default;
type_registry::~type_registry() = default;

status type_registry::add(std::shared_ptr<const config::agent_spec> spec) {
  if (find(spec->name))
    return error(code::already_exists, "agent type '" + spec->name + "' is defined twice" +
                                           (spec->source.empty() ? "" : " (" + spec->source + ")"));
  std::string name = spec->name;
  loops_.emplace(std::move(name), std::make_unique<loop_type>(std::move(spec)));
  return status::ok();
}

const agent_type* type_registry::find(std::string_view name) const {
  if (const agent_type* t = find_builtin_type(name)) return t;
  auto it = loops_.find(name);
  return it == loops_.end() ? nullptr : it->second.get();
}

std::vector<std::string> type_registry::names() const {
  std::vector<std::string> out{"counter"};
  for (const auto& [name, t] : loops_) out.push_back(name);
  return out;
}

}  // namespace keel::agent
