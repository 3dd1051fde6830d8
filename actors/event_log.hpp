#pragma once
// What the node logs of an agent's ledger (base/log.hpp): one record per
// event an operator follows, once the event is durable. At info: a turn
// started, completed or failed, a tool call started, completed, failed or in
// doubt, a compensation, an approval awaited, an agent failed; at debug
// also model calls. Each record names the agent, the seq, the event type
// and a short detail (tool, status, attempt, a reason cut to 200 bytes);
// never a message body, tool arguments or result, or a model's text.

#include <cstdint>
#include <functional>
#include <string>

#include "agent/event.hpp"

namespace keel::actors {

// The record `e` (at `seq` of `agent`) makes, to write once it is durable;
// empty when the event is not logged at the current level. Costs a switch
// and an atomic load for an event that is not logged (every counter event).
std::function<void()> event_log_record(const std::string& agent, uint64_t seq,
                                       const agent::event& e);

}  // namespace keel::actors
