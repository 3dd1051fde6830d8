// A full disk (a small tmpfs the test fills): writes are refused with 507
// while reads go on, the node never aborts, health says why, and writes
// resume by themselves once there is room. Nothing acknowledged is lost.

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <random>

#include "faults/fault_support.hpp"

using namespace keel::test;

namespace {

constexpr uint64_t mib = 1ull << 20;

// A body big enough to fill a disk quickly, different every time (equal
// payloads would be stored once).

// A keeld whose data directory is on a tmpfs of `bytes` of its own, with
// `cfg` as its config file. ok() is false (and the test skips) where no
// such disk can be had.
struct node_on_small_disk {
  temp_dir dir{"keel-full"};
  tmpfs_disk disk;
  fault_node n;
  node_on_small_disk(uint64_t bytes, const json& cfg)
      : disk(dir.path() / "disk", bytes),
        n(disk.dir() / "data", {"--config", (dir.path() / "keeld.json").string()}) {
    write_config(dir.path() / "keeld.json", cfg);
  }
  bool ok() {
    if (!disk.ok()) MESSAGE("skipped: cannot make a small disk here (" << disk.why() << ")");
    return disk.ok();
  }
};

// Sends until the node takes a message again (space came back).
bool resumes(fault_node& n, ack_book& book, const std::string& agent, const std::string& id) {
  return eventually([&] { return book.send(n, agent, id, 1).status == 202; }, fault_deadline);
}

// Whether the store's newest options file (RocksDB writes one at each
// writable open) lists a column family named `name`.
bool options_list_family(const fs::path& data, const std::string& name) {
  fs::path newest;
  for (const auto& e : fs::directory_iterator(data)) {
    const std::string f = e.path().filename().string();
    if (f.starts_with("OPTIONS-") && f.size() > 8 &&
        std::isdigit(static_cast<unsigned char>(f[8])) &&
        (newest.empty() ||
         std::stoull(f.substr(8)) > std::stoull(newest.filename().string().substr(8))))
      newest = e.path();
  }
  REQUIRE_MESSAGE(!newest.empty(), "no options file in " << data.string());
  std::ifstream in(newest);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.find("[CFOptions \"" + name + "\"]") != std::string::npos;
}

}  // namespace

TEST_CASE(
    "below the free-space reserve writes get 507 while reads go on, and resume by themselves") {
  node_on_small_disk s(256 * mib, json::object());  // the default reserve: 64 MiB
  if (!s.ok()) return;
  auto& disk = s.disk;
  auto& n = s.n;
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  for (int i = 0; i < 4; ++i) REQUIRE(n.spawn("full/a" + std::to_string(i)).status == 201);
  for (int m = 0; m < 40; ++m)
    REQUIRE(book.send(n, "full/a" + std::to_string(m % 4), "m-" + std::to_string(m), 2).status ==
            202);

  disk.fill(40 * mib);
  reply refused;
  int sent = 0;
  REQUIRE(eventually(
      [&] {
        refused = book.send(n, "full/a0", "low-" + std::to_string(sent++), 1);
        return refused.status == 507;
      },
      fault_deadline));
  CHECK(refused.error_code() == "no_space");
  CHECK_MESSAGE(refused.raw.find("reserve") != std::string::npos, refused.raw);
  // Reads go on.
  CHECK(n.total("full/a1").has_value());
  CHECK(n.call("GET", fault_node::path("full/a2") + "/ledger").status == 200);
  auto h = n.health();
  CHECK(h["status"] == "degraded");
  CHECK(h["store"]["writable"] == false);
  CHECK(h["store"]["problem"] == "no_space");
  CHECK(n.metric("keel_store_writable") == 0);

  disk.free_all();
  CHECK(resumes(n, book, "full/a3", "after"));
  CHECK(eventually([&] { return n.health()["status"] == "ok"; }, fault_deadline));
  for (int i = 0; i < 4; ++i) book.check(n, "full/a" + std::to_string(i));
}

