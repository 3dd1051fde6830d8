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
#include "net/api/support.hpp"

namespace keel::net {

using json = nlohmann::json;

namespace {

using namespace api_detail;

json reply_json(const result<actors::agent_reply>& r) {
  if (!r)
    return {
        {"error", {{"code", to_string(r.error().error_code())}, {"message", r.error().message()}}}};
  if (r->ok) return r->body;
  return {{"error", {{"code", r->code}, {"message", r->message}}}};
}

// A message or signal on its way: answered when the acknowledgement is in
// and, with ?wait, when the reply is too or the wait ran out.
// Where the agent stands, for a wait that ran out: `done` gets what
// standing_of() says, or null when it cannot be had.
using standing_fn = std::function<void(std::function<void(json)> done)>;

struct waiter {
  std::mutex mu;
  bool done = false;
  std::optional<actors::send_ack> ack;
  std::optional<json> reply;
  respond_fn respond;
  uint64_t wait_ms = 0;
  std::shared_ptr<const defer_fn> defer;
  standing_fn standing;
};
using waiter_ptr = std::shared_ptr<waiter>;

void finish(const waiter_ptr& w, std::unique_lock<std::mutex>& lock, const json& standing = {}) {
  w->done = true;
  json j{{"id", w->ack->id}, {"seq", w->ack->seq}};
  if (w->ack->duplicate) j["duplicate"] = true;
  if (w->ack->queued) j["queued"] = true;
  if (w->reply)
    j["reply"] = std::move(*w->reply);
  else if (standing.is_object())
    j.update(standing);
  lock.unlock();
  w->respond(json_response(202, j));
}

// The wait ran out without a reply: the answer says where the agent
// stands, so a client need not ask again. A reply that comes meanwhile
// still wins.
void on_wait_over(const waiter_ptr& w) {
  {
    std::unique_lock l(w->mu);
    if (w->done) return;
    if (!w->standing || w->ack->queued) return finish(w, l);
  }
  w->standing([w](json standing) {
    guarded(w->respond, [&] {
      std::unique_lock l(w->mu);
      if (!w->done) finish(w, l, standing);
    });
  });
}

void on_accepted(const waiter_ptr& w, result<actors::send_ack> r) {
  std::unique_lock lock(w->mu);
  if (w->done) return;
  if (!r) {
    w->done = true;
    lock.unlock();
    w->respond(error_response(r.error()));
    return;
  }
  w->ack = std::move(r).value();
  // A duplicate gets the first reply again (at once if it was processed).
  if (w->wait_ms == 0 || w->reply) return finish(w, lock);
  lock.unlock();
  (*w->defer)(std::chrono::milliseconds(w->wait_ms),
              [w] { guarded(w->respond, [&] { on_wait_over(w); }); });
}

void on_replied(const waiter_ptr& w, const result<actors::agent_reply>& r) {
  std::unique_lock lock(w->mu);
  if (w->done) return;
  w->reply = reply_json(r);
  if (w->ack) finish(w, lock);
}

// The node callbacks that feed a waiter: acceptance always, the reply only
// when the caller waits for it.
std::pair<actors::callback<actors::send_ack>, actors::callback<actors::agent_reply>>
waiter_callbacks(const waiter_ptr& w) {
  actors::callback<actors::agent_reply> replied;
  if (w->wait_ms > 0)
    replied = [w](result<actors::agent_reply> r) {
      guarded(w->respond, [&] { on_replied(w, r); });
    };
  return {[w](result<actors::send_ack> r) {
            guarded(w->respond, [&] { on_accepted(w, std::move(r)); });
          },
          std::move(replied)};
}

}  // namespace

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

struct api::impl {
  actors::node& node;
  std::shared_ptr<const defer_fn> defer;
  api_options opts;
  int64_t started_ms = wall_ms();
  // Whole-ledger work (audit, replay, fork, import, compaction) reads and
  // computes for as long as a ledger is long: on threads of its own, so
  // the server's threads keep taking requests.
  std::unique_ptr<actors::effect_pool> ledger_jobs = std::make_unique<actors::effect_pool>(2);

  void route(const http_request& req, const respond_fn& respond);
  void agent_route(const http_request& req, const target& t, const respond_fn& respond);

