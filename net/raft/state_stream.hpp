#pragma once
// What a follower copies from another replica to catch up with a group it
// can no longer follow from the log (docs/replication.md, "Snapshots and
// catch-up"): the group's part of the store, in pages, and the wire
// encoding of the requests and pages (docs/formats.md, "Group state
// pages").
//
// A group's state, as parts walked in order:
//   0-4  ledger, snapshots, inbox, dedupe, effects: the keys of the group's
//        agent ids, [be64((g+1) << 48), be64((g+2) << 48));
//   5    timers whose agent id (bytes 8..16 of the key) is the group's;
//   6    agents whose name group_of() puts in the group;
//   7    every blob: blobs are shared by content, so copying another
//        group's is harmless (and never erased), while finding the ones a
//        group refers to would mean decoding every record;
//   8    outbox entries keyed by the group's ids (its agents' messages to
//        agents elsewhere), the same range in the outbox family;
//   9    the group state machine's keys (applied index, term of record,
//        reserved ids) in the raft family.
// Not copied: the group's raft log and I/O state (libraft installs the
// snapshot's meta itself), meta records and the node's own outbox
// entries (keys below be64(1 << 48)).
//
// Thread-safety: stateless functions; any thread.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"
#include "net/raft/keys.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

using group_of_fn = std::function<group_id(std::string_view agent_name)>;

// Where a walk of a group's state resumes: after key `after` of part `part`
// (empty: at the part's start).
struct state_cursor {
  uint8_t part = 0;
  std::string after;
  bool operator==(const state_cursor&) const = default;
};

// A follower's request for the next page. `session` 0 opens a session (a
// consistent view at the server); later requests name the one the first
// page returned.
struct fetch_request {
  group_id group = 0;
  uint64_t marker_index = 0;  // the state must be applied at least this far
  uint64_t session = 0;
  state_cursor cursor;
  bool operator==(const fetch_request&) const = default;
};

struct state_entry {
  persistence::family cf = persistence::family::ledger;
  std::string key, value;
  bool operator==(const state_entry&) const = default;
};

struct state_page {
  uint64_t session = 0;
  uint64_t applied = 0;  // the group's applied index in the served view
  std::vector<state_entry> entries;
  bool done = false;  // the last page; otherwise `next` resumes
  state_cursor next;
  bool operator==(const state_page&) const = default;
};

std::string encode_request(const fetch_request& r);
std::string encode_page(const state_page& p);
// Errors: corruption for bytes that are not one (short, long, unknown
// version, a family or part out of range).
result<fetch_request> decode_request(std::string_view bytes);
result<state_page> decode_page(std::string_view bytes);

// How many parts a group's state has.
inline constexpr uint8_t state_parts = 10;

// Reads from `view` the next entries of group g's state from `from`, until
// about `max_bytes` of keys and values: entries, done and next of the page
// (session and applied are the caller's). Errors: as read_view::scan;
// invalid_argument for a cursor past the parts.
result<state_page> read_state_page(const persistence::read_view& view, group_id g,
                                   const group_of_fn& group_of, const state_cursor& from,
                                   std::size_t max_bytes);

// Erases group g's state from `db` (what read_state_page would return from
// it), marking the group's data incomplete (fetching_key) in the first
// batch: range erases in one batch, then the timers and agents of the group
// in batches as they are found. Unsynced. Errors: as store::write and scan.
status begin_state_replace(persistence::store& db, group_id g, const group_of_fn& group_of);

}  // namespace keel::raft
