// /v1/secrets[/{name}]: the node's named secrets (effects/secret_table.hpp).
// Each node has its own; these calls are never forwarded in a cluster. A
// value goes in (PUT) and never comes out: no answer holds one.

#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

json secrets_json(const std::vector<actors::secret_listing>& secrets) {
  json out = json::array();
  for (const auto& s : secrets) {
    json j = {{"name", s.name}, {"source", to_string(s.source)}, {"updated_ms", s.updated_ms}};
    if (!s.from.empty()) j["from"] = s.from;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

void secrets_route(actors::node& node, const http_request& req, const target& t,
                   const respond_fn& respond) {
  const auto& seg = t.segments;
  const std::string& m = req.method;
  if (seg.size() == 2) {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return respond(json_response(200, {{"secrets", secrets_json(node.secrets())}}));
  }
  if (seg.size() != 3)
    return respond(
        fail(404, "not_found", "no such path: " + req.target.substr(0, req.target.find('?'))));
  auto name = percent_decode(seg[2], false);
  if (!name) return respond(error_response(name.error()));
  if (m == "PUT") {
    auto body = parse_object(req.body, {"value"}, false);
    if (!body) return respond(error_response(body.error()));
    if (!body->contains("value")) return respond(bad_request("missing field \"value\""));
    if (!(*body)["value"].is_string())
      return respond(bad_request("field \"value\" must be a string"));
    auto r = node.put_secret(*name, (*body)["value"].get_ref<const std::string&>());
    if (!r) return respond(error_response(r.error()));
    return respond(json_response(r->created ? 201 : 200, {{"name", r->name},
                                                          {"source", "store"},
                                                          {"created", r->created},
                                                          {"updated_ms", r->updated_ms}}));
  }
  if (m == "DELETE") {
    auto r = node.remove_secret(*name);
    return respond(r ? json_response(200, {{"name", *name}, {"deleted", true}})
                     : error_response(r));
  }
  respond(method_not_allowed(m, "PUT, DELETE"));
}

}  // namespace keel::net::api_detail
