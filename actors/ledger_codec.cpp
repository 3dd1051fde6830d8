#include "actors/ledger_codec.hpp"

#include "base/bytes.hpp"
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

// Snapshot payload: the fixed fields in binary, then the type's data as
// MessagePack (see docs/formats.md). Activation decodes one per wake-up, so
// it avoids building a JSON object for the whole state.
persistence::record snapshot_record(const agent::agent_state& s, int64_t time_ms) {
  std::string out;
  put_varint(out, s.last_seq);
  put_varint(out, s.last_arrival);
  put_varint(out, s.next_timer_id);
  put_varint(out, s.status.size());
  out.append(s.status);
  put_varint(out, s.type.size());
  out.append(s.type);
  put_varint(out, s.timers.size());
  for (const auto& [id, t] : s.timers) {
    put_varint(out, id);
    put_u64_be(out, static_cast<uint64_t>(t.due_ms));
    std::string p = persistence::to_msgpack(t.payload);
    put_varint(out, p.size());
    out.append(p);
  }
  out.append(persistence::to_msgpack(s.data));
  return {agent::snapshot_record_type, time_ms, std::move(out)};
}

result<agent::agent_state> snapshot_from_record(const persistence::record& r,
                                                std::string_view what) {
  auto corrupt = [&](const char* why) {
    return error(code::corruption, "corrupt record (" + std::string(what) + "): " + why);
  };
  if (r.type != agent::snapshot_record_type) return corrupt("not a snapshot");
  std::string_view in = r.payload;
  auto str = [&in](std::string& out) {
    auto n = get_varint(in);
    if (!n || *n > in.size()) return false;
    out.assign(in.data(), *n);
    in.remove_prefix(*n);
    return true;
  };
  agent::agent_state s;
  auto seq = get_varint(in), arrival = get_varint(in), next_timer = get_varint(in);
  if (!seq || !arrival || !next_timer) return corrupt("bad snapshot header");
  s.last_seq = *seq;
  s.last_arrival = *arrival;
  s.next_timer_id = *next_timer;
  if (!str(s.status) || !str(s.type)) return corrupt("bad snapshot header");
  auto timers = get_varint(in);
  if (!timers || *timers > in.size()) return corrupt("bad timer count");
  for (uint64_t i = 0; i < *timers; ++i) {
    auto id = get_varint(in);
    if (!id || in.size() < 8) return corrupt("bad timer");
    int64_t due = static_cast<int64_t>(get_u64_be(in.data()));
    in.remove_prefix(8);
    std::string p;
    if (!str(p)) return corrupt("bad timer payload");
    auto payload = persistence::from_msgpack(p, what);
    if (!payload) return payload.error();
    s.timers[*id] = {due, std::move(*payload)};
  }
  auto data = persistence::from_msgpack(in, what);
  if (!data) return data.error();
  s.data = std::move(*data);
  return s;
}

}  // namespace keel::actors
