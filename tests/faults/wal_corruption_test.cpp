// A damaged write-ahead log: keeld refuses to start rather than drop what
// was acknowledged after the damage, names the file and offset, and
// `keeld --salvage` keeps what is intact while saying exactly what it
// drops: nothing acknowledged disappears without being listed.

#include <doctest/doctest.h>

#include <fstream>

#include "faults/fault_support.hpp"

using namespace keel::test;

namespace {

constexpr int early_agents = 10;
constexpr int late_agents = 5;
constexpr int messages = 400;

std::string agent(int i) {
  return "wal/a" + std::to_string(i);
}

}  // namespace

TEST_CASE(
    "a flipped byte in the write-ahead log refuses the start, and --salvage reports each loss") {
  temp_dir dir("keel-wal");
  fault_node n(dir.path() / "data");
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  for (int i = 0; i < early_agents; ++i) REQUIRE(n.spawn(agent(i)).status == 201);
  for (int m = 0; m < messages; ++m)
    REQUIRE(book.send(n, agent(m % early_agents), "m-" + std::to_string(m), 1 + m % 7).status ==
            202);
  // Agents created late live only in the tail of the log.
  for (int i = early_agents; i < early_agents + late_agents; ++i) {
    REQUIRE(n.spawn(agent(i)).status == 201);
    REQUIRE(book.send(n, agent(i), "late-" + std::to_string(i), 5).status == 202);
  }
  n.process().kill9();  // the log holds all of it: nothing was flushed

  auto logs = files_ending(n.data(), ".log");
  REQUIRE_FALSE(logs.empty());
  const fs::path log = logs.back();
  std::ifstream in(log, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const uint64_t written = bytes.find_last_not_of('\0') + 1;  // the rest is preallocated
  flip_byte(log, written / 2);

  SUBCASE("the start is refused, naming the file, the offset and the way out") {
    CHECK_FALSE(n.start());
    CHECK(n.process().exit_code() == 3);
    const std::string out = n.process().output();
    CHECK_MESSAGE(out.find(log.string() + " is damaged at offset") != std::string::npos, out);
    CHECK_MESSAGE(out.find("--salvage") != std::string::npos, out);
    // Nothing was changed by the refusal: it says the same again.
    CHECK_FALSE(n.start());
    CHECK(n.process().exit_code() == 3);
    n.no_replay_check();
  }

  SUBCASE("--salvage keeps what is intact and lists every acknowledged message it drops") {
    const int rc = n.process().run_to_exit({"--data", n.data().string(), "--salvage"});
    const std::string out = n.process().output();
    REQUIRE_MESSAGE(rc == 0, out);
    auto reports = files_ending(n.data() / "salvage", "");
    REQUIRE(reports.size() == 1);
    json report = json::parse(std::ifstream(reports.front() / "report.json"));
    CHECK(report["damage"]["file"] == log.string());
    CHECK(report["damage"]["offset"].get<uint64_t>() <= written / 2);
    CHECK(fs::exists(reports.front() / log.filename()));  // the log as it was

    std::map<std::string, json> lost;
    for (const auto& a : report["agents"]) lost[a["name"].get<std::string>()] = a;
    REQUIRE_FALSE(lost.empty());
    // The late agents were created after the damage: lost, and said so.
    for (int i = early_agents; i < early_agents + late_agents; ++i) {
      REQUIRE(lost.count(agent(i)));
      CHECK(lost[agent(i)]["lost_entirely"] == true);
    }

    REQUIRE_MESSAGE(n.start(), n.process().output());
    std::size_t listed = 0;
    for (int i = 0; i < early_agents; ++i) {
      std::set<std::string> listed_lost, excused;
      if (lost.count(agent(i))) {
        for (const auto& id : lost[agent(i)]["message_ids_lost"])
          listed_lost.insert(id.get<std::string>());
        // Ids read from the damaged record itself may be garbled.
        for (const auto& id : lost[agent(i)].value("message_ids_in_damaged_record", json::array()))
          excused.insert(id.get<std::string>());
      }
      excused.insert(listed_lost.begin(), listed_lost.end());
      // A listed id was acknowledged (it is not made up) and is gone.
      for (const auto& id : listed_lost) CHECK(book.acked().at(agent(i)).count(id) == 1);
      auto seen = book.check(n, agent(i), excused);
      for (const auto& id : listed_lost) CHECK(seen.count(id) == 0);
      listed += excused.size();
      // An agent that lost something says so in its own ledger.
      auto events = n.ledger(agent(i));
      bool noted = false;
      for (const auto& e : events) noted = noted || e["type"] == "salvaged";
      CHECK(noted == (lost.count(agent(i)) > 0));
      auto audit = n.call("GET", fault_node::path(agent(i)) + "/audit");
      CHECK_MESSAGE(audit.body.value("intact", false), audit.raw);
    }
    MESSAGE(listed << " acknowledged messages lost to the damage, each listed in the report");
    CHECK(listed > 0);
    // A name that was lost is never handed out again.
    for (int i = early_agents; i < early_agents + late_agents; ++i) {
      auto r = n.spawn(agent(i));
      CHECK(r.status == 409);
      CHECK_MESSAGE(r.raw.find("salvage") != std::string::npos, r.raw);
    }
    // The node is whole again: it writes, and a restart finds nothing wrong.
    CHECK(book.send(n, agent(0), "after", 1).status == 202);
    n.process().kill9();
    REQUIRE_MESSAGE(n.start(), n.process().output());
    CHECK(n.health()["status"] == "ok");
  }
}
