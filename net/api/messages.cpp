// The routes that send input to an agent: messages, signals, the operator
// controls (pause, resume, resolve) and cancel. Each is answered once
// accepted, or, with ?wait=MS, once the agent's reply is in or the wait ran
// out (then with where the agent stands).

#include <utility>

#include "base/names.hpp"
#include "http/url.hpp"
#include "net/api/api_impl.hpp"

namespace keel::net {

namespace {

// The agent's reply as the response's "reply" field: its body, or the
// error. Rendered once, from the reply the agent's decision made.
json reply_json(result<actors::agent_reply> r) {
  if (!r)
    return {
        {"error", {{"code", to_string(r.error().error_code())}, {"message", r.error().message()}}}};
  if (r->ok) return std::move(r->body);
  return {{"error", {{"code", std::move(r->code)}, {"message", std::move(r->message)}}}};
}

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

void on_replied(const waiter_ptr& w, result<actors::agent_reply> r) {
  std::unique_lock lock(w->mu);
  if (w->done) return;
  w->reply = reply_json(std::move(r));
  if (w->ack) finish(w, lock);
}

// The node callbacks that feed a waiter: acceptance always, the reply only
// when the caller waits for it.
std::pair<actors::callback<actors::send_ack>, actors::callback<actors::agent_reply>>
waiter_callbacks(const waiter_ptr& w) {
  actors::callback<actors::agent_reply> replied;
  if (w->wait_ms > 0)
    replied = [w](result<actors::agent_reply> r) {
      guarded(w->respond, [&] { on_replied(w, std::move(r)); });
    };
  return {[w](result<actors::send_ack> r) {
            guarded(w->respond, [&] { on_accepted(w, std::move(r)); });
          },
          std::move(replied)};
}

}  // namespace

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
  if (goes_through_outbox(name, req)) {
    if (status s = validate_agent_name(name); !s) return respond(error_response(s));

    return opts.cluster->deliver({std::move(name), persistence::inbox_kind::message, std::move(*id),
                                  std::move(*from), std::move((*body)["body"])},
                                 std::move(accepted), std::move(replied));
  }
  actors::inbound_message m{std::move(*id), std::move(*from), std::move((*body)["body"])};
  m.here_only = opts.cluster && opts.cluster->replicated();
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
  if (goes_through_outbox(name, req)) {
    if (status s = validate_agent_name(name); !s) return respond(error_response(s));
    if (status s = validate_signal_name(sig); !s) return respond(error_response(s));
    return opts.cluster->deliver(
        {std::move(name), persistence::inbox_kind::signal, std::move(sig), "", std::move(payload)},
        std::move(accepted), std::move(replied));
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

}  // namespace keel::net
