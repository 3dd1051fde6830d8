// A compaction snapshot keeps the version the agent runs: the loop's data
// names the version it was spawned with (ctl.spec_hash), and after an
// upgrade the snapshot must carry the other one.

#include <doctest/doctest.h>

#include <string>

#include "ledger/codec.hpp"

using namespace keel;
using agent::json;

namespace {

const std::string spawned_with(64, 'a');
const std::string upgraded_to(64, 'b');

agent::agent_state loop_state(const std::string& version) {
  agent::agent_state s;
  s.type = "desk";
  s.version = version;
  s.last_seq = 42;
  s.last_arrival = 7;
  s.loop.emplace();
  s.loop->spec_hash = spawned_with;
  s.loop->turns = 2;
  s.data = {{"conversation", json::array({{{"role", "user"}, {"content", "hi"}}})}};
  return s;
}

agent::agent_state round_trip(const agent::agent_state& s) {
  auto back = actors::snapshot_from_record(actors::snapshot_record(s, 99), "snapshot of desk");
  REQUIRE_MESSAGE(back.is_ok(), back.error().to_string());
  return *back;
}

}  // namespace

TEST_CASE("a snapshot keeps the version an agent was upgraded to, apart from its loop's data") {
  SUBCASE("upgraded: the version differs from ctl.spec_hash") {
    auto s = loop_state(upgraded_to);
    auto back = round_trip(s);
    CHECK(back.version == upgraded_to);
    CHECK(agent::type_data(back)["ctl"]["spec_hash"] == spawned_with);
    CHECK(back == s);
  }
  SUBCASE("upgraded, paused and forked: all kept") {
    auto s = loop_state(upgraded_to);
    s.paused = true;
    s.forks.push_back({"desk-fork", 12});
    auto back = round_trip(s);
    CHECK(back.version == upgraded_to);
    CHECK(back.paused);
    REQUIRE(back.forks.size() == 1);
    CHECK(back.forks[0].name == "desk-fork");
    CHECK(back == s);
  }
  SUBCASE("never upgraded: the version is the one its data names") {
    auto s = loop_state(spawned_with);
    auto back = round_trip(s);
    CHECK(back.version == spawned_with);
    CHECK(back == s);
  }
  SUBCASE("a built-in type's state has no version") {
    agent::agent_state s;
    s.type = "counter";
    s.last_seq = 3;
    s.data = {{"total", 5}};
    auto back = round_trip(s);
    CHECK(back.version.empty());
    CHECK(back == s);
  }
}
