// The node's agent calls: each builds a request and hands it to the
// supervisor (or the cluster, for a name served elsewhere); worker tasks;
// ledger pages and listings read from the store. Start, stop and shard
// handoff are in node_lifecycle.cpp.

#include "actors/node.hpp"

#include <algorithm>
#include <optional>

#include "actors/node_impl.hpp"
#include "agent/core.hpp"
#include "ledger/codec.hpp"

namespace keel::actors {

// Messages and spawns an agent here addressed to an agent elsewhere go to
// the cluster; anything else for a name not served here is refused (the
// HTTP API forwards calls to the owner before they reach the node).
bool hand_elsewhere(runtime& rt, request_ptr& r) {
  auto rr = rt.router.load(std::memory_order_acquire);
  if (!rr || rr->is_local(r->name)) return false;
  std::visit(overload{[&](message_call& m) {
                        if (m.here_only)
                          return fail(*r, error(code::unavailable, rr->elsewhere(r->name)));
                        rr->send(
                            std::move(r->name),
                            inbound_message{std::move(m.id), std::move(m.from), std::move(m.body)},
                            std::exchange(m.accepted, nullptr));
                      },
                      [&](spawn_call& c) {
                        rr->spawn(std::move(r->name), std::move(c.type), std::move(c.input),
                                  std::exchange(c.viewed, nullptr));
                      },
                      [&](auto&) { fail(*r, error(code::unavailable, rr->elsewhere(r->name))); }},
             r->what);
  return true;
}

namespace {

// The byte a key must not hold: ASCII control characters (NUL among them)
// would cut or garble it in logs, files and terminals.
std::optional<std::size_t> control_char_at(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return i;
  }
  return std::nullopt;
}

}  // namespace

status validate_message_id(std::string_view id) {
  if (id.size() > 256) return error(code::invalid_argument, "message id is longer than 256 bytes");
  if (auto at = control_char_at(id))
    return error(code::invalid_argument, "message id has a control character at byte " +
                                             std::to_string(*at) + "; ids are printable text");
  if (is_generated_id(id))
    return error(code::invalid_argument, "message ids starting with \"" +
                                             std::string(generated_id_prefix) +
                                             "\" are reserved for ids the node generates");
  return status::ok();
}

status validate_dedupe_key(std::string_view key) {
  if (key.size() > 256) return error(code::invalid_argument, "dedupe key is longer than 256 bytes");
  if (auto at = control_char_at(key))
    return error(code::invalid_argument,
                 "dedupe key has a control character at byte " + std::to_string(*at));
  return status::ok();
}

status validate_client_message_id(std::string_view id) {
  KEEL_TRY(validate_message_id(id));
  if (id.starts_with(cluster_id_prefix))
    return error(code::invalid_argument, "message ids starting with \"" +
                                             std::string(cluster_id_prefix) +
                                             "\" are reserved for ids the cluster generates");
  return status::ok();
}

void node::spawn(std::string name, std::string type, json input, callback<agent_view> done) {
  const bool known_type = impl_->rt.types->find(type) != nullptr;
  std::string unknown = known_type ? std::string() : type;
  auto r =
      make_request(std::move(name), spawn_call{std::move(type), std::move(input), std::move(done)});
  if (impl_->reject_bad_name(*r)) return;
  if (!known_type) {
    std::string known;
    for (auto& t : impl_->rt.types->names()) known += (known.empty() ? "" : ", ") + t;
    fail(*r, error(code::invalid_argument,
                   "unknown agent type '" + unknown + "' (known: " + known + ")"));
    return;
  }
  impl_->submit(std::move(r));
}

void node::send(std::string name, inbound_message m, callback<send_ack> accepted,
                callback<agent_reply> replied) {
  status valid = validate_message_id(m.id);
  auto r = make_request(std::move(name), message_call{{std::move(accepted), std::move(replied)},
                                                      std::move(m.id),
                                                      std::move(m.from),
                                                      std::move(m.body),
                                                      m.here_only});
  if (impl_->reject_bad_name(*r)) return;
  if (status s = std::move(valid); !s) {
    fail(*r, s);
    return;
  }
  impl_->submit(std::move(r));
}

void node::signal(std::string name, std::string signal, json payload, callback<send_ack> accepted,
                  callback<agent_reply> replied, std::string dedupe) {
  status valid_name = validate_signal_name(signal);
  status valid_key = validate_dedupe_key(dedupe);
  auto r = make_request(std::move(name), signal_call{{std::move(accepted), std::move(replied)},
                                                     std::move(signal),
                                                     std::move(payload),
                                                     std::move(dedupe)});
  if (impl_->reject_bad_name(*r)) return;
  if (status s = std::move(valid_name); !s) {
    fail(*r, s);
    return;
  }
  if (status s = std::move(valid_key); !s) {
    fail(*r, s);
    return;
  }
  impl_->submit(std::move(r));
}

void node::query(std::string name, json q, callback<json> done) {
  auto r = make_request(std::move(name), query_call{std::move(q), std::move(done)});
  if (impl_->reject_bad_name(*r)) return;
  impl_->submit(std::move(r));
}

void node::get(std::string name, callback<agent_view> done) {
  auto r = make_request(std::move(name), get_call{std::move(done)});
  if (impl_->reject_bad_name(*r)) return;
  impl_->submit(std::move(r));
}

