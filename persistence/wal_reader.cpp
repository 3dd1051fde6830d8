#include "persistence/wal_reader.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "base/bytes.hpp"
#include "base/crc32c.hpp"

namespace keel::persistence {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t block_size = 32 * 1024;
constexpr std::size_t header_size = 7;              // crc (4) + length (2) + type (1)
constexpr std::size_t recyclable_header_size = 11;  // ... + log number (4)

enum record_type : uint8_t {
  zero_type = 0,  // preallocated, never written
  full = 1,
  first = 2,
  middle = 3,
  last = 4,
  // The same, in logs RocksDB recycles (they carry the log's number).
  recyclable_full = 5,
  recyclable_last = 8,
};

// RocksDB stores CRCs masked: a CRC of data that embeds CRCs is weak.
uint32_t unmask(uint32_t masked) {
  uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

uint32_t get_u32_le(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t get_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::optional<std::string_view> get_slice(std::string_view& in) {
  auto n = get_varint(in);
  if (!n || *n > in.size()) return std::nullopt;
  std::string_view s = in.substr(0, static_cast<std::size_t>(*n));
  in.remove_prefix(static_cast<std::size_t>(*n));
  return s;
}

// The log files in `dir`, oldest first (RocksDB replays them by number).
result<std::vector<fs::path>> list_logs(const std::string& dir) {
  std::vector<std::pair<uint64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= 4 || name.substr(name.size() - 4) != ".log") continue;
    const std::string digits = name.substr(0, name.size() - 4);
    if (digits.empty() ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    found.emplace_back(std::stoull(digits), entry.path());
  }
  if (ec) return error(code::io_error, "cannot list " + dir + ": " + ec.message());
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [n, p] : found) out.push_back(std::move(p));
  return out;
}

result<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return error(code::io_error, "cannot read " + p.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return error(code::io_error, "cannot read " + p.string());
  return bytes;
}

// Walks one log's physical records and assembles its logical ones.
class log_walker {
 public:
  log_walker(std::string file, std::string_view bytes, wal_scan& out)
      : file_(std::move(file)), bytes_(bytes), out_(out) {}

  void run() {
    std::size_t pos = 0;
    while (pos < bytes_.size()) {
      const std::size_t block_left = block_size - pos % block_size;
      if (block_left < header_size) {  // the block's zero trailer
        pos += block_left;
        continue;
      }
      if (bytes_.size() - pos < header_size) {
        tail(pos);
        return;
      }
      const char* h = bytes_.data() + pos;
      const uint32_t crc = get_u32_le(h);
      const std::size_t length = static_cast<uint8_t>(h[4]) | (static_cast<uint8_t>(h[5]) << 8);
      const uint8_t type = static_cast<uint8_t>(h[6]);
      if (type == zero_type && length == 0) {  // preallocated space
        pos += header_size;
        continue;
      }
      const bool recyclable = type >= recyclable_full && type <= recyclable_last;
      const std::size_t hsize = recyclable ? recyclable_header_size : header_size;
      if (pos + hsize + length > bytes_.size()) {
        // Cut short by the end of the file: a write the crash interrupted.
        tail(pos);
        return;
      }
      if (hsize + length > block_left) {
        damaged(pos, "bad record length");
        out_.unreadable_bytes += block_left;
        pos += block_left;
        continue;
      }
      std::string_view payload(h + hsize, length);
      const uint32_t actual = crc32c_extend(crc32c(std::string_view(h + 6, 1)),
                                            std::string_view(h + 7, hsize - 7 + length));
      if (unmask(crc) != actual) {
        damaged(pos, "checksum mismatch");
        const std::size_t block = pos / block_size;
        if (failed_block_ == block) {
          // A second failure in one block: the first one's length was
          // damaged too, and nothing more here can be found.
          out_.unreadable_bytes += block_left;
          pos += block_left;
          continue;
        }
        // RocksDB trusts nothing more in this block; for the report, what
        // follows is read on the damaged record's length, each record
        // still proven by its own checksum. The damaged record itself is
        // decoded as well as it can be, and marked so.
        failed_block_ = block;
        if (type == full || type == recyclable_full) logical(pos, payload, false);
        pos += hsize + length;
        continue;
      }
      piece(pos, recyclable ? static_cast<uint8_t>(type - 4) : type, payload);
      pos += hsize + length;
    }
    // The file ended inside a record split over blocks: a torn write too.
    if (in_fragment_) out_.torn_tail = true;
  }

