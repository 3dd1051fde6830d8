#include "net/api.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/clock.hpp"
#include "base/names.hpp"

namespace keel::net {

using json = nlohmann::json;

namespace {

// Deeper documents are refused: rendering them back (dump) recurses.
constexpr int max_json_depth = 100;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

http_response json_response(unsigned status, const json& j) {
  return {status, "application/json", dump(j), {}};
}

http_response fail(unsigned status, std::string_view code, std::string_view message) {
  return {status, "application/json", error_json(code, message), {}};
}

http_response bad_request(std::string message) {
  return error_response(error(code::invalid_argument, std::move(message)));
}

http_response method_not_allowed(std::string_view method, std::string_view allow) {
  auto r =
      fail(405, "method_not_allowed",
           "method " + std::string(method) + " is not allowed here; use " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

result<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
      int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
      if (lo < 0)
        return error(code::invalid_argument,
                     "bad percent-encoding in '" + std::string(s) + "': '%' needs two hex digits");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// A request target split into raw (still encoded) path segments and decoded
// query parameters. Views point into the request's target.
struct target {
  std::vector<std::string_view> segments;
  std::vector<std::pair<std::string, std::string>> query;

  const std::string* param(std::string_view name) const {
    for (const auto& [k, v] : query)
      if (k == name) return &v;
    return nullptr;
  }
};

result<target> parse_target(std::string_view t) {
  t = t.substr(0, t.find('#'));
  auto q = t.find('?');
  std::string_view path = t.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
  if (path.empty() || path.front() != '/')
    return error(code::invalid_argument, "request target must start with '/'");
  target out;
  path.remove_prefix(1);
  while (!path.empty()) {
    auto slash = path.find('/');
    out.segments.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
    if (path.empty()) out.segments.emplace_back();  // trailing '/'
  }
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (piece.empty()) continue;
    auto eq = piece.find('=');
    auto k = percent_decode(piece.substr(0, eq), true);
    if (!k) return k.error();
    auto v = percent_decode(eq == std::string_view::npos ? "" : piece.substr(eq + 1), true);
    if (!v) return v.error();
    out.query.emplace_back(std::move(*k), std::move(*v));
  }
  return out;
}

// A missing or empty parameter gives `fallback`.
result<uint64_t> uint_param(const target& t, std::string_view name, uint64_t fallback) {
  const std::string* v = t.param(name);
  if (!v || v->empty()) return fallback;
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size())
    return error(code::invalid_argument, "query parameter '" + std::string(name) + "' must be a " +
                                             "non-negative integer, got '" + *v + "'");
  return n;
}

std::string string_param(const target& t, std::string_view name) {
  const std::string* v = t.param(name);
  return v ? *v : std::string();
}

// Counts bracket nesting outside strings, so deep documents are refused
// before nlohmann builds them.
bool too_deep(std::string_view s) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_json_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// An empty body gives null.
result<json> parse_body(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return json();
  if (too_deep(body))
    return error(code::invalid_argument, "malformed JSON: nested deeper than " +
                                             std::to_string(max_json_depth) + " levels");
  try {
    return json::parse(body);
  } catch (const json::exception& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    auto close = what.find("] ");
    if (close != std::string::npos) what.erase(0, close + 2);
    return error(code::invalid_argument, "malformed JSON: " + what);
  }
}

// The body as an object with only the fields in `allowed`.
result<json> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed,
                          bool empty_ok) {
  auto j = parse_body(body);
  if (!j) return j;
  if (j->is_null() && empty_ok) return json::object();
  if (!j->is_object())
    return error(code::invalid_argument, j->is_null() ? "the request body is empty; expected a "
                                                        "JSON object"
                                                      : "the request body must be a JSON object");
  for (auto it = j->begin(); it != j->end(); ++it)
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
      return error(code::invalid_argument, "unknown field \"" + it.key() + "\"");
  return j;
}

// A string field; missing gives "" unless `required`.
result<std::string> string_field(const json& obj, const char* name, bool required) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    if (required)
      return error(code::invalid_argument, std::string("missing field \"") + name + "\"");
    return std::string();
  }
  if (!it->is_string())
    return error(code::invalid_argument, std::string("field \"") + name + "\" must be a string");
  return it->get<std::string>();
}

json view_json(const actors::agent_view& v) {
  return {{"name", v.name},
          {"type", v.type},
          {"status", v.status},
          {"last_seq", v.last_seq},
          {"hibernated", v.hibernated},
          {"created_ms", v.created_ms},
          {"state", v.state}};
}

