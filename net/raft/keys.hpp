#pragma once
// Keys of the raft column family (docs/formats.md, "Replicated groups").
// Every key starts with its group (4 bytes, big endian), then a tag byte:
//
//   g 'e' index(8 BE)   a log entry
//   g 'm' name          the raft I/O's own state: "term", "vote", "snap",
//                       "fetch" (a state fetch is under way)
//   g 'f' name          the group state machine's: "applied", "term", "ids"
//
// so one group's keys are one contiguous range, its log entries are in
// index order, and a range erase drops a log suffix or prefix.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel::raft {

using group_id = uint32_t;

// The cluster's metadata group (membership); data groups are 0..groups-1.
inline constexpr group_id meta_group = 0xFFFFFFFF;

// [group_begin(g), group_end(g)) holds every key of group g.
std::string group_begin(group_id g);
std::string group_end(group_id g);

// Log entries: [entry_key(g, i), entry_key(g, j)) are entries i..j-1;
// entry_end(g) bounds the group's last possible entry.
std::string entry_key(group_id g, uint64_t index);
std::string entry_end(group_id g);
// The index an entry key of group g names; nullopt for any other key.
std::optional<uint64_t> entry_index(group_id g, std::string_view key);

// The raft I/O's durable state.
std::string term_key(group_id g);
std::string vote_key(group_id g);
std::string snapshot_key(group_id g);
// Present while the group's data is being replaced by a state fetch
// (state_fetch.hpp): the data is then incomplete until the fetch ends.
std::string fetching_key(group_id g);

// The group state machine's: the last applied index (written in the same
// batch as the entry's writes), the term whose leader may write (set by a
// new leader's first entry), and the agent ids the group has reserved.
std::string applied_key(group_id g);
std::string term_of_record_key(group_id g);
std::string reserved_ids_key(group_id g);
// [fsm_begin(g), fsm_end(g)) holds the state machine's keys above.
std::string fsm_begin(group_id g);
std::string fsm_end(group_id g);

}  // namespace keel::raft
