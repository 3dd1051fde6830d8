// The agent census moved by counted writes of directory entries.

#include <doctest/doctest.h>

#include "actors/agent_census.hpp"
#include "persistence/values.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using persistence::family;

namespace {

std::string entry(uint64_t id, agent_status s, std::string phase) {
  persistence::agent_meta m{id, "counter", s, 1000, 0, false};
  m.phase = std::move(phase);
  return persistence::encode(m, 1000);
}

}  // namespace

TEST_CASE("a counted write moves the census with the entries it puts and erases") {
  test::temp_dir dir;
  auto db = persistence::store::open({dir.str(), 8 << 20, true});
  REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
  actors::agent_census census;
  REQUIRE(census.count(**db).is_ok());
  CHECK(census.by_phase().empty());

  REQUIRE(actors::write_counted(
              **db, census,
              {{family::agents, false, "a/1", entry(1, agent_status::active, "idle")},
               {family::agents, false, "a/2", entry(2, agent_status::active, "idle")}})
              .is_ok());
  CHECK(census.by_phase() == std::map<std::string, uint64_t>{{"idle", 2}});
  CHECK(census.hibernated() == 2);
  REQUIRE(actors::write_counted(**db, census, {{family::agents, true, "a/1", {}}}).is_ok());
  CHECK(census.by_phase() == std::map<std::string, uint64_t>{{"idle", 1}});
  CHECK(census.hibernated() == 1);
}

TEST_CASE("a counted write refuses a range erase of directory entries and writes nothing") {
  test::temp_dir dir;
  auto db = persistence::store::open({dir.str(), 8 << 20, true});
  REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
  actors::agent_census census;
  REQUIRE(actors::write_counted(
              **db, census,
              {{family::agents, false, "a/1", entry(1, agent_status::active, "idle")},
               {family::agents, false, "a/2", entry(2, agent_status::active, "idle")}})
              .is_ok());

  persistence::write_set ops{{family::agents, false, "a/3", entry(3, agent_status::active, "idle")},
                             {family::agents, true, "a/", {}, "a0"}};
  auto s = actors::write_counted(**db, census, ops);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.error_code() == code::internal);
  CHECK(s.message().find("range erase") != std::string::npos);
  // Nothing was written, and the census is as it was.
  for (const char* name : {"a/1", "a/2"}) {
    auto kept = (*db)->get_agent(name);
    REQUIRE(kept.is_ok());
    CHECK(kept->has_value());
  }
  auto added = (*db)->get_agent("a/3");
  REQUIRE(added.is_ok());
  CHECK_FALSE(added->has_value());
  CHECK(census.by_phase() == std::map<std::string, uint64_t>{{"idle", 2}});

  // A range erase elsewhere (the raft family's log) is counted as usual.
  REQUIRE(actors::write_counted(
              **db, census, {{family::raft, true, "a", {}, "b"}, {family::agents, true, "a/2", {}}})
              .is_ok());
  CHECK(census.by_phase() == std::map<std::string, uint64_t>{{"idle", 1}});
}