json reply_json(const result<actors::agent_reply>& r) {
  if (!r)
    return {
        {"error", {{"code", to_string(r.error().error_code())}, {"message", r.error().message()}}}};
  if (r->ok) return r->body;
  return {{"error", {{"code", r->code}, {"message", r->message}}}};
}

// Runs a node callback's work; an exception becomes a 500 instead of
// escaping into a node thread.
template <class F>
void guarded(const respond_fn& respond, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    try {
      respond(error_response(error(code::internal, e.what())));
    } catch (...) {
    }
  } catch (...) {
  }
}

// A message or signal on its way: answered when the acknowledgement is in
// and, with ?wait, when the reply is too or the wait ran out.
struct waiter {
  std::mutex mu;
  bool done = false;
  std::optional<actors::send_ack> ack;
  std::optional<json> reply;
  respond_fn respond;
  uint64_t wait_ms = 0;
  std::shared_ptr<const defer_fn> defer;
};
using waiter_ptr = std::shared_ptr<waiter>;

void finish(const waiter_ptr& w, std::unique_lock<std::mutex>& lock) {
  w->done = true;
  json j{{"id", w->ack->id}, {"seq", w->ack->seq}};
  if (w->ack->duplicate) j["duplicate"] = true;
  if (w->reply) j["reply"] = std::move(*w->reply);
  lock.unlock();
  w->respond(json_response(202, j));
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
  (*w->defer)(std::chrono::milliseconds(w->wait_ms), [w] {
    guarded(w->respond, [&] {
      std::unique_lock l(w->mu);
      if (!w->done) finish(w, l);
    });
  });
}

void on_replied(const waiter_ptr& w, const result<actors::agent_reply>& r) {
  std::unique_lock lock(w->mu);
  if (w->done) return;
  w->reply = reply_json(r);
  if (w->ack) finish(w, lock);
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

  void route(const http_request& req, const respond_fn& respond);
  void agent_route(const http_request& req, const target& t, const respond_fn& respond);

  void spawn(const http_request& req, const respond_fn& respond);
  void list(const target& t, const respond_fn& respond);
  void get(std::string name, const respond_fn& respond);
  void terminate(std::string name, const target& t, const respond_fn& respond);
  void message(std::string name, const http_request& req, const target& t,
               const respond_fn& respond);
  void signal(std::string name, std::string sig, const http_request& req, const target& t,
              const respond_fn& respond);
  void query(std::string name, const http_request& req, const respond_fn& respond);
  void ledger(const std::string& name, const target& t, const respond_fn& respond);
  void health(const respond_fn& respond);

  // A waiter for ?wait=MS, or the error for a bad one.
  result<waiter_ptr> make_waiter(const target& t, const respond_fn& respond) const;
};

api::api(actors::node& node, defer_fn defer, api_options opts)
    : impl_(std::make_unique<impl>(
          impl{node, std::make_shared<const defer_fn>(std::move(defer)), opts})) {}

api::~api() = default;

void api::handle(http_request req, respond_fn respond) {
  guarded(respond, [&] { impl_->route(req, respond); });
}

void api::impl::route(const http_request& req, const respond_fn& respond) {
  auto t = parse_target(req.target);
  if (!t) return respond(error_response(t.error()));
  const auto& seg = t->segments;
  const std::string& m = req.method;

  if (seg.size() == 1 && seg[0] == "metrics") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return respond({200, "text/plain; version=0.0.4; charset=utf-8", node.metrics_text(), {}});
  }
  if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "health") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return health(respond);
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "agents") {
    if (seg.size() == 2) {
      if (m == "GET") return list(*t, respond);
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
  } else if (n >= 2 &&
             (rest[n - 1] == "messages" || rest[n - 1] == "query" || rest[n - 1] == "ledger")) {
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
  if (action.empty()) {
    if (m == "GET") return get(std::move(name), respond);
    if (m == "DELETE") return terminate(std::move(name), t, respond);
    return respond(method_not_allowed(m, "GET, DELETE"));
  }
  if (action == "ledger") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return ledger(name, t, respond);
  }
  if (m != "POST") return respond(method_not_allowed(m, "POST"));
  if (action == "messages") return message(std::move(name), req, t, respond);
  if (action == "signals") return signal(std::move(name), std::move(sig), req, t, respond);
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
  json input = body->contains("input") ? (*body)["input"] : json();
  node.spawn(std::move(*name), std::move(*type), std::move(input),
             [respond](result<actors::agent_view> r) {
               guarded(respond, [&] {
                 respond(r ? json_response(201, view_json(*r)) : error_response(r.error()));
               });
             });
}

