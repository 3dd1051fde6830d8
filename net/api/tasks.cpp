// /v1/tasks: external workers poll the queues of `worker` tools, then
// complete or fail what they leased. A worker that dies leaves its lease to
// run out; the task is then handed to the next poll. Only the first result
// of a task is recorded; later ones answer 404.

#include <algorithm>
#include <chrono>
#include <memory>

#include "base/clock.hpp"
#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

constexpr uint64_t max_poll_wait_ms = 30'000;
constexpr int64_t poll_interval_ms = 20;

json task_json(const actors::task_view& t) {
  return {{"id", t.id},
          {"queue", t.queue},
          {"agent", t.agent},
          {"tool", t.tool},
          {"arguments", t.arguments},
          {"attempt", t.attempt},
          {"idempotency_key", t.idempotency_key},
          {"lease_until_ms", t.lease_until_ms}};
}

struct poll_state {
  actors::node* node;
  std::shared_ptr<const defer_fn> defer;
  std::string queue, worker;
  int64_t deadline_ms;
  respond_fn respond;
};

// Polls now, then every poll_interval_ms until a task comes or the wait
// runs out: a bounded loop on the server's timer, no thread held.
void poll_until(const std::shared_ptr<poll_state>& p) {
  guarded(p->respond, [&] {
    if (auto t = p->node->poll_task(p->queue, p->worker))
      return p->respond(json_response(200, {{"task", task_json(*t)}}));
    const int64_t now = wall_ms();
    if (now >= p->deadline_ms) return p->respond(json_response(200, {{"task", nullptr}}));
    const int64_t delay = std::min(poll_interval_ms, p->deadline_ms - now);
    (*p->defer)(std::chrono::milliseconds(delay), [p] { poll_until(p); });
  });
}

void poll(actors::node& node, const std::shared_ptr<const defer_fn>& defer, const http_request& req,
          const respond_fn& respond) {
  auto body = parse_object(req.body, {"queue", "worker", "wait_ms"}, false);
  if (!body) return respond(error_response(body.error()));
  auto queue = string_field(*body, "queue", true);
  if (!queue) return respond(error_response(queue.error()));
  auto worker = string_field(*body, "worker", true);
  if (!worker) return respond(error_response(worker.error()));
  uint64_t wait = 0;
  if (body->contains("wait_ms")) {
    const json& w = (*body)["wait_ms"];
    if (!w.is_number_unsigned() || w.get<uint64_t>() > max_poll_wait_ms)
      return respond(bad_request("\"wait_ms\" must be an integer from 0 to " +
                                 std::to_string(max_poll_wait_ms)));
    wait = w.get<uint64_t>();
  }
  auto p =
      std::make_shared<poll_state>(poll_state{&node, defer, std::move(*queue), std::move(*worker),
                                              wall_ms() + static_cast<int64_t>(wait), respond});
  poll_until(p);
}

void finish(actors::node& node, const std::string& id, bool ok, const http_request& req,
            const respond_fn& respond) {
  actors::task_outcome o;
  o.ok = ok;
  std::string worker;
  if (ok) {
    auto body = parse_object(req.body, {"result", "worker"}, true);
    if (!body) return respond(error_response(body.error()));
    auto w = string_field(*body, "worker", false);
    if (!w) return respond(error_response(w.error()));
    worker = std::move(*w);
    o.result = body->value("result", json());
  } else {
    auto body = parse_object(req.body, {"error", "retryable", "maybe_applied", "worker"}, false);
    if (!body) return respond(error_response(body.error()));
    auto w = string_field(*body, "worker", false);
    if (!w) return respond(error_response(w.error()));
    worker = std::move(*w);
    auto err = string_field(*body, "error", true);
    if (!err) return respond(error_response(err.error()));
    o.error = std::move(*err);
    for (auto [key, field] :
         {std::pair{"retryable", &o.retryable}, std::pair{"maybe_applied", &o.maybe_applied}}) {
      if (!body->contains(key)) continue;
      if (!(*body)[key].is_boolean())
        return respond(bad_request(std::string("field \"") + key + "\" must be a boolean"));
      *field = (*body)[key].get<bool>();
    }
  }
  node.complete_task(id, worker, std::move(o), [respond](result<json> r) {
    guarded(respond, [&] { respond(r ? json_response(200, *r) : error_response(r.error())); });
  });
}

}  // namespace

void task_route(actors::node& node, const std::shared_ptr<const defer_fn>& defer,
                const http_request& req, const target& t, const respond_fn& respond) {
  const auto& seg = t.segments;  // "v1", "tasks", ...
  const std::string& m = req.method;
  if (seg.size() == 2) {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return respond(json_response(200, node.task_stats()));
  }
  if (seg.size() == 3 && seg[2] == "poll") {
    if (m != "POST") return respond(method_not_allowed(m, "POST"));
    return poll(node, defer, req, respond);
  }
  if (seg.size() == 4 && (seg[3] == "complete" || seg[3] == "fail")) {
    if (m != "POST") return respond(method_not_allowed(m, "POST"));
    auto id = percent_decode(seg[2], false);
    if (!id) return respond(error_response(id.error()));
    return finish(node, *id, seg[3] == "complete", req, respond);
  }
  respond(fail(404, "not_found", "no such path: " + req.target.substr(0, req.target.find('?'))));
}

}  // namespace keel::net::api_detail
