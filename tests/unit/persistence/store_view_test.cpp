// The store's consistent read views (persistence/store.hpp, read_view).
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using keel::code;
namespace p = keel::persistence;

namespace {

using pairs = std::vector<std::pair<std::string, std::string>>;

void put(p::store& db, p::family f, const std::string& k, const std::string& v) {
  REQUIRE(db.write({{f, false, k, v}}, false).is_ok());
}

}  // namespace

TEST_CASE("a read view sees the store as it was when made, not the writes after it") {
  keel::test::temp_dir dir("keel-view");
  auto opened = p::store::open({dir.str(), 8 << 20, true});
  REQUIRE(opened.is_ok());
  auto& db = **opened;
  put(db, p::family::ledger, "a", "1");
  put(db, p::family::ledger, "b", "2");
  auto v = db.view();
  REQUIRE(v.is_ok());
  put(db, p::family::ledger, "a", "changed");
  put(db, p::family::ledger, "c", "3");
  REQUIRE(db.write({{p::family::ledger, true, "b", ""}}, false).is_ok());

  auto a = (*v)->get(p::family::ledger, "a");
  REQUIRE(a.is_ok());
  CHECK(*a == std::optional<std::string>("1"));
  auto c = (*v)->get(p::family::ledger, "c");
  REQUIRE(c.is_ok());
  CHECK_FALSE(c->has_value());
  auto all = (*v)->scan(p::family::ledger, "", "", 100, 1 << 20);
  REQUIRE(all.is_ok());
  CHECK(*all == pairs{{"a", "1"}, {"b", "2"}});
  // The store itself has moved on.
  auto now = db.scan(p::family::ledger, "", "", 100);
  REQUIRE(now.is_ok());
  CHECK(*now == pairs{{"a", "changed"}, {"c", "3"}});
  // Other families are in the same view.
  auto none = (*v)->scan(p::family::inbox, "", "", 100, 1 << 20);
  REQUIRE(none.is_ok());
  CHECK(none->empty());
}

TEST_CASE("a read view's scan keeps to its range, its count and its byte budget") {
  keel::test::temp_dir dir("keel-view");
  auto opened = p::store::open({dir.str(), 8 << 20, true});
  REQUIRE(opened.is_ok());
  auto& db = **opened;
  for (char c = 'a'; c <= 'j'; ++c) put(db, p::family::blobs, std::string(1, c), "0123456789");
  auto v = db.view();
  REQUIRE(v.is_ok());

  auto mid = (*v)->scan(p::family::blobs, "c", "f", 100, 1 << 20);
  REQUIRE(mid.is_ok());
  REQUIRE(mid->size() == 3);
  CHECK(mid->front().first == "c");
  CHECK(mid->back().first == "e");

  auto two = (*v)->scan(p::family::blobs, "c", "", 2, 1 << 20);
  REQUIRE(two.is_ok());
  CHECK(two->size() == 2);

  // 11 bytes a pair: the budget stops the scan once reached, not before.
  auto budget = (*v)->scan(p::family::blobs, "a", "", 100, 25);
  REQUIRE(budget.is_ok());
  CHECK(budget->size() == 3);
  // One pair is always returned, however small the budget.
  auto one = (*v)->scan(p::family::blobs, "a", "", 100, 1);
  REQUIRE(one.is_ok());
  CHECK(one->size() == 1);

  auto past = (*v)->scan(p::family::blobs, "k", "", 100, 1 << 20);
  REQUIRE(past.is_ok());
  CHECK(past->empty());
}