void api::impl::list(const target& t, const respond_fn& respond) {
  auto limit = uint_param(t, "limit", opts.list_default_limit);
  if (!limit) return respond(error_response(limit.error()));
  std::size_t n = std::clamp<uint64_t>(*limit, 1, opts.list_max_limit);
  // One more than asked says whether another page exists.
  auto r = node.list(string_param(t, "prefix"), string_param(t, "after"), n + 1);
  if (!r) return respond(error_response(r.error()));
  bool more = r->size() > n;
  if (more) r->resize(n);
  json agents = json::array();
  for (const auto& a : *r)
    agents.push_back({{"name", a.name},
                      {"type", a.type},
                      {"status", a.status},
                      {"created_ms", a.created_ms},
                      {"live", a.live}});
  json next = more ? json(r->back().name) : json(nullptr);
  respond(json_response(200, {{"agents", std::move(agents)}, {"next_after", std::move(next)}}));
}

void api::impl::get(std::string name, const respond_fn& respond) {
  node.get(std::move(name), [respond](result<actors::agent_view> r) {
    guarded(respond,
            [&] { respond(r ? json_response(200, view_json(*r)) : error_response(r.error())); });
  });
}

void api::impl::terminate(std::string name, const target& t, const respond_fn& respond) {
  std::string by = string_param(t, "by");
  if (by.empty()) by = "api";
  node.terminate(std::move(name), std::move(by), [respond](result<actors::agent_view> r) {
    guarded(respond,
            [&] { respond(r ? json_response(200, view_json(*r)) : error_response(r.error())); });
  });
}

result<waiter_ptr> api::impl::make_waiter(const target& t, const respond_fn& respond) const {
  auto wait = uint_param(t, "wait", 0);
  if (!wait) return wait.error();
  if (*wait > opts.max_wait_ms)
    return error(code::invalid_argument,
                 "wait must be at most " + std::to_string(opts.max_wait_ms) + " ms");
  auto w = std::make_shared<waiter>();
  w->respond = respond;
  w->wait_ms = *wait;
  w->defer = defer;
  return w;
}

void api::impl::message(std::string name, const http_request& req, const target& t,
                        const respond_fn& respond) {
  auto body = parse_object(req.body, {"id", "from", "body"}, false);
  if (!body) return respond(error_response(body.error()));
  if (!body->contains("body")) return respond(bad_request("missing field \"body\""));
  auto id = string_field(*body, "id", false);
  if (!id) return respond(error_response(id.error()));
  auto from = string_field(*body, "from", false);
  if (!from) return respond(error_response(from.error()));
  auto w = make_waiter(t, respond);
  if (!w) return respond(error_response(w.error()));

  actors::inbound_message m{std::move(*id), std::move(*from), std::move((*body)["body"])};
  actors::callback<actors::agent_reply> replied;
  if ((*w)->wait_ms > 0)
    replied = [w = *w](result<actors::agent_reply> r) {
      guarded(w->respond, [&] { on_replied(w, r); });
    };
  node.send(
      std::move(name), std::move(m),
      [w = *w](result<actors::send_ack> r) {
        guarded(w->respond, [&] { on_accepted(w, std::move(r)); });
      },
      std::move(replied));
}

void api::impl::signal(std::string name, std::string sig, const http_request& req, const target& t,
                       const respond_fn& respond) {
  auto body = parse_object(req.body, {"payload"}, true);
  if (!body) return respond(error_response(body.error()));
  if (sig.empty()) return respond(bad_request("the signal name is empty"));
  auto w = make_waiter(t, respond);
  if (!w) return respond(error_response(w.error()));
  json payload = body->contains("payload") ? std::move((*body)["payload"]) : json();

  actors::callback<actors::agent_reply> replied;
  if ((*w)->wait_ms > 0)
    replied = [w = *w](result<actors::agent_reply> r) {
      guarded(w->respond, [&] { on_replied(w, r); });
    };
  node.signal(
      std::move(name), std::move(sig), std::move(payload),
      [w = *w](result<actors::send_ack> r) {
        guarded(w->respond, [&] { on_accepted(w, std::move(r)); });
      },
      std::move(replied));
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
  auto r = node.ledger(name, *from, n);
  if (!r) return respond(error_response(r.error()));
  json events = json::array();
  for (auto& e : *r)
    events.push_back(
        {{"seq", e.seq}, {"type", e.type}, {"time", e.time_ms}, {"data", std::move(e.data)}});
  respond(json_response(200, {{"events", std::move(events)}}));
}

void api::impl::health(const respond_fn& respond) {
  respond(json_response(200, {{"status", "ok"},
                              {"live_agents", node.live_agents()},
                              {"uptime_ms", wall_ms() - started_ms}}));
}

}  // namespace keel::net
