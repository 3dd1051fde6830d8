// /v1/agents/{name}/{audit | replay | fork | import | compact}: the routes
// that read an agent's ledger as a whole. They run on the calling thread
// (store reads and the pure replay code), never start an effect, and are
// answered by the agent's owner (api.cpp forwards them there first).

#include "actors/ledger_ops.hpp"
#include "base/names.hpp"
#include "http/client.hpp"
#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

using actors::agent_view;

json audit_json(const actors::audit_report& a) {
  const auto& c = a.chain;
  json j = {{"agent", a.agent},
            {"intact", a.intact()},
            {"first_seq", c.first_seq},
            {"last_seq", c.last_seq},
            {"events", c.events}};
  if (c.intact) j["head"] = c.head;
  if (c.legacy) j["unchained"] = c.legacy;
  if (!c.intact) {
    j["bad_seq"] = c.bad_seq;
    j["reason"] = c.reason;
  } else if (a.unverified) {
    j["unverified"] = true;
    j["reason"] =
        "imported without its hash chain (keel import --unverified): the chain was made at the "
        "import, so nothing ties these events to their source";
  }
  if (a.compacted_seq > 0) {
    j["compacted_seq"] = a.compacted_seq;
    j["anchor"] = a.anchor;
  }
  return j;
}

json event_json(const agent::recorded_event& e) {
  return {{"seq", e.seq},
          {"type", agent::to_string(e.ev.type)},
          {"time", e.ev.time_ms},
          {"data", e.ev.data}};
}

json steps_json(const std::vector<agent::trace_step>& steps) {
  json out = json::array();
  for (const auto& s : steps) out.push_back({{"seq", s.seq}, {"kind", s.kind}, {"text", s.text}});
  return out;
}

json strict_json(const agent::strict_result& r) {
  json j = {{"identical", r.identical}, {"events", r.events}, {"decisions", r.decisions}};
  if (r.diverged)
    j["divergence"] = {{"seq", r.diverged->seq},
                       {"reason", r.diverged->reason},
                       {"recorded", r.diverged->recorded},
                       {"replayed", r.diverged->replayed}};
  return j;
}

json replay_json(const actors::replay_report& r) {
  json j;
  if (r.strict) {
    j = strict_json(*r.strict);
    j["mode"] = "strict";
    j["agent"] = r.agent;
    j["from_seq"] = r.from_seq;
  } else {
    const auto& w = *r.what_if;
    json events = json::array();
    for (const auto& e : w.events) events.push_back(event_json(e));
    j = {{"mode", "what_if"},
         {"agent", r.agent},
         {"policy", agent::to_string(r.policy)},
         {"prefix", strict_json(w.prefix)},
         {"stopped", w.stopped},
         {"settled", w.stopped.empty()},
         {"answered_recorded", w.answered_recorded},
         {"answered_scripted", w.answered_scripted},
         {"original", steps_json(w.original)},
         {"replayed", steps_json(w.replayed)},
         {"events", std::move(events)}};
  }
  if (!r.spec.empty()) j["spec"] = r.spec;
  return j;
}

json compaction_json(const actors::compaction_report& c) {
  return {{"agent", c.agent},
          {"archive", c.archive},
          {"archived", c.archived},
          {"compacted_seq", c.compacted_seq},
          {"head", c.head}};
}

void audit(actors::node& node, const std::string& name, const respond_fn& respond) {
  auto r = node.ledgers().audit(name);
  respond(r ? json_response(200, audit_json(*r)) : error_response(r.error()));
}

void replay(actors::node& node, const std::string& name, const http_request& req,
            const respond_fn& respond) {
  auto body = parse_object(req.body, {"overrides", "policy", "script", "spec"}, true);
  if (!body) return respond(error_response(body.error()));
  auto r = node.ledgers().replay(name, *body);
  respond(r ? json_response(200, replay_json(*r)) : error_response(r.error()));
}

void answer_created(const respond_fn& respond, result<agent_view> r) {
  guarded(respond,
          [&] { respond(r ? json_response(201, view_json(*r)) : error_response(r.error())); });
}

// An exported ledger, loaded read-only for analysis.
void import(actors::node& node, const std::string& name, const http_request& req,
            const respond_fn& respond) {
  auto body = parse_object(req.body, {"events", "unverified"}, false);
  if (!body) return respond(error_response(body.error()));
  if (body->contains("unverified") && !(*body)["unverified"].is_boolean())
    return respond(bad_request("\"unverified\" must be true or false"));
  (*body)["origin"] = "import";
  node.ledgers().import(name, *body,
                        [respond](result<agent_view> r) { answer_created(respond, std::move(r)); });
}

