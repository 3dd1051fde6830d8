// A corrupt block in a table file: the node still starts and serves every
// agent whose data reads; an agent whose data sits in the bad block
// answers `corruption`, naming the file and the keys it holds; health
// lists the file; writes to the others go on.

#include <doctest/doctest.h>

#include <algorithm>

#include "faults/fault_support.hpp"

using namespace keel::test;

namespace {

constexpr int agents = 120;
constexpr int rounds = 15;

std::string agent(int i) {
  return "sst/a" + std::to_string(i);
}

}  // namespace

TEST_CASE(
    "a corrupt table block costs the agents whose data it holds, and the node serves the rest") {
  temp_dir dir("keel-sst");
  fault_node n(dir.path() / "data");
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  for (int i = 0; i < agents; ++i) REQUIRE(n.spawn(agent(i)).status == 201);
  for (int r = 0; r < rounds; ++r)
    for (int i = 0; i < agents; ++i)
      REQUIRE(
          book.send(n, agent(i), "m-" + std::to_string(r) + "-" + std::to_string(i), 1).status ==
          202);
  // A clean stop flushes everything into table files.
  REQUIRE(n.process().terminate() == 0);
  auto tables = files_ending(n.data(), ".sst");
  REQUIRE_FALSE(tables.empty());
  // The largest holds the ledgers; a byte a third of the way in is inside
  // a data block (the index and filters sit at the end).
  const fs::path victim = *std::max_element(tables.begin(), tables.end(), [](auto& a, auto& b) {
    return fs::file_size(a) < fs::file_size(b);
  });
  flip_byte(victim, fs::file_size(victim) / 3);

  REQUIRE_MESSAGE(n.start(), n.process().output());
  int damaged = 0, whole = 0;
  std::vector<std::string> healthy;
  for (int i = 0; i < agents; ++i) {
    auto v = n.call("GET", fault_node::path(agent(i)));
    if (v.status == 200) {
      CHECK(v.body["state"]["total"] == rounds);
      healthy.push_back(agent(i));
      ++whole;
      continue;
    }
    ++damaged;
    CHECK(v.status == 500);
    CHECK(v.error_code() == "corruption");
    CHECK_MESSAGE(v.raw.find(victim.filename().string()) != std::string::npos, v.raw);
    CHECK_MESSAGE(v.raw.find("the file holds") != std::string::npos, v.raw);
  }
  MESSAGE(damaged << " agents lost to the corrupt block, " << whole << " served whole");
  CHECK(damaged > 0);
  CHECK(whole > agents / 2);
  auto h = n.health();
  CHECK(h["status"] == "degraded");
  REQUIRE(h["store"]["damage"].size() >= 1);
  CHECK(h["store"]["damage"][0]["file"].get<std::string>().find(victim.filename().string()) !=
        std::string::npos);
  CHECK(h["store"]["writable"] == true);
  // The healthy ones take writes and keep every message; the damaged ones
  // are the only thing the replay check at the end cannot read.
  for (const auto& a : healthy) {
    CHECK(book.send(n, a, "after", 2).status == 202);
    book.check(n, a);
  }
  n.no_replay_check();
  for (const auto& a : healthy) {
    auto r = n.call("POST", fault_node::path(a) + "/replay", "{}");
    CHECK_MESSAGE(r.body.value("identical", false), r.raw);
  }
}

TEST_CASE("a corrupt block in what the start-up scans read does not stop the node") {
  temp_dir dir("keel-sst");
  fault_node n(dir.path() / "data");
  REQUIRE_MESSAGE(n.start(), n.process().output());
  constexpr int held_agents = 60, held = 25;
  // Paused agents keep what they are sent in their durable inboxes, which
  // the node scans at every start: those become the largest table file.
  std::string pad(4000, 'x');
  for (int i = 0; i < held_agents; ++i) {
    REQUIRE(n.spawn(agent(i)).status == 201);
    REQUIRE(n.call("POST", fault_node::path(agent(i)) + "/pause", "{}").status == 202);
    for (int m = 0; m < held; ++m) {
      pad[0] = static_cast<char>('a' + m % 26);  // no two alike
      auto r = n.send(agent(i), {{"id", "h-" + std::to_string(m)},
                                 {"body", {{"add", 1}, {"note", pad + std::to_string(i)}}}});
      REQUIRE(r.status == 202);
    }
  }
  REQUIRE(n.process().terminate() == 0);
  auto tables = files_ending(n.data(), ".sst");
  const fs::path victim = *std::max_element(tables.begin(), tables.end(), [](auto& a, auto& b) {
    return fs::file_size(a) < fs::file_size(b);
  });
  flip_byte(victim, fs::file_size(victim) / 3);

  // It starts (before, the inbox scan's corruption error stopped it).
  REQUIRE_MESSAGE(n.start(), n.process().output());
  auto h = n.health();
  CHECK(h["status"] == "degraded");
  REQUIRE(h["store"]["damage"].size() >= 1);
  CHECK_MESSAGE(h["store"]["warnings"].dump().find("skipped") != std::string::npos, h.dump());
  int served = 0, damaged = 0;
  for (int i = 0; i < held_agents; ++i) {
    auto v = n.call("GET", fault_node::path(agent(i)));
    if (v.status == 200) {
      CHECK(v.body["paused"] == true);
      ++served;
    } else {
      CHECK(v.error_code() == "corruption");
      ++damaged;
    }
  }
  MESSAGE(damaged << " agents whose held messages sat in the bad block, " << served << " served");
  CHECK(served > held_agents / 2);
  n.no_replay_check();
}
