// Authorization of API requests (base/principal.hpp): the scope each route
// needs, the answer when the caller lacks it, the principal stamped on what
// a request records, and the /v1/tokens and /v1/whoami routes.

#include <nlohmann/json.hpp>

#include "net/api/auth_tokens.hpp"
#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

json principal_json(const principal& who) {
  return {{"principal", who.name}, {"scopes", scope_names(who.scopes)}, {"agents", who.agents}};
}

json token_json(const token_record& r) {
  json j = principal_json(r.who);
  j["id"] = r.id;
  j["created_ms"] = r.created_ms;
  j["created_by"] = r.created_by;
  return j;
}

}  // namespace

scope scope_for_agent_action(std::string_view method, std::string_view action,
                             std::string_view signal) {
  if (action.empty()) return method == "DELETE" ? scope::admin : scope::read;
  if (action == "ledger" || action == "ledger/stream" || action == "query" || action == "audit" ||
      action == "replay")
    return scope::read;
  if (action == "messages") return scope::send;
  if (action == "import") return scope::admin;
  if (action == "signals") {
    // A human's word: approvals and the answer to ask_human.
    if (signal == "approve" || signal == "reject" || signal == "answer") return scope::approve;
    if (signal == "pause" || signal == "resume" || signal == "resolve" || signal == "cancel" ||
        signal == "retry")
      return scope::operate;
    return scope::send;
  }
  // cancel, upgrade, pause, resume, resolve, retry, fork, compact.
  return scope::operate;
}

std::optional<http_response> refuse_unless(const http_request& req, scope needed,
                                           std::string_view agent) {
  if (req.who.may(needed, agent)) return std::nullopt;
  std::string what =
      std::string("principal \"") + req.who.name + "\" lacks scope " + to_string(needed) +
      (agent.empty() ? std::string(" on this node") : " for agent " + std::string(agent));
  if (req.who.has(needed) && !req.who.agents.empty())
    what = std::string("principal \"") + req.who.name + "\" is limited to agents " +
           json(req.who.agents).dump() +
           (agent.empty() ? ", not node-wide routes" : ", not " + std::string(agent));
  if (req.who.name == "anonymous") {
    // A token would help: 401, as for a missing token.
    what +=
        "; send a token (keel --token-file FILE, or KEEL_TOKEN_FILE; keeld keeps the node's "
        "admin token in DATA/admin.token)";
    http_response r = fail(401, "unauthorized", what);
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
  }
  return fail(403, "forbidden", what);
}

json stamp_by(json payload, const principal& who) {
  if (payload.is_null()) payload = json::object();
  if (!payload.is_object()) return payload;
  if (auto by = payload.find("by"); by != payload.end() && *by != who.name) {
    if (by->is_string() && !by->get<std::string>().empty()) payload["note"] = *by;
  }
  payload["by"] = who.name;
  return payload;
}

void whoami(const http_request& req, const respond_fn& respond) {
  respond(json_response(200, principal_json(req.who)));
}

void token_route(token_store* tokens, const http_request& req,
                 const std::vector<std::string_view>& seg, const respond_fn& respond) {
  if (auto refused = refuse_unless(req, scope::admin, {})) return respond(std::move(*refused));
  if (!tokens) return respond(fail(404, "not_found", "this node keeps no tokens"));
  const std::string& m = req.method;
  if (seg.size() == 2) {
    if (m == "GET") {
      json list = json::array();
      for (const auto& r : tokens->list()) list.push_back(token_json(r));
      return respond(json_response(200, {{"tokens", std::move(list)}}));
    }
    if (m != "POST") return respond(method_not_allowed(m, "GET, POST"));
    auto body = parse_object(req.body, {"principal", "scopes", "agents"}, false);
    if (!body) return respond(error_response(body.error()));
    auto name = string_field(*body, "principal", true);
    if (!name) return respond(error_response(name.error()));
    principal who{std::move(*name), 0, {}};
    const json& scopes = body->value("scopes", json::array());
    if (!scopes.is_array() || scopes.empty())
      return respond(
          bad_request(std::string("\"scopes\" must be a non-empty array of ") + scope_choices));
    auto bits = scopes_from_json(scopes);
    if (!bits) return respond(error_response(bits.error()));
    who.scopes = *bits;
    if (auto a = body->find("agents"); a != body->end()) {
      if (!a->is_array()) return respond(bad_request("\"agents\" must be an array of patterns"));
      for (const auto& p : *a) {
        if (!p.is_string()) return respond(bad_request("\"agents\" must hold strings"));
        who.agents.push_back(p.get<std::string>());
      }
    }
    return tokens->create(std::move(who), req.who.name,
                          [respond](result<std::pair<token_record, std::string>> r) {
                            guarded(respond, [&] {
                              if (!r) return respond(error_response(r.error()));
                              json j = token_json(r->first);
                              j["token"] = r->second;
                              respond(json_response(201, j));
                            });
                          });
  }
  if (seg.size() == 3) {
    if (m != "DELETE") return respond(method_not_allowed(m, "DELETE"));
    return tokens->revoke(std::string(seg[2]), [respond, id = std::string(seg[2])](status s) {
      guarded(respond, [&] {
        respond(s ? json_response(200, {{"id", id}, {"revoked", true}}) : error_response(s));
      });
    });
  }
  respond(fail(404, "not_found", "no such path: " + req.target));
}

}  // namespace keel::net::api_detail
