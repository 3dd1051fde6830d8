#include "actors/ledger_codec.hpp"

#include "persistence/values.hpp"

namespace keel::actors {

persistence::record to_record(const agent::event& e) {
  return {static_cast<uint16_t>(e.type), e.time_ms, persistence::to_msgpack(e.data)};
}

result<agent::event> event_from_record(const persistence::record& r, std::string_view what) {
  auto t = agent::event_type_from_code(r.type);
  if (!t)
    return error(code::corruption, "corrupt record (" + std::string(what) +
                                       "): unknown event type " + std::to_string(r.type));
  auto data = persistence::from_msgpack(r.payload, what);
  if (!data) return data.error();
  return agent::event{*t, r.time_ms, std::move(*data)};
}

persistence::record snapshot_record(const agent::agent_state& s, int64_t time_ms) {
  return {agent::snapshot_record_type, time_ms, persistence::to_msgpack(agent::state_to_json(s))};
}

result<agent::agent_state> snapshot_from_record(const persistence::record& r,
                                                std::string_view what) {
  if (r.type != agent::snapshot_record_type)
    return error(code::corruption, "corrupt record (" + std::string(what) + "): not a snapshot");
  auto j = persistence::from_msgpack(r.payload, what);
  if (!j) return j.error();
  return agent::state_from_json(*j, what);
}

}  // namespace keel::actors
