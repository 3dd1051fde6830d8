// The node's named secrets, for the API: set, remove and list
// (effects/secret_table.hpp holds them). CAF-free. No answer holds a value.

#include "actors/node.hpp"
#include "actors/runtime.hpp"
#include "effects/secret_table.hpp"

namespace keel::actors {

namespace {

json listing_json(const secret_listing& s) {
  json j = {{"name", s.name}, {"source", to_string(s.source)}, {"updated_ms", s.updated_ms}};
  if (!s.from.empty()) j["from"] = s.from;
  return j;
}

}  // namespace

result<json> node::put_secret(std::string_view name, std::string_view value) {
  runtime* rt = live_runtime();
  if (!rt || !rt->secrets) return error(code::unavailable, "node is shutting down");
  auto created = rt->secrets->set(name, value);
  if (!created) return created.error();
  int64_t updated = 0;
  for (const auto& s : rt->secrets->list())
    if (s.name == name) updated = s.updated_ms;
  return json{{"name", name}, {"source", "store"}, {"created", *created}, {"updated_ms", updated}};
}

result<json> node::remove_secret(std::string_view name) {
  runtime* rt = live_runtime();
  if (!rt || !rt->secrets) return error(code::unavailable, "node is shutting down");
  KEEL_TRY(rt->secrets->remove(name));
  return json{{"name", name}, {"deleted", true}};
}

json node::secrets() {
  json out = json::array();
  runtime* rt = live_runtime();
  if (!rt || !rt->secrets) return out;
  for (const auto& s : rt->secrets->list()) out.push_back(listing_json(s));
  return out;
}

}  // namespace keel::actors
