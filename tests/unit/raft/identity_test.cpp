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
  CHECK(incarnation_of(id) == 0xABCD1234);
  // Later incarnations number higher (seconds since 2020), never 0.
  const uint32_t now = new_incarnation();
  CHECK(now > 200'000'000);  // past 2026
  CHECK(new_incarnation() >= now);
}

TEST_CASE("an empty store bootstraps only when every other member answered without history") {
  using m = cluster_memory;
  // others, answered empty, answered fresh, answered history.
  CHECK(choose_start(2, 2, 0, 0) == start_choice::bootstrap);  // a new cluster, all up
  CHECK(choose_start(2, 1, 1, 0) == start_choice::bootstrap);  // one bootstrapped already
  CHECK(choose_start(2, 0, 2, 0) == start_choice::bootstrap);
  // One has not answered: it may be the candidate this member voted for.
  CHECK(choose_start(2, 1, 0, 0) == start_choice::wait);
  CHECK(choose_start(2, 0, 1, 0) == start_choice::wait);
  CHECK(choose_start(4, 2, 1, 0) == start_choice::wait);
  CHECK(choose_start(2, 0, 1, 1) == start_choice::rejoin);
  CHECK(choose_start(2, 0, 0, 1) == start_choice::rejoin);
  CHECK(choose_start(4, 3, 0, 1) == start_choice::rejoin);
  CHECK(choose_start(0, 0, 0, 0) == start_choice::bootstrap);  // a cluster of one
  for (auto x : {m::empty, m::fresh, m::history}) CHECK(cluster_memory_from(to_string(x)) == x);
  CHECK_FALSE(cluster_memory_from("0").has_value());
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

  REQUIRE(db->write({{family::meta, false, "raft/self", "short"}}, true).is_ok());
  auto bad = load_identity(*db);
  REQUIRE_FALSE(bad.is_ok());
  CHECK(bad.error().error_code() == code::corruption);
}
