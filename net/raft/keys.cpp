#include "net/raft/keys.hpp"

#include "base/bytes.hpp"

namespace keel::raft {

namespace {

std::string tagged(group_id g, char tag, std::string_view rest = {}) {
  std::string k;
  k.reserve(5 + rest.size());
  put_u32_be(k, g);
  k.push_back(tag);
  k.append(rest);
  return k;
}

}  // namespace

std::string group_begin(group_id g) {
  return tagged(g, '\0').substr(0, 4);
}

std::string group_end(group_id g) {
  // The meta group is the last possible group: its end is past every key
  // of 4 bytes 0xFF and a tag.
  if (g == meta_group) return std::string(6, '\xff');
  return group_begin(g + 1);
}

std::string entry_key(group_id g, uint64_t index) {
  std::string k = tagged(g, 'e');
  put_u64_be(k, index);
  return k;
}

std::string entry_end(group_id g) {
  return tagged(g, 'e' + 1);
}

std::optional<uint64_t> entry_index(group_id g, std::string_view key) {
  if (key.size() != 13 || get_u32_be(key.data()) != g || key[4] != 'e') return std::nullopt;
  return get_u64_be(key.data() + 5);
}

std::string term_key(group_id g) {
  return tagged(g, 'm', "term");
}
std::string vote_key(group_id g) {
  return tagged(g, 'm', "vote");
}
std::string snapshot_key(group_id g) {
  return tagged(g, 'm', "snap");
}
std::string fetching_key(group_id g) {
  return tagged(g, 'm', "fetch");
}
std::string fsm_begin(group_id g) {
  return tagged(g, 'f');
}
std::string fsm_end(group_id g) {
  return tagged(g, 'f' + 1);
}
std::string applied_key(group_id g) {
  return tagged(g, 'f', "applied");
}
std::string term_of_record_key(group_id g) {
  return tagged(g, 'f', "term");
}
std::string reserved_ids_key(group_id g) {
  return tagged(g, 'f', "ids");
}

}  // namespace keel::raft