TEST_CASE(
    "a disk that fills up completely never takes the node down, and writes resume with room") {
  // No reserve: RocksDB itself runs into the full disk.
  node_on_small_disk s(192 * mib, {{"reserved_disk_bytes", 0}});
  if (!s.ok()) return;
  auto& disk = s.disk;
  auto& n = s.n;
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  for (int i = 0; i < 4; ++i) REQUIRE(n.spawn("fill/a" + std::to_string(i)).status == 201);
  disk.fill(24 * mib);

  std::mt19937_64 rng(42);
  int refusals = 0, m = 0;
  // Bounded: at ~100 KB a message, 24 MiB fill up well before the end.
  for (; m < 3000 && refusals < 20; ++m) {
    auto r = book.send(n, "fill/a" + std::to_string(m % 4), "f-" + std::to_string(m), 1,
                       random_padding(rng, 100'000));
    if (r.status == 507 || r.status == 503) ++refusals;
    REQUIRE_MESSAGE(r.status != 0, "the node stopped answering: " << n.process().output());
  }
  CHECK(refusals >= 20);
  CHECK(n.process().alive());
  MESSAGE(book.count() << " messages acknowledged before and while the disk was full");
  auto h = n.health();
  CHECK_MESSAGE(h["store"]["write_errors"].get<uint64_t>() > 0, h.dump());

  disk.free_all();
  CHECK(resumes(n, book, "fill/a0", "after"));
  CHECK(n.process().alive());
  for (int i = 0; i < 4; ++i) book.check(n, "fill/a" + std::to_string(i));
  // And after a crash, all of it is still there.
  n.process().kill9();
  REQUIRE_MESSAGE(n.start(), n.process().output());
  for (int i = 0; i < 4; ++i) book.check(n, "fill/a" + std::to_string(i));
}

TEST_CASE(
    "a node started on a full disk serves reads, refuses writes, and writes once there is room") {
  node_on_small_disk s(160 * mib, {{"reserved_disk_bytes", 0}});
  if (!s.ok()) return;
  auto& disk = s.disk;
  auto& n = s.n;
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  REQUIRE(n.spawn("ro/a").status == 201);
  for (int m = 0; m < 30; ++m)
    REQUIRE(book.send(n, "ro/a", "m-" + std::to_string(m), 3).status == 202);
  n.process().kill9();  // what it wrote is in its log, to be replayed at the start
  disk.fill(0);

  REQUIRE_MESSAGE(n.start(), n.process().output());
  CHECK(n.total("ro/a") == 90);
  auto refused = book.send(n, "ro/a", "while-full", 1);
  CHECK(refused.status == 507);
  auto h = n.health();
  CHECK(h["status"] == "degraded");
  CHECK(h["store"]["read_only"] == true);

  disk.free_all();
  CHECK(resumes(n, book, "ro/a", "after"));
  CHECK(n.health()["store"]["read_only"] == false);
  book.check(n, "ro/a");
}

TEST_CASE(
    "a data directory from before the raft family, started on a full disk, serves reads and "
    "gains the family once there is room") {
  node_on_small_disk s(160 * mib, {{"reserved_disk_bytes", 0}});
  if (!s.ok()) return;
  auto& disk = s.disk;
  auto& n = s.n;
  // agents/, scripts/ and data/ of a release before schema 3
  // (tests/fixtures/make_house_fixture.sh): no raft family on disk.
  const fs::path archive = fs::path(KEEL_FIXTURES_DIR) / "before-house.tar.gz";
  REQUIRE_MESSAGE(fs::exists(archive), archive.string());
  const std::string cmd = "tar -xzf '" + archive.string() + "' -C '" + disk.dir().string() + "'";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  REQUIRE(fs::exists(n.data() / "CURRENT"));
  REQUIRE_FALSE(options_list_family(n.data(), "raft"));
  // The fixture's node was given its token; one given none has made its
  // own by now (keeld makes it at a first start, which a full disk refuses).
  {
    std::ofstream token(n.data() / "admin.token");
    token << "keel_admin_" << std::string(64, 'a') << "\n";
  }
  fs::permissions(n.data() / "admin.token", fs::perms::owner_read | fs::perms::owner_write);
  disk.fill(0);

  REQUIRE_MESSAGE(n.start(), n.process().output());
  auto h = n.health();
  CHECK(h["store"]["read_only"] == true);
  // The fixture's agents read as they were written.
  CHECK(n.total("acct/alice") == 7);
  CHECK(n.ledger("ticket/1").size() == 21);
  CHECK(n.ledger("ticket/2").size() == 12);
  auto shown = n.call("GET", fault_node::path("ticket/1-small"));
  CHECK_MESSAGE(shown.status == 200, shown.raw);
  // Writes are refused, and nothing was created on the full disk.
  auto refused = n.send("acct/alice", {{"id", "while-full"}, {"body", {{"add", 1}}}});
  CHECK_MESSAGE(refused.status == 507, refused.raw);
  CHECK_FALSE(options_list_family(n.data(), "raft"));

  disk.free_all();
  CHECK(eventually(
      [&] {
        return n.send("acct/alice", {{"id", "after"}, {"body", {{"add", 2}}}}).status == 202;
      },
      fault_deadline));
  CHECK(eventually([&] { return n.total("acct/alice") == 9; }, fault_deadline));
  CHECK(n.health()["store"]["read_only"] == false);
  // The writable reopen added the family the read-only open did without.
  CHECK(options_list_family(n.data(), "raft"));
}
