#include "net/api/api.hpp"

#include <algorithm>
#include <cassert>
#include <cctype>
#include <charconv>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/effect_pool.hpp"
#include "base/clock.hpp"
#include "base/names.hpp"
#include "base/version.hpp"
#include "http/client.hpp"
#include "net/api/api_impl.hpp"

namespace keel::net {

using json = nlohmann::json;

unsigned http_status_for(code c) {
  switch (c) {
    case code::ok:
      return 200;
    case code::invalid_argument:
      return 400;
    case code::not_found:
      return 404;
    case code::already_exists:
    case code::conflict:
      return 409;
    case code::too_large:
      return 413;
    case code::unauthorized:
      return 401;
    case code::unavailable:
      return 503;
    case code::timeout:
      return 504;
    case code::no_space:
      return 507;
    default:
      return 500;
  }
}

http_response error_response(const status& s) {
  assert(!s.is_ok());
  return fail(http_status_for(s.error_code()), to_string(s.error_code()), s.message());
}

api::api(actors::node& node, defer_fn defer, api_options opts)
    : impl_(std::make_unique<impl>(
          impl{node, std::make_shared<const defer_fn>(std::move(defer)), opts})) {}

api::~api() = default;

void api::handle(http_request req, respond_fn respond) {
  std::erase_if(req.headers, [](const auto& h) {
    return h.first.size() == std::strlen(forwarded_header) &&
           std::equal(h.first.begin(), h.first.end(), forwarded_header,
                      [](char a, char b) { return std::tolower(a) == std::tolower(b); });
  });
  guarded(respond, [&] { impl_->route(req, respond); });
}

void api::handle_forwarded(http_request req, const std::string& from, respond_fn respond) {
  req.headers.emplace_back(forwarded_header, from);
  guarded(respond, [&] { impl_->route(req, respond); });
}

void api::impl::route(const http_request& req, const respond_fn& respond) {
  auto t = parse_target(req.target);
  if (!t) return respond(error_response(t.error()));
  const auto& seg = t->segments;
  const std::string& m = req.method;

  if (seg.size() == 1 && seg[0] == "metrics") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    if (auto refused = refuse_unless(req, scope::read, {})) return respond(std::move(*refused));
    std::string text = node.metrics_text();
    if (opts.extra_metrics) text += opts.extra_metrics();
    return respond({200, "text/plain; version=0.0.4; charset=utf-8", std::move(text), {}});
  }
  if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "health") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return health(respond);
  }
  // A fork's creation on the member its name places it on: only ever sent
  // by the parent's owner (ledger.cpp), never forwarded for a client.
  if (seg.size() == 4 && seg[0] == "v1" && seg[1] == "internal" && seg[2] == "forks" &&
      !req.header(forwarded_header).empty()) {
    auto name = percent_decode(seg[3], false);
    if (!name) return respond(error_response(name.error()));
    if (m != "POST") return respond(method_not_allowed(m, "POST"));
    bool queued = ledger_jobs->submit([this, req, n = *name, respond] {
      guarded(respond, [&] { create_fork(node, n, req, respond); });
    });
    if (!queued) respond(fail(503, "unavailable", "node is shutting down"));
    return;
  }
  if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "whoami") return whoami(req, respond);
  if (seg.size() >= 2 && seg.size() <= 3 && seg[0] == "v1" && seg[1] == "tokens")
    return token_route(opts.tokens, req, seg, respond);
  // Node-wide routes: reading needs read; workers (tasks) need work;
  // changing types or the cluster needs admin.
  if (seg.size() >= 2 && seg[0] == "v1" &&
      (seg[1] == "tasks" || seg[1] == "types" || seg[1] == "cluster")) {
    scope needed = m == "GET" ? scope::read : seg[1] == "tasks" ? scope::work : scope::admin;
    if (auto refused = refuse_unless(req, needed, {})) return respond(std::move(*refused));
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "tasks")
    return task_route(node, defer, req, *t, respond);
  // A type registration, a secret's set or delete write (synced) to the
  // store: off the server's threads.
  if (seg.size() >= 2 && seg.size() <= 5 && seg[0] == "v1" && seg[1] == "types")
    return on_jobs(req, respond, types_route);
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "secrets") {
    // Even their names are the operator's business.
    if (auto refused = refuse_unless(req, scope::admin, {})) return respond(std::move(*refused));
    return on_jobs(req, respond, secrets_route);
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "cluster") {
    if (!opts.cluster) return respond(fail(404, "not_found", "this node is not part of a cluster"));
    return opts.cluster->cluster_route(req, std::vector<std::string>(seg.begin(), seg.end()),
                                       respond);
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "agents") {
    if (seg.size() == 2) {
      if (m == "GET") {
        if (auto refused = refuse_unless(req, scope::read, {})) return respond(std::move(*refused));
        if (opts.cluster && req.header(forwarded_header).empty() &&
            string_param(*t, "local") != "1")
          return opts.cluster->list_all(req, respond);
        return list_agents(node, opts, node_id(), *t, respond);
      }
      if (m == "POST") return spawn(req, respond);
      return respond(method_not_allowed(m, "GET, POST"));
    }
    return agent_route(req, *t, respond);
  }
  respond(fail(404, "not_found", "no such path: " + req.target.substr(0, req.target.find('?'))));
}

