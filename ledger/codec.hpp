#pragma once
// How agent events and snapshots sit on disk: agent::event <-> record, and
// agent_state <-> snapshot record. Lives in the shell because it joins the
// agent core and persistence, which know nothing of each other.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/core.hpp"
#include "base/sha256.hpp"
#include "persistence/record.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

// Large payloads (model replies, tool results, the conversation in a
// snapshot) are stored once in the blobs family, keyed by the SHA-256 of
// their content: a string of at least blob_threshold bytes is replaced by a
// MessagePack bin holding its 32-byte hash. JSON from outside never holds
// binary values, so a bin is always such a reference. Records holding
// references carry blob_ref_flag in their type (events) or have the type
// snapshot_with_blobs_type (snapshots).
inline constexpr std::size_t blob_threshold = 1024;
inline constexpr uint16_t blob_ref_flag = 0x4000;
inline constexpr uint16_t snapshot_with_blobs_type = 0xE002;
// A snapshot whose state has operator fields (paused, forks) carries them
// as a MessagePack map before the data; this bit marks it.
inline constexpr uint16_t snapshot_extras_flag = 0x0010;
using blob_list = std::vector<std::pair<std::string, std::string>>;  // hash key, content
// Fetches a blob by key; nullopt when missing.
using blob_reader = std::function<result<std::optional<std::string>>(std::string_view key)>;

// Reads blobs from the node's store.
blob_reader store_blobs(persistence::store& db);
// Write ops for `blobs` (a blob written twice is the same key and value).
void blob_ops(const blob_list& blobs, persistence::write_set& ops);

// With `blobs`, large strings move there; without, everything stays inline.
persistence::record to_record(const agent::event& e, blob_list* blobs = nullptr);

// The hash chain (docs/formats.md). A chained ledger record has
// chain_flag in its type and the payload
//   prev (32 B) | hash (32 B) | MessagePack data
// where hash = SHA-256(prev | u64be seq | u16be type | i64be time | data)
// and prev is the hash of the record before it (zeros before seq 1). The
// hash covers blob references, which are content hashes themselves, so the
// chain covers every byte of the agent's history; it names no agent id,
// so records keep their hashes when they move to another node or a fork.
inline constexpr uint16_t chain_flag = 0x2000;
using chain_hash = sha256_digest;

// The record of `e` at `seq` after the record whose hash is `head`; sets
// `head` to the new record's hash.
persistence::record chained_record(const agent::event& e, uint64_t seq, chain_hash& head,
                                   blob_list* blobs = nullptr);

struct chain_link {
  chain_hash prev{};
  chain_hash hash{};     // as stored
  bool matches = false;  // the stored hash is the hash of the record's content
};
// The chain fields of a stored ledger record at `seq`; nullopt when the
// record carries none (no chain_flag, or too short to hold them).
std::optional<chain_link> ledger_link(const persistence::record& r, uint64_t seq);
// Reads plain and chained records alike. Unknown event codes and bad
// payloads are corruption errors naming `what`;
// so are references to missing blobs, or any reference when `blobs` is empty.
result<agent::event> event_from_record(const persistence::record& r, std::string_view what,
                                       const blob_reader& blobs = {});

persistence::record snapshot_record(const agent::agent_state& s, int64_t time_ms,
                                    blob_list* blobs = nullptr);
result<agent::agent_state> snapshot_from_record(const persistence::record& r, std::string_view what,
                                                const blob_reader& blobs = {});

}  // namespace keel::actors
