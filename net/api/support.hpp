#pragma once
// Internal to net/api/: request parsing and response helpers shared by the API
// route files (api.cpp: agents; tasks.cpp: worker tasks). Beast-free.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.hpp"
#include "http/url.hpp"
#include "net/api/api.hpp"

namespace keel::net::api_detail {

using json = nlohmann::json;
using net::parse_target;
using net::percent_decode;
using net::target;

// Renders `j`; invalid UTF-8 is replaced, never thrown on.
std::string dump(const json& j);
http_response json_response(unsigned status, const json& j);
http_response fail(unsigned status, std::string_view code, std::string_view message);
http_response bad_request(std::string message);
http_response method_not_allowed(std::string_view method, std::string_view allow);

// A missing or empty parameter gives `fallback`.
result<uint64_t> uint_param(const target& t, std::string_view name, uint64_t fallback);
std::string string_param(const target& t, std::string_view name);
// "true" or "1", "false" or "0"; missing or empty gives false. Errors:
// invalid_argument for anything else.
result<bool> bool_param(const target& t, std::string_view name);

// An empty body gives null; documents nested deeper than 100 levels are
// refused before they are built.
result<json> parse_body(std::string_view body);
// The body as an object with only the fields in `allowed`.
result<json> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed,
                          bool empty_ok);
// A string field; missing gives "" unless `required`.
result<std::string> string_field(const json& obj, const char* name, bool required);

// An agent as the API shows it.
json view_json(const actors::agent_view& v);
// A ledger event as the API shows it (and `keel ledger --json` exports it).
json ledger_entry_json(actors::ledger_entry e);

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

}  // namespace keel::net::api_detail

namespace keel::net::api_detail {

// /v1/agents/{name}/{pause | resume | resolve | retry}: the signals of the
// same name, with who sent them.
inline bool is_control_action(std::string_view a) {
  return a == "pause" || a == "resume" || a == "resolve" || a == "retry";
}

// GET /v1/agents on this node (listing.cpp): `node_id` names the node
// in each item.
void list_agents(actors::node& node, const api_options& opts, const std::string& node_id,
                 const target& t, const respond_fn& respond);
// Where an agent stands, from its view: {"phase", "paused"?, "wait"?},
// what a wait that ran out adds to an acknowledgement.
json standing_of(const json& view);

// /v1/agents/{name}/{audit | replay | fork | import | compact}
// (ledger.cpp).
bool is_ledger_action(std::string_view action);
// POST /v1/internal/forks/{name} from the parent's owner: creates the fork.
void create_fork(actors::node& node, const std::string& name, const http_request& req,
                 const respond_fn& respond);
void ledger_route(actors::node& node, api_cluster* cluster, const http_request& req,
                  const std::string& name, const std::string& action, const respond_fn& respond);

// Authorization (auth.cpp). The scope a request on one agent needs:
// read for GET, the ledger, query, audit and replay; send for messages and
// ordinary signals; approve for the approve, reject and answer signals;
// admin for
// DELETE and import (node-wide: types, cluster, tokens and secrets but
// for reading types and the cluster); operate for the rest (pause, resume, resolve, retry,
// cancel, fork, compact, upgrade, and those signals).
scope scope_for_agent_action(std::string_view method, std::string_view action,
                             std::string_view signal);
// 403 naming what the caller lacks, unless it may use `needed` on `agent`
// ("" for a node-wide route).
std::optional<http_response> refuse_unless(const http_request& req, scope needed,
                                           std::string_view agent);
// `payload` with "by" set to the caller's principal; a different "by" the
// client sent is kept as "note". Payloads other than objects (and null)
// are left as they are.
json stamp_by(json payload, const principal& who);
// GET /v1/whoami; /v1/tokens[/{id}] (admin).
void whoami(const http_request& req, const respond_fn& respond);
void token_route(token_store* tokens, const http_request& req,
                 const std::vector<std::string_view>& segments, const respond_fn& respond);

// GET /v1/agents/{name}/ledger/stream: new events as Server-Sent Events
// (stream.cpp).
void stream_ledger(actors::node& node, const std::shared_ptr<const defer_fn>& defer,
                   uint64_t max_page_bytes, const std::string& name, const target& t,
                   const respond_fn& respond);

// /v1/types[...]: agent types and their versions; POST
// /v1/agents/{name}/upgrade (types.cpp).
void types_route(actors::node& node, const http_request& req, const target& t,
                 const respond_fn& respond);
void upgrade(actors::node& node, std::string name, const http_request& req,
             const respond_fn& respond);

// /v1/secrets[/{name}]: the node's named secrets (secrets.cpp).
void secrets_route(actors::node& node, const http_request& req, const target& t,
                   const respond_fn& respond);

// /v1/tasks[...]: the worker queues (tasks.cpp).
void task_route(actors::node& node, const std::shared_ptr<const defer_fn>& defer,
                const http_request& req, const target& t, const respond_fn& respond);

}  // namespace keel::net::api_detail
