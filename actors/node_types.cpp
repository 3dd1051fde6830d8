// The node's agent types and their versions, for the API: registering a
// version at run time and listing what the node has. CAF-free; the versions
// live in the registry and the store (ledger/type_catalog.hpp).

#include <optional>

#include "actors/node.hpp"
#include "actors/runtime.hpp"
#include "ledger/type_catalog.hpp"

namespace keel::actors {

namespace {

// A built-in type has one version, "", and no spec.
type_version_info builtin_version() {
  type_version_info v;
  v.latest = true;
  v.builtin = true;
  return v;
}

type_version_info version_info(const agent::type_registry::version_info& v, bool with_spec) {
  type_version_info i;
  i.version = v.hash;
  i.latest = v.latest;
  i.added_ms = v.added_ms;
  i.source = v.spec->source;
  i.description = v.spec->description;
  if (with_spec) i.spec = v.spec->canonical;
  return i;
}

}  // namespace

result<type_put> node::put_type(std::string_view name, const json& body) {
  runtime* rt = live_runtime();
  if (!rt) return error(code::unavailable, "node is shutting down");
  const std::string source = "agent type " + std::string(name);
  if (!body.is_object()) return error(code::invalid_argument, source + ": must be a JSON object");
  if (body.contains("name") && body["name"] != name)
    return error(code::invalid_argument, source + ": /name: is " + body["name"].dump() +
                                             ", but the path names " + std::string(name));
  json spec_json = body;
  spec_json["name"] = name;
  auto spec = config::parse_agent_spec_body(spec_json, source);
  if (!spec) return spec.error();
  const std::optional<uint32_t> idle_ms = (*spec)->idle_ms;
  auto put = rt->catalog->put(std::move(*spec));
  if (!put) return put.error();
  if (idle_ms) rt->lower_sweep_idle(std::max<uint32_t>(1, *idle_ms));
  return type_put{std::string(name), put->hash, put->is_new, !put->was_latest};
}

std::vector<type_summary> node::types() {
  std::vector<type_summary> out;
  runtime* rt = live_runtime();
  if (!rt) return out;
  for (const auto& name : rt->types->names()) {
    const agent::agent_type* latest = rt->types->find(name);
    const bool builtin = agent::find_builtin_type(name) != nullptr;
    out.push_back({name, latest ? std::string(latest->version()) : std::string(),
                   builtin ? 1 : rt->types->versions(name).size(), builtin});
  }
  return out;
}

result<std::vector<type_version_info>> node::type_versions(std::string_view name, bool spec) {
  runtime* rt = live_runtime();
  if (!rt) return error(code::unavailable, "node is shutting down");
  if (agent::find_builtin_type(name)) return std::vector<type_version_info>{builtin_version()};
  if (!rt->types->find(name))
    return error(code::not_found, "agent type " + std::string(name) + " is not on this node");
  std::vector<type_version_info> out;
  for (const auto& v : rt->types->versions(name)) out.push_back(version_info(v, spec));
  return out;
}

result<type_version_info> node::type_version(std::string_view name, std::string_view version) {
  runtime* rt = live_runtime();
  if (!rt) return error(code::unavailable, "node is shutting down");
  if (agent::find_builtin_type(name) && (version == "latest" || version.empty()))
    return builtin_version();
  // "latest", a hash, or a unique prefix of one (at least 6 digits).
  if (version.empty() || (version != "latest" && version.size() < 6))
    return error(code::not_found, "agent type " + std::string(name) + " has no version " +
                                      std::string(version) + " on this node");
  auto hash = rt->types->resolve(name, version);
  if (!hash) return hash.error();
  for (const auto& v : rt->types->versions(name))
    if (v.hash == *hash) return version_info(v, true);
  return error(code::not_found, "agent type " + std::string(name) + " has no version " + *hash);
}

}  // namespace keel::actors
