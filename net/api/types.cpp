// /v1/types[/{name}[/versions]]: the agent types a node runs and their
// versions (ledger/type_catalog.hpp), and /v1/agents/{name}/upgrade.

#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

// A version in a type's listing; `name` only where the answer is one version.
json version_json(const actors::type_version_info& v, std::string_view name) {
  if (v.builtin) return {{"name", name}, {"version", ""}, {"latest", true}, {"builtin", true}};
  json j = {{"version", v.version},
            {"latest", v.latest},
            {"added_ms", v.added_ms},
            {"source", v.source},
            {"description", v.description}};
  if (!v.spec.is_null()) j["spec"] = v.spec;
  if (!name.empty()) j["name"] = name;
  return j;
}

json types_json(const std::vector<actors::type_summary>& types) {
  json out = json::array();
  for (const auto& t : types)
    out.push_back(
        {{"name", t.name}, {"latest", t.latest}, {"versions", t.versions}, {"builtin", t.builtin}});
  return out;
}

}  // namespace

void types_route(actors::node& node, const http_request& req, const target& t,
                 const respond_fn& respond) {
  const auto& seg = t.segments;
  const std::string& m = req.method;
  auto answer = [&respond](const std::string& name, const result<actors::type_version_info>& r) {
    respond(r ? json_response(200, version_json(*r, name)) : error_response(r.error()));
  };
  if (seg.size() == 2) {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return respond(json_response(200, {{"types", types_json(node.types())}}));
  }
  auto name = percent_decode(seg[2], false);
  if (!name) return respond(error_response(name.error()));
  if (seg.size() == 3) {
    if (m == "GET") return answer(*name, node.type_version(*name, "latest"));
    if (m != "PUT") return respond(method_not_allowed(m, "GET, PUT"));
    auto body = parse_body(req.body);
    if (!body) return respond(error_response(body.error()));
    auto r = node.put_type(*name, *body);
    if (!r) return respond(error_response(r.error()));
    return respond(json_response(
        r->is_new ? 201 : 200,
        {{"name", r->name}, {"version", r->version}, {"new", r->is_new}, {"changed", r->changed}}));
  }
  if (seg.size() == 4 && seg[3] == "versions") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    auto r = node.type_versions(*name, string_param(t, "spec") == "1");
    if (!r) return respond(error_response(r.error()));
    json versions = json::array();
    for (const auto& v : *r) versions.push_back(version_json(v, v.builtin ? *name : ""));
    return respond(json_response(200, {{"name", *name}, {"versions", std::move(versions)}}));
  }
  if (seg.size() == 5 && seg[3] == "versions") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    auto version = percent_decode(seg[4], false);
    if (!version) return respond(error_response(version.error()));
    return answer(*name, node.type_version(*name, *version));
  }
  respond(fail(404, "not_found", "no such path: " + req.target.substr(0, req.target.find('?'))));
}

void upgrade(actors::node& node, std::string name, const http_request& req,
             const respond_fn& respond) {
  auto body = parse_object(req.body, {"to", "by"}, true);
  if (!body) return respond(error_response(body.error()));
  auto to = string_field(*body, "to", false);
  if (!to) return respond(error_response(to.error()));
  auto by = string_field(*body, "by", false);
  if (!by) return respond(error_response(by.error()));
  // The authenticated principal upgrades; a "by" in the body is not trusted.
  node.upgrade(std::move(name), to->empty() ? "latest" : std::move(*to), req.who.name,
               [respond](result<json> r) {
                 guarded(respond,
                         [&] { respond(r ? json_response(200, *r) : error_response(r.error())); });
               });
}

}  // namespace keel::net::api_detail