  void spawn(const http_request& req, const respond_fn& respond);
  void get(std::string name, const respond_fn& respond);
  void terminate(std::string name, const http_request& req, const respond_fn& respond);
  void message(std::string name, const http_request& req, const target& t,
               const respond_fn& respond);
  void signal(std::string name, std::string sig, const http_request& req, const target& t,
              const respond_fn& respond);
  void control(std::string name, const std::string& action, const http_request& req,
               const target& t, const respond_fn& respond);
  void send_signal(std::string name, std::string sig, json payload, const http_request& req,
                   const target& t, const respond_fn& respond);
  void query(std::string name, const http_request& req, const respond_fn& respond);
  void cancel(std::string name, const http_request& req, const target& t,
              const respond_fn& respond);
  void ledger(const std::string& name, const target& t, const respond_fn& respond);
  void health(const respond_fn& respond);

  // Messages for `name` still wait in this node's outbox (it became the
  // owner while they were queued): new ones queue behind them, in order.
  bool queued_here(const std::string& name, const http_request& req) const {
    return opts.cluster && req.header(forwarded_header).empty() && opts.cluster->has_queued(name);
  }

  // "" when this node serves `name`; else the owner's id. A forwarded
  // request for a name not served here is a conflict of maps: the sender
  // must retry, never forward again (no loops).
  std::string owner_elsewhere(const std::string& name, const http_request& req) const {
    if (!opts.cluster) return {};
    std::string owner = opts.cluster->owner_elsewhere(name);
    if (!owner.empty() && !req.header(forwarded_header).empty()) return {};
    return owner;
  }

  // Answers `req` with `route` on the api's own threads.
  void on_jobs(const http_request& req, const respond_fn& respond,
               void (*route)(actors::node&, const http_request&, const target&,
                             const respond_fn&)) {
    bool queued = ledger_jobs->submit([this, req, respond, route] {
      guarded(respond, [&] {
        // Parsed again: the target's views point into this copy of it.
        auto own = parse_target(req.target);
        if (!own) return respond(error_response(own.error()));
        route(node, req, *own, respond);
      });
    });
    if (!queued) respond(fail(503, "unavailable", "node is shutting down"));
  }

  // A waiter for ?wait=MS on agent `name`, or the error for a bad one.
  result<waiter_ptr> make_waiter(const std::string& name, const http_request& req, const target& t,
                                 const respond_fn& respond);

