// The node's named secrets, for the API: set, remove and list
// (effects/secret_table.hpp holds them). CAF-free. No answer holds a value.

#include "actors/node.hpp"
#include "actors/runtime.hpp"
#include "effects/secret_table.hpp"

namespace keel::actors {

result<secret_put> node::put_secret(std::string_view name, std::string_view value) {
  runtime* rt = live_runtime();
  if (!rt || !rt->secrets) return error(code::unavailable, "node is shutting down");
  auto created = rt->secrets->set(name, value);
  if (!created) return created.error();
  int64_t updated = 0;
  for (const auto& s : rt->secrets->list())
    if (s.name == name) updated = s.updated_ms;
  return secret_put{std::string(name), *created, updated};
}

status node::remove_secret(std::string_view name) {
  runtime* rt = live_runtime();
  if (!rt || !rt->secrets) return error(code::unavailable, "node is shutting down");
  return rt->secrets->remove(name);
}

std::vector<secret_listing> node::secrets() {
  runtime* rt = live_runtime();
  if (!rt || !rt->secrets) return {};
  return rt->secrets->list();
}

}  // namespace keel::actors
