#pragma once
// The command of one replicated log entry (docs/formats.md, "Replicated
// group entries"): what a group's leader proposes with raft_apply and what
// every replica's state machine (group_fsm.hpp) applies, byte for byte.
//
//   u8 format (1), u8 kind, u64 term (big endian), then by kind:
//   writes        u32 proposals; each: u64 id, u32 ops; each op: u8 family,
//                 u8 flags (bit 0 erase, bit 1 range erase), varint key
//                 length + key, varint value length + value (a range
//                 erase's value is its range_end; a plain erase has none)
//   leader_begin  nothing more: `term` is the new leader's term
//   reserve_ids   u64 limit
//
// The ops are the write sets ledger::batch_builder produced: followers write
// the leader's bytes and decide nothing, so replicas stay byte-identical.
// No entry writes the raft family (the log and the state machine's own
// bookkeeping live there).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"
#include "net/raft/raft_c.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

inline constexpr uint8_t entry_format = 1;

enum class entry_kind : uint8_t { writes = 1, leader_begin = 2, reserve_ids = 3 };

// One shell's write set, named by an id its proposer chose so the outcome
// can be handed back to it.
struct proposal {
  uint64_t id = 0;
  persistence::write_set ops;
};

struct entry {
  entry_kind kind = entry_kind::writes;
  // writes: the term the proposing shells were activated in (the state
  // machine fences other terms); leader_begin: the new leader's term.
  uint64_t term = 0;
  std::vector<proposal> proposals;  // writes only
  uint64_t limit = 0;               // reserve_ids only
};

// REQUIRES for every encode: no op writes family::raft, and only an erase
// has a range_end.
std::size_t encoded_size(const entry& e);
std::string encode(const entry& e);
// The same bytes in one raft_malloc'd buffer, for raft_apply: it owns the
// memory once it returns 0; otherwise the caller must raft_free(base).
// Errors: unavailable when raft_malloc fails.
result<raft_buffer> encode_for_raft(const entry& e);

// Every malformed input is refused with code::corruption naming what is
// wrong: truncation, an unknown format, kind, family or flag bit, trailing
// bytes, a count larger than the bytes left could hold, an op on the raft
// family, an erase with a value.
result<entry> decode(std::string_view bytes);

}  // namespace keel::raft
