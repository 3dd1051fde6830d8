// The write-ahead log reader against logs the store really wrote: copies of
// the live log files taken while the store is open (a clean close would
// flush them away), then damaged the ways disks and crashes damage them.

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/store.hpp"
#include "persistence/wal_reader.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
namespace p = keel::persistence;

namespace {

constexpr int batch_count = 1500;

// A store that wrote `batch_count` synced batches (one ledger record each,
// of about 100 bytes: several 32 KiB blocks), and a copy of its logs.
struct written_log {
  keel::test::temp_dir db_dir{"keel-wal-db"};
  keel::test::temp_dir copy_dir{"keel-wal-copy"};
  uint32_t ledger_family = 0;

  written_log() {
    auto db = p::store::open({db_dir.str(), 8 << 20, true});
    REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
    ledger_family = (*db)->family_id(p::family::ledger);
    for (int i = 1; i <= batch_count; ++i) {
      std::string value =
          p::encode_record({7, i, std::string(80, static_cast<char>('a' + i % 26))});
      auto s = (*db)->write({{p::family::ledger, false, p::agent_seq_key(1, i), value}}, true);
      REQUIRE_MESSAGE(s.is_ok(), s.to_string());
    }
    for (const auto& e : fs::directory_iterator(db_dir.path()))
      if (e.path().extension() == ".log")
        fs::copy_file(e.path(), copy_dir.path() / e.path().filename());
  }

