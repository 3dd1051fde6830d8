// GET /v1/agents on one node: a page of its agents as their directory
// entries describe them (no agent is activated), with phase filters; and
// where one agent stands, as a wait that ran out reports it.

#include <algorithm>

#include "agent/core.hpp"
#include "base/names.hpp"
#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

// ?phase=P (repeatable, or a comma list), ?waiting=true (the phases that
// wait for a person), ?all=true (terminated agents too).
result<actors::list_filter> filter_of(const target& t) {
  actors::list_filter f;
  const auto& known = agent::known_phases();
  for (const auto& [k, v] : t.query) {
    if (k != "phase") continue;
    std::size_t at = 0;
    while (at <= v.size()) {
      std::size_t comma = std::min(v.find(',', at), v.size());
      std::string p = v.substr(at, comma - at);
      at = comma + 1;
      if (p.empty()) continue;
      if (std::find(known.begin(), known.end(), p) == known.end()) {
        std::string list;
        for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
        const std::string near = nearest_name(p, known);
        return error(code::invalid_argument,
                     "no phase '" + p + "'" +
                         (near.empty() ? "" : " (did you mean " + near + "?)") + "; phases are " +
                         list);
      }
      f.phases.push_back(std::move(p));
    }
  }
  auto waiting = bool_param(t, "waiting");
  if (!waiting) return waiting.error();
  if (*waiting)
    for (const auto& p : known)
      if (agent::waits_for_human(p) &&
          std::find(f.phases.begin(), f.phases.end(), p) == f.phases.end())
        f.phases.push_back(p);
  auto all = bool_param(t, "all");
  if (!all) return all.error();
  f.all = *all;
  return f;
}

}  // namespace

void list_agents(actors::node& node, const api_options& opts, const std::string& node_id,
                 const target& t, const respond_fn& respond) {
  auto limit = uint_param(t, "limit", opts.list_default_limit);
  if (!limit) return respond(error_response(limit.error()));
  std::size_t n = std::clamp<uint64_t>(*limit, 1, opts.list_max_limit);
  auto filter = filter_of(t);
  if (!filter) return respond(error_response(filter.error()));
  auto r = node.list(string_param(t, "prefix"), string_param(t, "after"), n, *filter);
  if (!r) return respond(error_response(r.error()));
  json agents = json::array();
  for (const auto& a : r->agents) {
    json j = {{"name", a.name},   {"type", a.type},  {"status", a.status},
              {"phase", a.phase}, {"node", node_id}, {"created_ms", a.created_ms},
              {"live", a.live}};
    if (a.paused) j["paused"] = true;
    agents.push_back(std::move(j));
  }
  json next = r->next_after.empty() ? json(nullptr) : json(r->next_after);
  respond(json_response(200, {{"agents", std::move(agents)}, {"next_after", std::move(next)}}));
}

json standing_of(const json& view) {
  json out = {{"phase", view.value("phase", "")}};
  if (view.value("paused", false)) out["paused"] = true;
  const json& st = view.value("state", json());
  if (st.is_object() && st.contains("turn") && st["turn"].is_object() &&
      st["turn"].contains("wait"))
    out["wait"] = st["turn"]["wait"];
  return out;
}

}  // namespace keel::net::api_detail