  // The id listings and views give as an agent's node: this member's, or
  // single_node_id.
  std::string node_id() const { return opts.cluster ? opts.cluster->self_id() : single_node_id; }
};

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
void api::impl::agent_route(const http_request& req, const target& t, const respond_fn& respond) {
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
    bool deliverable =
        m == "POST" && (action == "messages" || action == "signals" || is_control_action(action));
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

result<waiter_ptr> api::impl::make_waiter(const std::string& name, const http_request& req,
                                          const target& t, const respond_fn& respond) {
  auto wait = uint_param(t, "wait", 0);
  if (!wait) return wait.error();
  if (*wait > opts.max_wait_ms)
    return error(code::invalid_argument,
                 "wait must be at most " + std::to_string(opts.max_wait_ms) + " ms");
  auto w = std::make_shared<waiter>();
  w->respond = respond;
  w->wait_ms = *wait;
  w->defer = defer;
  // Where the agent stands is for those who may read it; asked of its
  // owner: this node, or the member the view is forwarded to.
  if (*wait == 0 || !req.who.may(scope::read, name)) return w;
  const std::string owner = owner_elsewhere(name, req);
  if (owner.empty()) {
    w->standing = [this, name](std::function<void(json)> done) {
      node.get(name, [done = std::move(done)](result<actors::agent_view> v) {
        done(v ? standing_of(view_json(*v)) : json());
      });
    };
  } else {
    w->standing = [this, name, owner, who = req.who](std::function<void(json)> done) {
      http_request view{"GET", "/v1/agents/" + percent_encode(name), "", {}, who};
      opts.cluster->forward(owner, std::move(view), [done = std::move(done)](http_response r) {
        json v = r.status == 200 ? json::parse(r.body, nullptr, false) : json();
        done(v.is_object() ? standing_of(v) : json());
      });
    };
  }
  return w;
}

void api::impl::message(std::string name, const http_request& req, const target& t,
                        const respond_fn& respond) {
  auto body = parse_object(req.body, {"id", "from", "body"}, false);
  if (!body) return respond(error_response(body.error()));
  if (!body->contains("body")) return respond(bad_request("missing field \"body\""));
  auto id = string_field(*body, "id", false);
  if (!id) return respond(error_response(id.error()));
  // An empty id would quietly make the message one nobody can retry.
  if (id->empty() && body->contains("id") && !(*body)["id"].is_null())
    return respond(
        bad_request("field \"id\" is empty; leave it out for a message without a dedupe key"));
  auto from = string_field(*body, "from", false);
  if (!from) return respond(error_response(from.error()));
  auto w = make_waiter(name, req, t, respond);
  if (!w) return respond(error_response(w.error()));

  // Checked here for both paths: through the outbox the owner would refuse
  // it only after a 202 "queued".
  if (status s = actors::validate_client_message_id(*id); !s) return respond(error_response(s));
  auto [accepted, replied] = waiter_callbacks(*w);
  if (auto owner = owner_elsewhere(name, req); !owner.empty() || queued_here(name, req)) {
    if (status s = validate_agent_name(name); !s) return respond(error_response(s));

    return opts.cluster->deliver(
        {std::move(name), "message", std::move(*id), std::move(*from), std::move((*body)["body"])},
        std::move(accepted), std::move(replied));
  }
  actors::inbound_message m{std::move(*id), std::move(*from), std::move((*body)["body"])};
  node.send(std::move(name), std::move(m), std::move(accepted), std::move(replied));
}

void api::impl::signal(std::string name, std::string sig, const http_request& req, const target& t,
                       const respond_fn& respond) {
  auto body = parse_object(req.body, {"payload"}, true);
  if (!body) return respond(error_response(body.error()));
  if (sig.empty()) return respond(bad_request("the signal name is empty"));
  // The node records forks itself (POST .../fork): a client cannot claim one.
  if (sig == "forked" && req.header(forwarded_header).empty())
    return respond(bad_request("\"forked\" is recorded by POST /v1/agents/{name}/fork"));
  if (sig == "salvaged") return respond(bad_request("\"salvaged\" is recorded by keeld --salvage"));
  json payload = body->contains("payload") ? std::move((*body)["payload"]) : json();
  // Who sent it is the authenticated principal, not what the payload says.
  // (A signal the cluster delivers was stamped by the member it came in at.)
  if (req.header(forwarded_header).empty()) payload = stamp_by(std::move(payload), req.who);
  send_signal(std::move(name), std::move(sig), std::move(payload), req, t, respond);
}

// pause, resume, resolve: the signals of the same name, with who sent them.
void api::impl::control(std::string name, const std::string& action, const http_request& req,
                        const target& t, const respond_fn& respond) {
  auto body = action == "resolve" ? parse_object(req.body, {"by", "outcome", "result"}, false)
                                  : parse_object(req.body, {"by"}, true);
  if (!body) return respond(error_response(body.error()));
  auto by = string_field(*body, "by", false);
  if (!by) return respond(error_response(by.error()));
  json payload = body->is_object() ? *body : json::object();
  payload = stamp_by(std::move(payload), req.who);
  send_signal(std::move(name), action, std::move(payload), req, t, respond);
}

void api::impl::send_signal(std::string name, std::string sig, json payload,
                            const http_request& req, const target& t, const respond_fn& respond) {
  auto w = make_waiter(name, req, t, respond);
  if (!w) return respond(error_response(w.error()));
  auto [accepted, replied] = waiter_callbacks(*w);
  if (auto owner = owner_elsewhere(name, req); !owner.empty() || queued_here(name, req)) {
    if (status s = validate_agent_name(name); !s) return respond(error_response(s));
    if (status s = validate_signal_name(sig); !s) return respond(error_response(s));
    return opts.cluster->deliver(
        {std::move(name), "signal", std::move(sig), "", std::move(payload)}, std::move(accepted),
        std::move(replied));
  }
  node.signal(std::move(name), std::move(sig), std::move(payload), std::move(accepted),
              std::move(replied));
}

void api::impl::cancel(std::string name, const http_request& req, const target& t,
                       const respond_fn& respond) {
  auto body = parse_object(req.body, {"by"}, true);
  if (!body) return respond(error_response(body.error()));
  auto by = string_field(*body, "by", false);
  if (!by) return respond(error_response(by.error()));
  auto w = make_waiter(name, req, t, respond);
  if (!w) return respond(error_response(w.error()));
  auto [accepted, replied] = waiter_callbacks(*w);
  node.cancel(std::move(name), req.who.name, std::move(accepted), std::move(replied));
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