  fs::path log() const {
    for (const auto& e : fs::directory_iterator(copy_dir.path()))
      if (e.path().extension() == ".log" && fs::file_size(e.path()) > 0) return e.path();
    FAIL("no log was copied");
    return {};
  }
};

std::string read_all(const fs::path& f) {
  std::ifstream in(f, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const fs::path& f, const std::string& bytes) {
  std::ofstream out(f, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The seqs of the ledger records in `batches` (agent 1's keys).
std::vector<uint64_t> ledger_seqs(const std::vector<p::wal_batch>& batches, uint32_t family) {
  std::vector<uint64_t> out;
  for (const auto& b : batches)
    for (const auto& op : b.ops)
      if (op.family_id == family && op.key.size() == 16) out.push_back(p::key_seq(op.key));
  return out;
}

}  // namespace

TEST_CASE("an intact log reads to its end with every batch and key") {
  written_log w;
  auto scan = p::scan_wal(w.copy_dir.str());
  REQUIRE_MESSAGE(scan.is_ok(), scan.error().to_string());
  CHECK_FALSE(scan->damage.has_value());
  CHECK_FALSE(scan->torn_tail);
  CHECK(scan->after_damage.empty());
  // The ledger batches, plus the store's own writes at open (schema, ids).
  CHECK(scan->batches >= batch_count);
  CHECK(scan->batches <= batch_count + 4);
}

TEST_CASE(
    "a flipped byte in the middle of a log is damage at that record, and what follows is listed") {
  written_log w;
  const fs::path log = w.log();
  std::string bytes = read_all(log);
  const std::size_t at = bytes.size() / 2;
  bytes[at] = static_cast<char>(bytes[at] ^ 0x40);
  write_all(log, bytes);

  auto scan = p::scan_wal(w.copy_dir.str());
  REQUIRE(scan.is_ok());
  REQUIRE(scan->damage.has_value());
  CHECK(scan->damage->file == log.string());
  CHECK(scan->damage->offset <= at);
  CHECK(at - scan->damage->offset < 200);  // the record holding the byte
  CHECK(scan->damage->reason.find("checksum") != std::string::npos);
  // The damaged record comes first, marked; every record after it reads,
  // each proven by its own checksum (the flipped byte left the length be).
  REQUIRE_FALSE(scan->after_damage.empty());
  CHECK(scan->after_damage.front().offset == scan->damage->offset);
  CHECK_FALSE(scan->after_damage.front().intact);
  std::vector<p::wal_batch> intact(scan->after_damage.begin() + 1, scan->after_damage.end());
  for (const auto& b : intact) CHECK(b.intact);
  auto after = ledger_seqs(intact, w.ledger_family);
  REQUIRE_FALSE(after.empty());
  CHECK(after.back() == batch_count);
  for (std::size_t i = 1; i < after.size(); ++i) CHECK(after[i] == after[i - 1] + 1);
  CHECK(scan->unreadable_bytes == 0);
}

TEST_CASE("a damaged length loses the rest of its block, and reading goes on after it") {
  written_log w;
  const fs::path log = w.log();
  std::string bytes = read_all(log);
  // The length field (bytes 4-5 of a header) of the first record in the
  // second block: its checksum fails, and what it points at is no record.
  std::size_t at = 32768;
  bytes[at + 5] = static_cast<char>(bytes[at + 5] ^ 0x01);
  write_all(log, bytes);
  auto scan = p::scan_wal(w.copy_dir.str());
  REQUIRE(scan.is_ok());
  REQUIRE(scan->damage.has_value());
  CHECK(scan->damage->offset >= 32768);
  CHECK(scan->damage->offset < 65536);
  CHECK(scan->unreadable_bytes > 0);
  auto after = ledger_seqs(scan->after_damage, w.ledger_family);
  REQUIRE_FALSE(after.empty());
  CHECK(after.back() == batch_count);
}

TEST_CASE("a log cut in the middle of its last record is a torn tail, not damage") {
  written_log w;
  const fs::path log = w.log();
  std::string bytes = read_all(log);
  // The last record ends where the non-zero bytes do (RocksDB preallocates).
  const std::size_t end = bytes.find_last_not_of('\0') + 1;
  bytes.resize(end - 20);
  write_all(log, bytes);

  auto scan = p::scan_wal(w.copy_dir.str());
  REQUIRE(scan.is_ok());
  CHECK_FALSE(scan->damage.has_value());
  CHECK(scan->torn_tail);
  CHECK(scan->batches >= batch_count - 1);
}

TEST_CASE("a flipped byte in the last complete record is damage too") {
  written_log w;
  const fs::path log = w.log();
  std::string bytes = read_all(log);
  const std::size_t end = bytes.find_last_not_of('\0') + 1;
  bytes[end - 10] = static_cast<char>(bytes[end - 10] ^ 0x01);
  write_all(log, bytes);

  auto scan = p::scan_wal(w.copy_dir.str());
  REQUIRE(scan.is_ok());
  REQUIRE(scan->damage.has_value());
  CHECK(scan->damage->offset > bytes.size() / 2);
  // Only the damaged record itself follows.
  REQUIRE(scan->after_damage.size() <= 1);
  for (const auto& b : scan->after_damage) CHECK_FALSE(b.intact);
}

TEST_CASE("a write batch decodes puts and erases with their column family") {
  std::string rep(8, '\0');
  rep[0] = 42;                                        // sequence 42
  rep.append(std::string("\x02\x00\x00\x00", 4));     // two operations
  rep.append(std::string("\x05\x03\x01k\x02vv", 7));  // put k=vv in family 3
  rep.append(std::string("\x04\x07\x02kk", 5));       // erase kk in family 7
  auto b = p::decode_write_batch(rep);
  REQUIRE_MESSAGE(b.is_ok(), b.error().to_string());
  CHECK(b->sequence == 42);
  REQUIRE(b->ops.size() == 2);
  CHECK(b->ops[0].family_id == 3);
  CHECK(b->ops[0].key == "k");
  CHECK(b->ops[0].value == "vv");
  CHECK_FALSE(b->ops[0].erase);
  CHECK(b->ops[1].family_id == 7);
  CHECK(b->ops[1].erase);
  CHECK(b->ops[1].key == "kk");

  std::string short_count = rep;
  short_count[8] = 3;
  CHECK(p::decode_write_batch(short_count).error().error_code() == keel::code::corruption);
  CHECK_FALSE(p::decode_write_batch(rep.substr(0, rep.size() - 1)).is_ok());
}

TEST_CASE("a range erase the store wrote reads back from its log with its family and end key") {
  keel::test::temp_dir db_dir{"keel-wal-db"};
  keel::test::temp_dir copy_dir{"keel-wal-copy"};
  uint32_t raft_family = 0;
  {
    auto db = p::store::open({db_dir.str(), 8 << 20, true});
    REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
    raft_family = (*db)->family_id(p::family::raft);
    // Records to damage, ahead of the range erase.
    for (int i = 1; i <= 50; ++i) {
      auto s = (*db)->write({{p::family::ledger, false, p::agent_seq_key(1, i),
                              p::encode_record({7, i, std::string(80, 'a')})}},
                            true);
      REQUIRE(s.is_ok());
    }
    p::write_set ops;
    for (char c = 'a'; c <= 'f'; ++c) ops.push_back({p::family::raft, false, {'e', c}, "x"});
    REQUIRE((*db)->write(ops, true).is_ok());
    p::write_op range{p::family::raft, true, "eb", {}, "ee"};
    REQUIRE((*db)->write({range, {p::family::raft, false, "ec", "y"}}, true).is_ok());
    for (const auto& e : fs::directory_iterator(db_dir.path()))
      if (e.path().extension() == ".log")
        fs::copy_file(e.path(), copy_dir.path() / e.path().filename());
  }
  // Every batch reads: a range erase is not taken for damage.
  auto scan = p::scan_wal(copy_dir.str());
  REQUIRE_MESSAGE(scan.is_ok(), scan.error().to_string());
  CHECK_MESSAGE(!scan->damage.has_value(), (scan->damage ? scan->damage->reason : ""));
  CHECK(scan->batches >= 52);

  // Damage the first ledger records: what follows is listed, decoded.
  fs::path log;
  for (const auto& e : fs::directory_iterator(copy_dir.path()))
    if (e.path().extension() == ".log" && fs::file_size(e.path()) > 0) log = e.path();
  REQUIRE_FALSE(log.empty());
  std::string bytes = read_all(log);
  REQUIRE(bytes.size() > 1000);
  bytes[1000] = static_cast<char>(bytes[1000] ^ 0x40);
  write_all(log, bytes);
  scan = p::scan_wal(copy_dir.str());
  REQUIRE(scan.is_ok());
  REQUIRE(scan->damage.has_value());
  REQUIRE_FALSE(scan->after_damage.empty());
  const p::wal_batch& last = scan->after_damage.back();
  CHECK(last.intact);
  REQUIRE(last.ops.size() == 2);
  CHECK(last.ops[0].family_id == raft_family);
  CHECK(last.ops[0].erase);
  CHECK(last.ops[0].key == "eb");
  CHECK(last.ops[0].range_end == "ee");
  CHECK(last.ops[1].family_id == raft_family);
  CHECK_FALSE(last.ops[1].erase);
  CHECK(last.ops[1].key == "ec");
  CHECK(last.ops[1].range_end.empty());
}

TEST_CASE("a write batch decodes range erases in the default family and in a named one") {
  std::string rep(8, '\0');
  rep.append(std::string("\x02\x00\x00\x00", 4));  // two operations
  rep.append(
      std::string("\x0F\x01"
                  "a\x01z",
                  5));  // erase [a, z) in the default family
  rep.append(
      std::string("\x0E\x09\x02"
                  "e1\x02"
                  "e9",
                  8));  // erase [e1, e9) in family 9
  auto b = p::decode_write_batch(rep);
  REQUIRE_MESSAGE(b.is_ok(), b.error().to_string());
  REQUIRE(b->ops.size() == 2);
  CHECK(b->ops[0].family_id == 0);
  CHECK(b->ops[0].erase);
  CHECK(b->ops[0].key == "a");
  CHECK(b->ops[0].range_end == "z");
  CHECK(b->ops[0].value.empty());
  CHECK(b->ops[1].family_id == 9);
  CHECK(b->ops[1].erase);
  CHECK(b->ops[1].key == "e1");
  CHECK(b->ops[1].range_end == "e9");
  // Cut inside the end key.
  auto cut = p::decode_write_batch(rep.substr(0, rep.size() - 1));
  REQUIRE_FALSE(cut.is_ok());
  CHECK(cut.error().message().find("range end") != std::string::npos);
}
