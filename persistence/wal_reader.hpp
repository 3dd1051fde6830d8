#pragma once
// Reads the store's write-ahead logs (RocksDB's `NNNNNN.log` files) on our
// own, from their documented format, to say exactly where one is damaged
// and what a recovery that stops there would drop. RocksDB itself only says
// "checksum mismatch" and, recovering to the point of the damage, deletes
// what came after it.
//
// The format (RocksDB's log format, docs/formats.md "Write-ahead log"):
// 32 KiB blocks of physical records, each a 7-byte header (masked CRC-32C
// of type and payload, u16 little-endian length, u8 type) and its payload;
// a logical record is one FULL record or FIRST, MIDDLE..., LAST pieces;
// fewer than 7 bytes left in a block are zero padding. A logical record is
// a WriteBatch: u64 sequence, u32 count (both little endian), then per op a
// tag byte, a varint32 column family id (the tags with a family), a
// varint32-length key and, for puts, a varint32-length value; a range
// erase (tags 0xE with a family, 0xF without) has a varint32-length end key
// where a put has its value.
//
// Thread-safety: pure functions over files; no shared state.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.hpp"

namespace keel::persistence {

// One key change of a write batch.
struct wal_op {
  uint32_t family_id = 0;  // RocksDB's column family id (0: default)
  bool erase = false;
  std::string key;
  std::string value;  // empty for an erase
  // With erase: every key in [key, range_end) is erased (a range erase,
  // persistence::write_op's range_end). Empty: only key.
  std::string range_end;
};

// One logical record: a whole write batch.
struct wal_batch {
  std::string file;
  uint64_t offset = 0;    // of its first physical record in the file
  uint64_t sequence = 0;  // RocksDB sequence number of its first op
  std::vector<wal_op> ops;
  // False for the damaged record itself, decoded as well as it could be:
  // its keys and values may be garbled.
  bool intact = true;
};

// Where a log stops being readable.
struct wal_damage {
  std::string file;
  uint64_t offset = 0;  // of the physical record that fails
  std::string reason;   // "checksum mismatch", "bad record length", ...
};

struct wal_scan {
  // The logs read, in the order RocksDB replays them (by number).
  std::vector<std::string> files;
  uint64_t batches = 0;  // readable logical records, before and after the damage
  // The first complete record that fails its checksum or is malformed;
  // nullopt when every record reads (a torn last record, the trace of a
  // crash in the middle of a write that was never acknowledged, is not
  // damage).
  std::optional<wal_damage> damage;
  // The logs ended in a torn record (see above).
  bool torn_tail = false;
  // Bytes skipped because they could not be trusted: the rest of each
  // 32 KiB block from a damaged record on. Writes in them are lost unseen.
  uint64_t unreadable_bytes = 0;
  // The batches from the damage on that still read (the damaged record
  // itself when it decodes, marked not intact; the records after it, each
  // proven by its own checksum; every later log): what a recovery to the
  // point of the damage drops. Empty without damage.
  std::vector<wal_batch> after_damage;
};

// Reads every `*.log` file in `dir` (RocksDB's WAL directory, the data
// directory by default). Errors: io_error when a file cannot be read.
result<wal_scan> scan_wal(const std::string& dir);

// Decodes one logical record. Errors: corruption (malformed batch).
result<wal_batch> decode_write_batch(std::string_view rep);

}  // namespace keel::persistence
