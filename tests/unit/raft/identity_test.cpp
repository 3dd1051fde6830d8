// A member's raft identity (net/raft/identity.hpp): what it is bound to,
// and how a member with an empty store chooses between bootstrap and join.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "net/raft/identity.hpp"
#include "net/raft/keys.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using namespace keel::raft;
using persistence::family;

namespace {

std::unique_ptr<persistence::store> open_store(const test::temp_dir& dir) {
  persistence::store_options o;
  o.dir = dir.str();
  auto s = persistence::store::open(o);
  REQUIRE(s.is_ok());
  return std::move(s).value();
}

}  // namespace

TEST_CASE("an incarnation keeps its member's original id in the low bits") {
  CHECK(incarnation_id(3, 0) == 3);
  const raft_id id = incarnation_id(3, 0xABCD1234);
  CHECK(id != 3);
  CHECK(original_id(id) == 3);
  CHECK(incarnation_id(65535, 0xFFFFFFFF) != incarnation_id(65534, 0xFFFFFFFF));
  CHECK(original_id(incarnation_id(65535, 0xFFFFFFFF)) == 65535);
}

TEST_CASE("an empty store bootstraps only with a majority that never held an election") {
  // members, answered without history, answered with history.
  CHECK(choose_start(3, 1, 0) == start_choice::bootstrap);  // it and one other: 2 of 3
  CHECK(choose_start(3, 2, 0) == start_choice::bootstrap);
  CHECK(choose_start(3, 0, 0) == start_choice::wait);  // alone: the others may have run
  CHECK(choose_start(3, 1, 1) == start_choice::rejoin);
  CHECK(choose_start(3, 0, 1) == start_choice::rejoin);
  CHECK(choose_start(4, 1, 0) == start_choice::wait);  // 2 of 4 is no majority
  CHECK(choose_start(4, 2, 0) == start_choice::bootstrap);
  CHECK(choose_start(5, 2, 0) == start_choice::bootstrap);
  CHECK(choose_start(5, 1, 0) == start_choice::wait);
  CHECK(choose_start(1, 0, 0) == start_choice::bootstrap);
}

TEST_CASE("a store's identity is saved, read back, and checked") {
  test::temp_dir dir{"keel-identity"};
  auto db = open_store(dir);
  auto none = load_identity(*db);
  REQUIRE(none.is_ok());
  CHECK_FALSE(none->has_value());
  auto holds = holds_groups(*db);
  REQUIRE(holds.is_ok());
  CHECK_FALSE(*holds);

  const raft_id id = incarnation_id(2, 77);
  REQUIRE(save_identity(*db, id).is_ok());
  db.reset();
  db = open_store(dir);
  auto back = load_identity(*db);
  REQUIRE(back.is_ok());
  CHECK(*back == std::optional<raft_id>(id));
  // The identity alone is no group.
  holds = holds_groups(*db);
  REQUIRE(holds.is_ok());
  CHECK_FALSE(*holds);

  REQUIRE(db->write({{family::raft, false, term_key(5), std::string(8, '\0')}}, true).is_ok());
  holds = holds_groups(*db);
  REQUIRE(holds.is_ok());
  CHECK(*holds);

  REQUIRE(db->write({{family::raft, false, identity_key(), "short"}}, true).is_ok());
  auto bad = load_identity(*db);
  REQUIRE_FALSE(bad.is_ok());
  CHECK(bad.error().error_code() == code::corruption);
}
