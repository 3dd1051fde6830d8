#include "persistence/keys.hpp"

#include <cassert>

#include "base/bytes.hpp"

namespace keel::persistence {

std::string agent_seq_key(uint64_t agent_id, uint64_t seq) {
  std::string k;
  k.reserve(16);
  put_u64_be(k, agent_id);
  put_u64_be(k, seq);
  return k;
}

std::string agent_prefix(uint64_t agent_id) {
  std::string k;
  put_u64_be(k, agent_id);
  return k;
}

std::string dedupe_key(uint64_t agent_id, std::string_view message_id) {
  std::string k;
  k.reserve(8 + message_id.size());
  put_u64_be(k, agent_id);
  k.append(message_id);
  return k;
}

std::string timer_key(int64_t due_ms, uint64_t agent_id, uint64_t timer_id) {
  std::string k;
  k.reserve(24);
  put_u64_be(k, static_cast<uint64_t>(due_ms < 0 ? 0 : due_ms));
  put_u64_be(k, agent_id);
  put_u64_be(k, timer_id);
  return k;
}

timer_key_parts parse_timer_key(std::string_view key) {
  assert(key.size() == 24);
  return {static_cast<int64_t>(get_u64_be(key.data())), get_u64_be(key.data() + 8),
          get_u64_be(key.data() + 16)};
}

uint64_t key_agent_id(std::string_view key) {
  assert(key.size() >= 8);
  return get_u64_be(key.data());
}

uint64_t key_seq(std::string_view key) {
  assert(key.size() >= 16);
  return get_u64_be(key.data() + 8);
}

}  // namespace keel::persistence