 private:
  void tail(std::size_t pos) {
    // Zeros past the last record are preallocated space, not a torn write.
    if (bytes_.find_first_not_of('\0', pos) != std::string_view::npos) out_.torn_tail = true;
    if (in_fragment_) out_.torn_tail = true;
    in_fragment_ = false;
  }

  void damaged(std::size_t pos, std::string reason) {
    in_fragment_ = false;
    assembled_.clear();
    if (!out_.damage) out_.damage = wal_damage{file_, pos, std::move(reason)};
  }

  void piece(std::size_t pos, uint8_t type, std::string_view payload) {
    switch (type) {
      case full:
        if (in_fragment_) damaged(fragment_start_, "a fragmented record has no end");
        return logical(pos, payload);
      case first:
        if (in_fragment_) damaged(fragment_start_, "a fragmented record has no end");
        in_fragment_ = true;
        fragment_start_ = pos;
        assembled_.assign(payload);
        return;
      case middle:
      case last:
        if (!in_fragment_) {
          // After damage the rest of a record torn apart by it is expected.
          if (!out_.damage) damaged(pos, "a record piece has no start");
          return;
        }
        assembled_.append(payload);
        if (type == last) {
          in_fragment_ = false;
          std::string whole;
          whole.swap(assembled_);
          logical(fragment_start_, whole);
        }
        return;
      default:
        damaged(pos, "unknown record type " + std::to_string(type));
    }
  }

  void logical(std::size_t pos, std::string_view rep, bool intact = true) {
    auto b = decode_write_batch(rep);
    if (!b) {
      if (intact) damaged(pos, b.error().message());
      return;
    }
    if (intact) ++out_.batches;
    if (!out_.damage) return;
    b->file = file_;
    b->offset = pos;
    b->intact = intact;
    out_.after_damage.push_back(std::move(*b));
  }

  std::string file_;
  std::string_view bytes_;
  wal_scan& out_;
  bool in_fragment_ = false;
  std::size_t fragment_start_ = 0;
  std::size_t failed_block_ = SIZE_MAX;  // the block of the last checksum failure
  std::string assembled_;
};

}  // namespace

result<wal_batch> decode_write_batch(std::string_view rep) {
  auto bad = [](const std::string& why) {
    return error(code::corruption, "malformed write batch: " + why);
  };
  if (rep.size() < 12) return bad("shorter than its header");
  wal_batch b;
  b.sequence = get_u64_le(rep.data());
  const uint32_t count = get_u32_le(rep.data() + 8);
  rep.remove_prefix(12);
  uint32_t seen = 0;
  while (!rep.empty()) {
    const uint8_t tag = static_cast<uint8_t>(rep.front());
    rep.remove_prefix(1);
    wal_op op;
    bool has_family = false, has_value = false, has_end = false;
    switch (tag) {
      case 0x0:  // deletion
      case 0x7:  // single deletion
        op.erase = true;
        break;
      case 0x1:  // value
        has_value = true;
        break;
      case 0x4:  // column family deletion
      case 0x8:  // column family single deletion
        op.erase = true;
        has_family = true;
        break;
      case 0x5:  // column family value
        has_family = has_value = true;
        break;
      case 0xE:  // column family range deletion
        has_family = true;
        [[fallthrough]];
      case 0xF:  // range deletion
        op.erase = has_end = true;
        break;
      case 0x3: {  // log data: not a key change, not counted
        if (!get_slice(rep)) return bad("truncated log data");
        continue;
      }
      default:
        return bad("an operation of type " + std::to_string(tag) + " this store never writes");
    }
    if (has_family) {
      auto id = get_varint(rep);
      if (!id || *id > UINT32_MAX) return bad("bad column family id");
      op.family_id = static_cast<uint32_t>(*id);
    }
    auto key = get_slice(rep);
    if (!key) return bad("truncated key");
    op.key.assign(*key);
    if (has_value) {
      auto value = get_slice(rep);
      if (!value) return bad("truncated value");
      op.value.assign(*value);
    }
    if (has_end) {
      auto end = get_slice(rep);
      if (!end) return bad("truncated range end");
      op.range_end.assign(*end);
    }
    b.ops.push_back(std::move(op));
    ++seen;
  }
  if (seen != count)
    return bad("holds " + std::to_string(seen) + " operations, its header says " +
               std::to_string(count));
  return b;
}

result<wal_scan> scan_wal(const std::string& dir) {
  auto logs = list_logs(dir);
  if (!logs) return logs.error();
  wal_scan out;
  for (const auto& p : *logs) {
    auto bytes = read_file(p);
    if (!bytes) return bytes.error();
    out.files.push_back(p.string());
    log_walker(p.string(), *bytes, out).run();
  }
  return out;
}

}  // namespace keel::persistence
