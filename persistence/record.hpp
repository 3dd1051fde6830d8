#pragma once
// The framed, checksummed record every value on disk is stored as.
//
//   u8   schema version (record_schema_version)
//   u16  type (big endian; meaning owned by the writer's layer)
//   u64  time, ms since the Unix epoch (big endian, two's complement)
//   var  payload length (LEB128)
//   ...  payload (MessagePack for structured values)
//   u32  CRC-32C of all preceding bytes (big endian)
//
// decode_record never trusts its input: a short, oversized, mis-versioned
// or mis-checksummed record is a corruption error, never a crash.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.hpp"

namespace keel::persistence {

inline constexpr uint8_t record_schema_version = 1;

struct record {
  uint16_t type = 0;
  int64_t time_ms = 0;
  std::string payload;

  friend bool operator==(const record&, const record&) = default;
};

std::string encode_record(const record& r);
void encode_record(const record& r, std::string& out);

// `what` names the record in the error ("ledger of acct/alice seq 7").
result<record> decode_record(std::string_view bytes, std::string_view what);

}  // namespace keel::persistence
