// Bounds that keep one client from taking the node down: pages of a ledger
// of large events stay within their byte bound, readers of the ledger
// stream that do not read hold a bounded buffer, and a node with few file
// descriptors splits them so that idle connections cannot starve the store.

#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <thread>

#include "faults/fault_support.hpp"
#include "support/raw_http.hpp"

using namespace keel::test;

namespace {

constexpr uint64_t mib = 1ull << 20;

// Resident memory of `pid` in bytes (VmRSS).
uint64_t rss_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// A counter whose ledger holds `count` messages of ~`bytes` each.
void fill_ledger(fault_node& n, ack_book& book, const std::string& agent, int count,
                 std::size_t bytes) {
  std::mt19937_64 rng(7);
  REQUIRE(n.spawn(agent).status == 201);
  for (int m = 0; m < count; ++m)
    REQUIRE(book.send(n, agent, "big-" + std::to_string(m), 1, random_padding(rng, bytes)).status ==
            202);
}

}  // namespace

TEST_CASE("a ledger page over large events stays within its byte bound, with a cursor to go on") {
  temp_dir dir("keel-bounds");
  write_config(dir.path() / "keeld.json", {{"max_page_bytes", 1 * mib}});
  fault_node n(dir.path() / "data", {"--config", (dir.path() / "keeld.json").string()});
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  fill_ledger(n, book, "big/a", 24, 256 * 1024);

  uint64_t from = 1, events = 0;
  int pages = 0;
  for (; pages < 100; ++pages) {
    auto r = n.call("GET",
                    fault_node::path("big/a") + "/ledger?limit=10000&from=" + std::to_string(from));
    REQUIRE(r.status == 200);
    // At most the bound and one event past it (256 KiB of payload, twice
    // as JSON escapes it at worst), whatever limit was asked for.
    CHECK_MESSAGE(r.raw.size() < 1 * mib + 600 * 1024, "a page of " << r.raw.size() << " bytes");
    events += r.body["events"].size();
    if (!r.body["next"].is_number_unsigned()) break;
    CHECK(r.body["next"].get<uint64_t>() == from + r.body["events"].size());
    from = r.body["next"].get<uint64_t>();
  }
  CHECK(pages >= 4);
  CHECK(events == n.ledger("big/a").size());
  book.check(n, "big/a");
}

TEST_CASE("ledger streams whose clients do not read hold a bounded buffer") {
  temp_dir dir("keel-bounds");
  write_config(dir.path() / "keeld.json", {{"max_page_bytes", 1 * mib}});
  fault_node n(dir.path() / "data", {"--config", (dir.path() / "keeld.json").string()});
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  fill_ledger(n, book, "big/b", 48, 512 * 1024);  // ~24 MiB of events (~48 MiB as JSON)

  const pid_t pid = n.process().pid();
  const uint64_t before = rss_of(pid);
  std::vector<raw_connection> streams(4);
  for (auto& s : streams) {
    REQUIRE(s.connect(n.process().port()));
    REQUIRE(s.send("GET " + fault_node::path("big/b") +
                   "/ledger/stream?from=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  }
  // Nobody reads: each stream's producer stops after a page it cannot
  // hand over. Watch the node's memory for a while, to its highest.
  const uint64_t peak =
      std::max(before, peak_over(std::chrono::seconds(3), [pid] { return rss_of(pid); }));
  const uint64_t grew = peak > before ? peak - before : 0;
  MESSAGE("4 unread streams over " << (48 * 512 / 1024) << " MiB of events: RSS grew by "
                                   << grew / mib << " MiB");
  // Unbounded, each stream would hold the ledger in memory (~48 MiB as JSON).
  CHECK(grew < 64 * mib);
  for (auto& s : streams) s.close();
  CHECK(n.process().alive());
  book.check(n, "big/b");
}

TEST_CASE("with few descriptors, idle connections are refused before they can starve the store") {
  temp_dir dir("keel-bounds");
  fault_node n(dir.path() / "data");
  n.process().set_open_files_limit(256);
  REQUIRE_MESSAGE(n.start(), n.process().output());
  // keeld says how it split the descriptors.
  CHECK_MESSAGE(n.process().output().find("file descriptors: limit 256") != std::string::npos,
                n.process().output());
  ack_book book;
  REQUIRE(n.spawn("fd/a").status == 201);  // the helper's connection is open from here on

  std::vector<raw_connection> idle(300);
  int refused = 0;
  for (auto& c : idle) {
    if (!c.connect(n.process().port())) continue;  // the kernel's backlog: fine too
    // A refusal comes at once; an accepted connection says nothing.
    const std::string raw = c.read_all(std::chrono::milliseconds(5));
    if (raw.find("503") != std::string::npos) ++refused;
  }
  CHECK(refused > 0);
  // The store still writes while they are held.
  for (int m = 0; m < 50; ++m)
    CHECK(book.send(n, "fd/a", "m-" + std::to_string(m), 1).status == 202);
  CHECK(n.health()["store"]["write_errors"] == 0);
  CHECK(n.metric("keel_http_connections_refused_total").value_or(0) >= 1);
  for (auto& c : idle) c.close();
  n.process().kill9();
  REQUIRE_MESSAGE(n.start(), n.process().output());
  book.check(n, "fd/a");
}
