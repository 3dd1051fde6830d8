#pragma once
// Binary encodings of what Keel's raft io sends and stores that libraft
// does not encode for us (docs/formats.md, "Replicated groups"):
//
// - raft messages (the six raft_message kinds), as the io sends them
//   between members: version byte 2, the kind, the sender's raft id, the
//   lease stamp (io.hpp, "Leader lease"), then the kind's fields, integers
//   big endian;
// - configurations, inside snapshot metadata and InstallSnapshot messages
//   (libraft 0.15 exports raft_configuration_encode but no decode; its own
//   encoding stays what RAFT_CHANGE log entries carry).
//
// Decoding is of bytes from another machine or the disk: anything short,
// long, of an unknown version or kind, or otherwise malformed is refused
// with code::corruption and leaves nothing allocated. What a decode hands
// out is in raft_malloc'd memory, owned as libraft expects from recv.
// Thread-safety: stateless functions, callable from any thread.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.hpp"
#include "net/raft/raft_c.hpp"

namespace keel::raft {

inline constexpr uint8_t message_format = 2;

// Appends `conf`: u32 n, then per server u64 id, u8 role, u32 length and
// the address bytes.
void encode_configuration(std::string& out, const raft_configuration& conf);
// Reads a configuration from the front of `in` and advances it. On success
// `*conf` holds raft_malloc'd servers (release with
// raft_configuration_close); on failure it is left empty.
status decode_configuration(std::string_view& in, raft_configuration* conf);

// `msg` as sent by the server `from`, with the io's lease `stamp` (0:
// none). The message is only read: its entries and snapshot data are
// copied into the result.
std::string encode_message(const raft_message& msg, raft_id from, uint64_t stamp = 0);

// A decoded message and the sender's id as the encoding names it. Fields
// hold raft_malloc'd memory: the entries array and one batch buffer for
// their data (every entry's `batch` points to it), the snapshot's servers
// and data. Ownership passes to whoever takes it (libraft's recv, or
// release_message). server_address is left null for the receiver to set.
struct decoded_message {
  raft_message msg{};
  raft_id from = 0;
  uint64_t stamp = 0;
};
result<decoded_message> decode_message(std::string_view bytes);

// Frees what decode_message allocated in `msg` (for a message that is not
// handed to libraft).
void release_message(raft_message& msg);

}  // namespace keel::raft
