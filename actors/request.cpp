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

}  // namespace keel::actors