// /v1/agents/{name}[/messages | /query | /ledger | /signals/{signal}]. Names
// should arrive as one segment with '/' encoded as %2F; an unencoded name
// also works unless a part of it reads like one of the suffixes.
void api::impl::agent_route(const http_request& req, const target& t, const respond_fn& respond,
                            bool read_indexed) {
  std::vector<std::string_view> rest(t.segments.begin() + 2, t.segments.end());
  std::string action, sig;
  std::size_t n = rest.size();
  if (n >= 3 && rest[n - 2] == "signals") {
    auto s = percent_decode(rest[n - 1], false);
    if (!s) return respond(error_response(s.error()));
    action = "signals";
    sig = std::move(*s);
    rest.resize(n - 2);
  } else if (n >= 3 && rest[n - 2] == "ledger" && rest[n - 1] == "stream") {
    action = "ledger/stream";
    rest.resize(n - 2);
  } else if (n >= 2 &&
             (rest[n - 1] == "messages" || rest[n - 1] == "query" || rest[n - 1] == "ledger" ||
              rest[n - 1] == "cancel" || rest[n - 1] == "upgrade" ||
              is_control_action(rest[n - 1]) || is_ledger_action(rest[n - 1]))) {
    action = std::string(rest[n - 1]);
    rest.resize(n - 1);
  }
  std::string name;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    auto part = percent_decode(rest[i], false);
    if (!part) return respond(error_response(part.error()));
    if (i > 0) name += '/';
    name += *part;
  }
  if (name.empty())
    return respond(fail(404, "not_found", "no such path: " + std::string(req.target)));

  const std::string& m = req.method;
  if (auto refused = refuse_unless(req, scope_for_agent_action(m, action, sig), name))
    return respond(std::move(*refused));
  if (auto owner = owner_elsewhere(name, req); !owner.empty()) {
    // Messages and signals only need acceptance: the outbox takes them even
    // while the owner is down. Everything else is the owner's to answer.
    bool deliverable = !opts.cluster->replicated() && m == "POST" &&
                       (action == "messages" || action == "signals" || is_control_action(action));
    if (action == "ledger/stream") {
      // A stream cannot cross the cluster's request/response calls: the
      // client is sent to the owner.
      std::string url = opts.cluster->http_url(owner);
      if (url.empty()) return respond(fail(503, "unavailable", "owner " + owner + " is unknown"));
      http_response r = json_response(307, {{"owner", owner}, {"location", url + req.target}});
      r.headers.emplace_back("Location", url + req.target);
      return respond(std::move(r));
    }
    if (!deliverable) return opts.cluster->forward(owner, req, respond);
  }
  // Replicated: a read here never shows less than a write acknowledged
  // before it, even on a leader that was deposed and does not know it yet.
  const bool read = (m == "GET" && action != "ledger/stream") || (m == "POST" && action == "query");
  if (read && !read_indexed && opts.cluster && opts.cluster->replicated()) {
    return opts.cluster->read_index(name, [this, req, respond](const status& s) {
      if (!s) return respond(error_response(s));
      auto again = parse_target(req.target);
      if (!again) return respond(error_response(again.error()));
      agent_route(req, *again, respond, true);
    });
  }
  if (action.empty()) {
    if (m == "GET") return get(std::move(name), respond);
    if (m == "DELETE") return terminate(std::move(name), req, respond);
    return respond(method_not_allowed(m, "GET, DELETE"));
  }
  if (action == "ledger") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return ledger(name, t, respond);
  }
  if (action == "ledger/stream") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return stream_ledger(node, defer, opts.max_page_bytes, name, t, respond);
  }
  if (is_ledger_action(action)) {
    bool queued = ledger_jobs->submit([this, req, name, action, respond] {
      guarded(respond, [&] { ledger_route(node, opts.cluster, req, name, action, respond); });
    });
    if (!queued) respond(fail(503, "unavailable", "node is shutting down"));
    return;
  }
  if (m != "POST") return respond(method_not_allowed(m, "POST"));
  if (action == "messages") return message(std::move(name), req, t, respond);
  if (action == "signals") return signal(std::move(name), std::move(sig), req, t, respond);
  if (action == "cancel") return cancel(std::move(name), req, t, respond);
  if (action == "upgrade") return upgrade(node, std::move(name), req, respond);
  if (is_control_action(action)) return control(std::move(name), action, req, t, respond);
  return query(std::move(name), req, respond);
}

