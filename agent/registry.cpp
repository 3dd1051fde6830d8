#include "agent/registry.hpp"

#include <mutex>

#include "agent/loop.hpp"

namespace keel::agent {

type_registry::type_registry() = default;
type_registry::~type_registry() = default;

result<type_registry::added> type_registry::add(std::shared_ptr<const config::agent_spec> spec,
                                                bool make_latest, int64_t added_ms) {
  if (find_builtin_type(spec->name))
    return error(code::already_exists, "agent type '" + spec->name + "' is a built-in type" +
                                           (spec->source.empty() ? "" : " (" + spec->source + ")"));
  std::unique_lock lk(mu_);
  versions_of_name& v = types_[spec->name];
  added out;
  auto it = v.by_hash.find(spec->hash);
  if (it == v.by_hash.end()) {
    const std::string hash = spec->hash;
    if (spec->follow_latest) any_follows_.store(true, std::memory_order_release);
    it = v.by_hash.emplace(hash, std::make_unique<loop_type>(std::move(spec))).first;
    v.by_order[++added_] = hash;
    v.added_ms[hash] = added_ms;
    out.is_new = true;
  }
  if (make_latest || v.latest.empty()) v.latest = it->first;
  out.type = it->second.get();
  return out;
}

const agent_type* type_registry::find(std::string_view name) const {
  if (const agent_type* t = find_builtin_type(name)) return t;
  std::shared_lock lk(mu_);
  auto it = types_.find(name);
  if (it == types_.end()) return nullptr;
  auto v = it->second.by_hash.find(it->second.latest);
  return v == it->second.by_hash.end() ? nullptr : v->second.get();
}

const agent_type* type_registry::find(std::string_view name, std::string_view version) const {
  if (const agent_type* t = find_builtin_type(name)) return version.empty() ? t : nullptr;
  std::shared_lock lk(mu_);
  auto it = types_.find(name);
  if (it == types_.end()) return nullptr;
  auto v = it->second.by_hash.find(version);
  return v == it->second.by_hash.end() ? nullptr : v->second.get();
}

std::vector<std::string> type_registry::names() const {
  std::vector<std::string> out{"counter"};
  std::shared_lock lk(mu_);
  for (const auto& [name, v] : types_) out.push_back(name);
  return out;
}

result<std::string> type_registry::resolve(std::string_view name, std::string_view version) const {
  std::string found;
  for (const auto& v : versions(name))
    if (version.empty() || version == "latest" ? v.latest : v.hash.starts_with(version)) {
      if (!found.empty())
        return error(code::invalid_argument, "version " + std::string(version) + " of agent type " +
                                                 std::string(name) +
                                                 " is ambiguous: give more of the hash");
      found = v.hash;
    }
  if (found.empty())
    return error(code::not_found,
                 "agent type " + std::string(name) + " has no version " +
                     (version.empty() ? std::string("latest") : std::string(version)) +
                     " on this node (GET /v1/types/" + std::string(name) + "/versions lists them)");
  return found;
}

std::vector<type_registry::version_info> type_registry::versions(std::string_view name) const {
  std::vector<version_info> out;
  std::shared_lock lk(mu_);
  auto it = types_.find(name);
  if (it == types_.end()) return out;
  for (const auto& [order, hash] : it->second.by_order) {
    const loop_type& t = *it->second.by_hash.at(hash);
    out.push_back(
        {hash, t.spec_ptr(), hash == it->second.latest, order, it->second.added_ms.at(hash)});
  }
  return out;
}

stand_in_versions::stand_in_versions(std::shared_ptr<const config::agent_spec> spec)
    : spec_(std::move(spec)) {}
stand_in_versions::~stand_in_versions() = default;

const agent_type* stand_in_versions::find(std::string_view version) const {
  auto it = loops_.find(version);
  if (it == loops_.end())
    it =
        loops_
            .emplace(std::string(version), std::make_unique<loop_type>(spec_, std::string(version)))
            .first;
  return it->second.get();
}

}  // namespace keel::agent
