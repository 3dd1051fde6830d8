// Messages and signals between nodes: what the API and agents hand to the
// durable outbox (deliver, send, spawn of a remote name), how a batch reaches
// its owner, how the owner takes it in order (deliver_here), and how a
// waiting sender gets the agent's reply back.

#include <algorithm>
#include <mutex>
#include <utility>

#include "base/call_once.hpp"
#include "base/clock.hpp"
#include "net/cluster/node.hpp"
#include "net/cluster/node_impl.hpp"

namespace keel::net {

using api_detail::dump;

namespace {

json reply_to_json(const result<actors::agent_reply>& r) {
  if (!r)
    return {{"ok", false},
            {"code", to_string(r.error().error_code())},
            {"message", r.error().message()}};
  return {{"ok", r->ok}, {"body", r->body}, {"code", r->code}, {"message", r->message}};
}

actors::agent_reply reply_from_json(const json& j) {
  actors::agent_reply r;
  r.ok = j.value("ok", false);
  r.body = j.value("body", json());
  r.code = j.value("code", "");
  r.message = j.value("message", "");
  return r;
}

status from_wire_error(const json& j) {
  return error(code_from_string(j.value("code", "internal")), j.value("message", ""));
}

}  // namespace

bool cluster_node::has_queued(std::string_view name) const {
  return impl_->outbox->holds(name);
}

// --- messages through the outbox -------------------------------------------------

void cluster_node::deliver(remote_delivery d, actors::callback<actors::send_ack> accepted,
                           actors::callback<actors::agent_reply> replied) {
  outbox_item item;
  item.name = std::move(d.name);
  item.kind = d.kind;
  item.id = std::move(d.id);
  item.from = std::move(d.from);
  item.body = std::move(d.body);
  if (item.kind == persistence::inbox_kind::message && item.id.empty()) {
    // The outbox redelivers after a crash: the message needs an id the owner
    // dedupes by. Ids from the node's never-reused sequence.
    auto n = impl_->node.storage().allocate_agent_id();
    if (!n) return accepted(n.error());
    item.id =
        std::string(actors::cluster_id_prefix) + "m-" + impl_->self.id + "-" + std::to_string(*n);
  }
  if (replied) {
    item.wait = true;
    item.ref = impl_->self.id + "-" + std::to_string(wall_ms()) + "-" +
               std::to_string(impl_->next_ref.fetch_add(1));
    std::lock_guard lk(impl_->replies_mu);
    const int64_t now = wall_ms();
    std::erase_if(impl_->replies, [now](const auto& e) { return e.second.deadline_ms < now; });
    // The longest ?wait plus the time a delivery may take.
    impl_->replies[item.ref] = {now + 60'000 + impl_->opts.cluster.forward_timeout_ms,
                                std::move(replied)};
  }
  auto shared_accept = std::make_shared<actors::callback<actors::send_ack>>(std::move(accepted));
  std::string id = item.id;
  impl_->outbox->append(
      std::move(item),
      [shared_accept](result<outbox_item> r) {
        if (!r) call_once(*shared_accept, result<actors::send_ack>(r.error()));
      },
      [shared_accept, id](result<delivery_ack> r) {
        if (!r) {
          // Durable here, the owner cannot take it now: queued.
          actors::send_ack a;
          a.id = id;
          a.queued = true;
          return call_once(*shared_accept, result<actors::send_ack>(std::move(a)));
        }
        if (r->ok) return call_once(*shared_accept, result<actors::send_ack>(r->ack));
        call_once(*shared_accept,
                  result<actors::send_ack>(error(code_from_string(r->code), r->message)));
      });
}

void cluster_node::send(std::string name, actors::inbound_message m,
                        actors::callback<actors::send_ack> accepted) {
  deliver({std::move(name), persistence::inbox_kind::message, std::move(m.id), std::move(m.from),
           std::move(m.body)},
          std::move(accepted), nullptr);
}

void cluster_node::spawn(std::string name, std::string type, json input,
                         actors::callback<actors::agent_view> done) {
  std::string owner = owner_elsewhere(name);
  http_request req{"POST",
                   "/v1/agents",
                   dump(json{{"name", name}, {"type", type}, {"input", std::move(input)}}),
                   {},
                   // The node's own request, for one of its agents.
                   principal{"keeld", all_scopes, {}}};
  forward(owner, std::move(req), [done = std::move(done)](http_response r) mutable {
    auto j = json::parse(r.body, nullptr, false);
    if (r.status == 201 && j.is_object()) {
      actors::agent_view v;
      v.name = j.value("name", "");
      v.type = j.value("type", "");
      v.status = j.value("status", "");
      v.created_ms = j.value("created_ms", int64_t{0});
      return done(std::move(v));
    }
    json e = j.is_object() ? j.value("error", json::object()) : json::object();
    done(error(code_from_string(e.value("code", r.status == 503 ? "unavailable" : "internal")),
               e.value("message", "spawn failed with HTTP " + std::to_string(r.status))));
  });
}

void cluster_node::impl::deliver_batch(
    const std::string& to, std::vector<outbox_item> batch,
    std::function<void(result<std::vector<delivery_ack>>)> done) {
  // The outbox runs before start() has set the node's router: nothing is
  // delivered until then (an agent woken here could not reach remote ones).
  if (!ready.load(std::memory_order_acquire))
    return done(error(code::unavailable, "node " + self.id + " is starting"));
  if (to == self.id) {
    return deliver_here(
        self.id, std::move(batch),
        [done = std::move(done)](std::vector<delivery_ack> acks) { done(std::move(acks)); });
  }
  json items = json::array();
  for (const auto& i : batch) items.push_back(to_json(i));
  json msg{{"op", "deliver"}, {"epoch", current_map()->epoch()}, {"items", std::move(items)}};
  std::size_t n = batch.size();
  call(to, msg, opts.cluster.forward_timeout_ms,
       [done = std::move(done), n](result<std::string> r) {
         if (!r) return done(r.error());
         auto j = json::parse(*r, nullptr, false);
         if (!j.is_object() || !j["acks"].is_array() || j["acks"].size() != n)
           return done(error(code::corruption, "a peer sent unreadable acknowledgements"));
         std::vector<delivery_ack> acks;
         for (const auto& a : j["acks"]) {
           auto d = delivery_ack_from_json(a);
           if (!d) return done(d.error());
           acks.push_back(std::move(*d));
         }
         done(std::move(acks));
       });
}

// Items are taken in order; from the first item whose agent is not served
// here on, everything is refused for a retry, so a message never overtakes
// an earlier one to the same agent.
void cluster_node::impl::deliver_here(const std::string& from, std::vector<outbox_item> items,
                                      std::function<void(std::vector<delivery_ack>)> done) {
  struct batch_state {
    std::mutex mu;
    std::vector<delivery_ack> acks;
    std::size_t pending = 0;
    std::function<void(std::vector<delivery_ack>)> done;
  };
  auto st = std::make_shared<batch_state>();
  st->acks.resize(items.size());
  st->done = std::move(done);
  std::size_t take = 0;
  while (take < items.size() && serves(items[take].name)) ++take;
  for (std::size_t i = take; i < items.size(); ++i) {
    auto& a = st->acks[i];
    a.retry = true;
    a.code = "unavailable";
    a.message = "agent '" + items[i].name + "' is not served by node " + self.id;
  }
  if (take == 0) return st->done(std::move(st->acks));
  st->pending = take;
  delivered_in.fetch_add(take, std::memory_order_relaxed);
  for (std::size_t i = 0; i < take; ++i) {
    auto& it = items[i];
    auto accepted = [st, i](result<actors::send_ack> r) {
      std::unique_lock lk(st->mu);
      auto& a = st->acks[i];
      if (r) {
        a.ok = true;
        a.ack = *r;
      } else {
        a.retry = r.error().error_code() == code::unavailable;
        a.code = to_string(r.error().error_code());
        a.message = r.error().message();
      }
      if (--st->pending == 0) {
        auto acks = std::move(st->acks);
        lk.unlock();
        st->done(std::move(acks));
      }
    };
    actors::callback<actors::agent_reply> replied;
    if (it.wait) {
      replied = [this, from, ref = it.ref](result<actors::agent_reply> r) {
        json msg{{"op", "reply"}, {"ref", ref}, {"reply", reply_to_json(r)}};
        if (from == self.id) return on_reply(msg);
        call(from, msg, opts.cluster.forward_timeout_ms, [](result<std::string>) {});
      };
    }
    if (it.kind == persistence::inbox_kind::signal)
      // Signals have no id of their own: the sender's outbox entry is the
      // dedupe key, so a redelivery is not applied twice.
      node.signal(
          std::move(it.name), std::move(it.id), std::move(it.body), std::move(accepted),
          std::move(replied),
          std::string(actors::cluster_id_prefix) + "s-" + from + "-" + std::to_string(it.seq));
    else
      node.send(std::move(it.name),
                actors::inbound_message{std::move(it.id), std::move(it.from), std::move(it.body)},
                std::move(accepted), std::move(replied));
  }
}

void cluster_node::impl::on_deliver(const std::string& from, const json& msg,
                                    transport_handlers::respond_fn respond) {
  std::vector<outbox_item> items;
  if (!msg.contains("items") || !msg["items"].is_array())
    return respond(error(code::invalid_argument, "deliver without items"));
  for (const auto& j : msg["items"]) {
    auto i = outbox_item_from_json(j);
    if (!i) return respond(i.error());
    items.push_back(std::move(*i));
  }
  deliver_here(from, std::move(items), [respond](std::vector<delivery_ack> acks) {
    json out = json::array();
    for (const auto& a : acks) out.push_back(to_json(a));
    respond(dump(json{{"acks", std::move(out)}}));
  });
}

void cluster_node::impl::on_reply(const json& msg) {
  actors::callback<actors::agent_reply> cb;
  {
    std::lock_guard lk(replies_mu);
    auto it = replies.find(msg.value("ref", ""));
    if (it == replies.end()) return;
    cb = std::move(it->second.cb);
    replies.erase(it);
  }
  const json r = msg.value("reply", json());
  if (r.is_object() && !r.value("ok", false) && !r.contains("body")) return cb(from_wire_error(r));
  cb(reply_from_json(r));
}

}  // namespace keel::net