void api::impl::spawn(const http_request& req, const respond_fn& respond) {
  auto body = parse_object(req.body, {"name", "type", "input"}, false);
  if (!body) return respond(error_response(body.error()));
  auto name = string_field(*body, "name", true);
  if (!name) return respond(error_response(name.error()));
  auto type = string_field(*body, "type", true);
  if (!type) return respond(error_response(type.error()));
  if (auto s = validate_agent_name(*name); !s) return respond(error_response(s));
  if (auto refused = refuse_unless(req, scope::send, *name)) return respond(std::move(*refused));
  if (auto owner = owner_elsewhere(*name, req); !owner.empty())
    return opts.cluster->forward(owner, req, respond);
  json input = body->contains("input") ? (*body)["input"] : json();
  node.spawn(std::move(*name), std::move(*type), std::move(input),
             [respond](result<actors::agent_view> r) {
               guarded(respond, [&] {
                 respond(r ? json_response(201, view_json(*r)) : error_response(r.error()));
               });
             });
}

void api::impl::get(std::string name, const respond_fn& respond) {
  node.get(std::move(name), [respond, self = node_id()](result<actors::agent_view> r) {
    guarded(respond, [&] {
      if (!r) return respond(error_response(r.error()));
      json v = view_json(*r);
      v["node"] = self;
      respond(json_response(200, v));
    });
  });
}

void api::impl::terminate(std::string name, const http_request& req, const respond_fn& respond) {
  node.terminate(std::move(name), req.who.name, [respond](result<actors::agent_view> r) {
    guarded(respond,
            [&] { respond(r ? json_response(200, view_json(*r)) : error_response(r.error())); });
  });
}

void api::impl::query(std::string name, const http_request& req, const respond_fn& respond) {
  auto q = parse_body(req.body);
  if (!q) return respond(error_response(q.error()));
  node.query(std::move(name), std::move(*q), [respond](result<json> r) {
    guarded(respond, [&] { respond(r ? json_response(200, *r) : error_response(r.error())); });
  });
}

void api::impl::ledger(const std::string& name, const target& t, const respond_fn& respond) {
  auto from = uint_param(t, "from", 0);
  if (!from) return respond(error_response(from.error()));
  auto limit = uint_param(t, "limit", opts.ledger_default_limit);
  if (!limit) return respond(error_response(limit.error()));
  std::size_t n = std::clamp<uint64_t>(*limit, 1, opts.ledger_max_limit);
  auto r = node.ledger(name, *from, n, opts.max_page_bytes);
  if (!r) return respond(error_response(r.error()));
  json events = json::array();
  for (auto& e : r->events) events.push_back(ledger_entry_json(std::move(e)));
  respond(json_response(
      200, {{"events", std::move(events)}, {"next", r->next ? json(r->next) : json(nullptr)}}));
}

void api::impl::health(const respond_fn& respond) {
  const auto h = node.storage().health();
  json reasons = json::array();
  if (!h.writable) reasons.push_back(h.reason);
  for (const auto& d : h.damage)
    reasons.push_back("corrupt table file " + d.file + " (" + d.family + " keys " + d.smallest +
                      " .. " + d.largest + "): those agents answer 500 corruption");
  json damage = json::array();
  for (const auto& d : h.damage)
    damage.push_back({{"file", d.file},
                      {"family", d.family},
                      {"smallest", d.smallest},
                      {"largest", d.largest},
                      {"error", d.error},
                      {"seen_ms", d.seen_ms}});
  json store = {{"writable", h.writable},         {"read_only", h.read_only},
                {"free_bytes", h.free_bytes},     {"reserved_bytes", h.reserved_bytes},
                {"write_errors", h.write_errors}, {"recoveries", h.recoveries},
                {"damage", std::move(damage)},    {"warnings", h.warnings}};
  if (!h.writable) {
    store["problem"] = to_string(h.problem);
    store["since_ms"] = h.since_ms;
  }
  respond(json_response(200, {{"status", reasons.empty() ? "ok" : "degraded"},
                              {"reasons", std::move(reasons)},
                              {"store", std::move(store)},
                              {"live_agents", node.live_agents()},
                              {"uptime_ms", wall_ms() - started_ms},
                              {"version", version()},
                              {"commit", build_commit()}}));
}

}  // namespace keel::net
