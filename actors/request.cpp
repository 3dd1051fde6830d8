#include "actors/request.hpp"

namespace keel::actors {

void fail(request& r, const status& s) {
  std::visit([&s](auto& c) { c.fail(s); }, r.what);
}

request::~request() {
  fail(*this,
       error(code::unavailable, "request dropped: the agent stopped or the node is shutting down"));
}

inbound_calls* inbound_of(request& r) {
  return std::visit(overload{[](message_call& m) -> inbound_calls* { return &m; },
                             [](signal_call& s) -> inbound_calls* { return &s; },
                             [](auto&) -> inbound_calls* { return nullptr; }},
                    r.what);
}

agent_reply reply_of(agent::reply_effect r) {
  if (r.ok) return agent_reply{true, std::move(r.body), {}, {}};
  return agent_reply{false, nullptr, std::move(r.code), std::move(r.message)};
}

json reply_record(const agent_reply& r) {
  if (r.ok) return {{"ok", true}, {"body", r.body}};
  return {{"ok", false}, {"code", r.code}, {"message", r.message}};
}

agent_reply reply_from_record(json j) {
  agent_reply r;
  r.ok = j.value("ok", false);
  if (r.ok) {
    if (auto it = j.find("body"); it != j.end()) r.body = std::move(*it);
  } else {
    r.code = j.value("code", "");
    r.message = j.value("message", "");
  }
  return r;
}

}  // namespace keel::actors