void compact(actors::node& node, const std::string& name, const http_request& req,
             const respond_fn& respond) {
  auto body = parse_object(req.body, {"before"}, false);
  if (!body) return respond(error_response(body.error()));
  if (!body->contains("before") || !(*body)["before"].is_number_unsigned())
    return respond(bad_request("compact needs {\"before\": SEQ}"));
  auto r = node.ledgers().compact(name, (*body)["before"].get<uint64_t>());
  respond(r ? json_response(200, compaction_json(*r)) : error_response(r.error()));
}

// Fork: copy the parent's prefix (here, at the parent's owner), create the
// fork where its own name places it, then record the fork on the parent.
void fork(actors::node& node, api_cluster* cluster, const std::string& parent,
          const http_request& req, const respond_fn& respond) {
  auto body = parse_object(req.body, {"at", "as", "override", "by"}, false);
  if (!body) return respond(error_response(body.error()));
  if (!body->contains("at") || !(*body)["at"].is_number_unsigned())
    return respond(bad_request("fork needs {\"at\": SEQ, \"as\": NAME}"));
  auto as = string_field(*body, "as", true);
  if (!as) return respond(error_response(as.error()));
  if (auto s = validate_agent_name(*as); !s) return respond(error_response(s));
  if (*as == parent) return respond(bad_request("a fork needs a name of its own"));
  // A principal limited to some agents may not make one outside them.
  if (auto refused = refuse_unless(req, scope::operate, *as)) return respond(std::move(*refused));
  const uint64_t at = (*body)["at"].get<uint64_t>();
  const bool with_override = body->contains("override") && !(*body)["override"].is_null();
  auto src = node.ledgers().fork_source_of(parent, at, with_override);
  if (!src) return respond(error_response(src.error()));
  // Recorded as the authenticated principal, whatever the body says.
  const std::string by = req.who.name;
  json import_body = {
      {"events", std::move(src->events)}, {"parent", parent}, {"at", at}, {"by", by}};
  if (with_override) {
    import_body["replacement"] = (*body)["override"];
    import_body["replaced"] = src->replaced;
  }
  const uint64_t copied = import_body["events"].size();
  const uint64_t bytes = src->bytes;
  // Once the fork exists, the parent's ledger says so (who, where, when).
  auto created = [&node, respond, parent, at, by, copied, bytes, child = *as](unsigned status,
                                                                              json view) {
    if (status != 201) return respond(json_response(status, view));
    node.signal(
        parent, "forked", json{{"as", child}, {"at", at}, {"by", by}},
        [](result<actors::send_ack>) {},
        [respond, view, at, copied, bytes, parent](result<actors::agent_reply>) mutable {
          guarded(respond, [&] {
            view["fork"] = {
                {"parent", parent}, {"at", at}, {"copied_events", copied}, {"copied_bytes", bytes}};
            respond(json_response(201, view));
          });
        });
  };
  std::string owner = cluster ? cluster->owner_elsewhere(*as) : std::string();
  if (owner.empty()) {
    import_body["origin"] = "fork";
    node.ledgers().import(*as, import_body, [created](result<agent_view> r) {
      if (!r) {
        auto e = error_response(r.error());
        return created(e.status, json::parse(e.body, nullptr, false));
      }
      created(201, view_json(*r));
    });
    return;
  }
  http_request sub;
  sub.method = "POST";
  sub.target = "/v1/internal/forks/" + percent_encode(*as);
  sub.body = dump(import_body);
  cluster->forward(owner, std::move(sub), [created](http_response r) {
    created(r.status, json::parse(r.body, nullptr, false));
  });
}

}  // namespace

void create_fork(actors::node& node, const std::string& name, const http_request& req,
                 const respond_fn& respond) {
  auto body =
      parse_object(req.body, {"events", "parent", "at", "by", "replacement", "replaced"}, false);
  if (!body) return respond(error_response(body.error()));
  (*body)["origin"] = "fork";
  node.ledgers().import(name, *body,
                        [respond](result<agent_view> r) { answer_created(respond, std::move(r)); });
}

bool is_ledger_action(std::string_view action) {
  return action == "audit" || action == "replay" || action == "fork" || action == "import" ||
         action == "compact";
}

void ledger_route(actors::node& node, api_cluster* cluster, const http_request& req,
                  const std::string& name, const std::string& action, const respond_fn& respond) {
  const std::string& m = req.method;
  if (action == "audit") {
    if (m != "GET") return respond(method_not_allowed(m, "GET"));
    return audit(node, name, respond);
  }
  if (m != "POST") return respond(method_not_allowed(m, "POST"));
  if (action == "replay") return replay(node, name, req, respond);
  if (action == "import") return import(node, name, req, respond);
  if (action == "compact") return compact(node, name, req, respond);
  return fork(node, cluster, name, req, respond);
}

}  // namespace keel::net::api_detail
