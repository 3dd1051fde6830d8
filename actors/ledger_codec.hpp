#pragma once
// How agent events and snapshots sit on disk: agent::event <-> record, and
// agent_state <-> snapshot record. Lives in the shell because it joins the
// agent core and persistence, which know nothing of each other.

#include <string_view>

#include "agent/core.hpp"
#include "persistence/record.hpp"

namespace keel::actors {

persistence::record to_record(const agent::event& e);
// Unknown event codes and bad payloads are corruption errors naming `what`.
result<agent::event> event_from_record(const persistence::record& r, std::string_view what);

persistence::record snapshot_record(const agent::agent_state& s, int64_t time_ms);
result<agent::agent_state> snapshot_from_record(const persistence::record& r,
                                                std::string_view what);

}  // namespace keel::actors
