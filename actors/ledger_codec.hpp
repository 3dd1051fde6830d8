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
using blob_list = std::vector<std::pair<std::string, std::string>>;  // hash key, content
// Fetches a blob by key; nullopt when missing.
using blob_reader = std::function<result<std::optional<std::string>>(std::string_view key)>;

// Reads blobs from the node's store.
blob_reader store_blobs(persistence::store& db);
// Write ops for `blobs` (a blob written twice is the same key and value).
void blob_ops(const blob_list& blobs, persistence::write_set& ops);

// With `blobs`, large strings move there; without, everything stays inline.
persistence::record to_record(const agent::event& e, blob_list* blobs = nullptr);
// Unknown event codes and bad payloads are corruption errors naming `what`;
// so are references to missing blobs, or any reference when `blobs` is empty.
result<agent::event> event_from_record(const persistence::record& r, std::string_view what,
                                       const blob_reader& blobs = {});

persistence::record snapshot_record(const agent::agent_state& s, int64_t time_ms,
                                    blob_list* blobs = nullptr);
result<agent::agent_state> snapshot_from_record(const persistence::record& r, std::string_view what,
                                                const blob_reader& blobs = {});

}  // namespace keel::actors
