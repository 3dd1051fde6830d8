#pragma once
// Key encodings of every column family (see docs/formats.md). Integers are
// big endian so bytewise order is numeric order.

#include <cstdint>
#include <string>
#include <string_view>

namespace keel::persistence {

// ledger / snapshots / inbox: agent id (8) + seq (8).
std::string agent_seq_key(uint64_t agent_id, uint64_t seq);
// The 8-byte prefix all of one agent's keys in a family share.
std::string agent_prefix(uint64_t agent_id);
// dedupe: agent id (8) + message id bytes.
std::string dedupe_key(uint64_t agent_id, std::string_view message_id);
// timers: due ms (8) + agent id (8) + timer id (8).
std::string timer_key(int64_t due_ms, uint64_t agent_id, uint64_t timer_id);

struct timer_key_parts {
  int64_t due_ms;
  uint64_t agent_id;
  uint64_t timer_id;
};
// REQUIRES: key.size() == 24.
timer_key_parts parse_timer_key(std::string_view key);
// REQUIRES: key.size() >= 16.
uint64_t key_agent_id(std::string_view key);
uint64_t key_seq(std::string_view key);

}  // namespace keel::persistence