void node::terminate(std::string name, std::string by, callback<agent_view> done) {
  auto r = make_request(std::move(name), terminate_call{std::move(by), std::move(done)});
  if (impl_->reject_bad_name(*r)) return;
  impl_->submit(std::move(r));
}

void node::upgrade(std::string name, std::string to, std::string by, callback<json> done) {
  if (to == "latest") to.clear();
  const bool valid = to.empty() || (to.size() >= 6 && to.size() <= 64 &&
                                    to.find_first_not_of("0123456789abcdef") == std::string::npos);
  auto r =
      make_request(std::move(name), upgrade_call{std::move(to), std::move(by), std::move(done)});
  if (impl_->reject_bad_name(*r)) return;
  if (!valid) {
    fail(*r, error(code::invalid_argument,
                   "a version is \"latest\" or a hash (at least its first 6 hex digits)"));
    return;
  }
  impl_->submit(std::move(r));
}

void node::cancel(std::string name, std::string by, callback<send_ack> accepted,
                  callback<agent_reply> replied) {
  signal(std::move(name), "cancel", json{{"by", std::move(by)}}, std::move(accepted),
         std::move(replied));
}

std::optional<task_view> node::poll_task(const std::string& queue, const std::string& worker) {
  if (impl_->stopped) return std::nullopt;
  auto t = impl_->rt.tasks.poll(queue, worker, wall_ms());
  if (!t) return std::nullopt;
  return task_view{t->id,
                   t->queue,
                   t->agent,
                   t->tool,
                   t->arguments,
                   t->attempt,
                   t->agent + "#" + std::to_string(t->effect),
                   t->lease_until_ms};
}

void node::complete_task(const std::string& id, const std::string& worker, task_outcome outcome,
                         callback<json> done) {
  auto t = impl_->rt.tasks.find(id, worker, wall_ms());
  if (!t) {
    done(t.error());
    return;
  }
  runtime* rt = &impl_->rt;
  impl_->submit(make_request(
      t->agent,
      effect_result_call{{t->effect, t->attempt, outcome.ok, std::move(outcome.result),
                          std::move(outcome.error), outcome.retryable, outcome.maybe_applied},
                         [rt, id, done = std::move(done)](result<json> res) {
                           if (res) rt->tasks.finish(id);
                           done(std::move(res));
                         }}));
}

json node::task_stats() {
  json out = json::object();
  for (const auto& [queue, st] : impl_->rt.tasks.stats(wall_ms()))
    out[queue] = {{"ready", st.ready}, {"leased", st.leased}};
  return {{"queues", std::move(out)}, {"requeued", impl_->rt.tasks.requeued()}};
}

result<ledger_page> node::ledger(std::string_view name, uint64_t from, std::size_t limit,
                                 uint64_t max_bytes) {
  if (impl_->stopped) return error(code::unavailable, "node is shutting down");
  KEEL_TRY(validate_agent_name(name));
  auto meta = impl_->db->get_agent(name);
  if (!meta) return meta.error();
  if (!*meta) return error(code::not_found, "agent " + std::string(name) + " does not exist");
  // One more than asked says whether the ledger goes on.
  from = std::max<uint64_t>(from, 1);
  auto recs = impl_->db->read_ledger((*meta)->id, from, limit + 1, name);
  if (!recs) return recs.error();
  ledger_page page;
  page.events.reserve(std::min(recs->size(), limit));
  // Large payloads live in blobs: what a page weighs is mostly theirs.
  uint64_t bytes = 0;
  const blob_reader read_blob = store_blobs(*impl_->db);
  const blob_reader counted = [&bytes, &read_blob](std::string_view key) {
    auto b = read_blob(key);
    if (b && *b) bytes += (*b)->size();
    return b;
  };
  for (auto& [seq, rec] : *recs) {
    if (page.events.size() == limit || (!page.events.empty() && bytes >= max_bytes)) {
      page.next = seq;
      break;
    }
    bytes += rec.payload.size();
    auto ev = event_from_record(
        rec, "ledger of " + std::string(name) + " seq " + std::to_string(seq), counted);
    if (!ev) return ev.error();
    ledger_entry e;
    e.seq = seq;
    e.type = agent::to_string(ev->type);
    e.time_ms = ev->time_ms;
    e.data = std::move(ev->data);
    if (auto link = ledger_link(rec, seq)) {
      e.prev = to_hex(link->prev);
      e.hash = to_hex(link->hash);
    }
    page.events.push_back(std::move(e));
  }
  return page;
}

ledger_ops& node::ledgers() {
  return *impl_->ledgers;
}

runtime* node::live_runtime() {
  return impl_->stopped ? nullptr : &impl_->rt;
}

result<agent_list> node::list(std::string_view prefix, std::string_view after, std::size_t limit,
                              const list_filter& filter) {
  if (impl_->stopped) return error(code::unavailable, "node is shutting down");
  return list_agents(impl_->rt, prefix, after, limit, filter);
}

uint64_t node::live_agents() const {
  return impl_->rt.metrics.live.load();
}

std::string node::metrics_text() {
  const bool up = !impl_->stopped;
  return render_metrics(impl_->rt, impl_->journal.get(), up ? impl_->db.get() : nullptr);
}

}  // namespace keel::actors
