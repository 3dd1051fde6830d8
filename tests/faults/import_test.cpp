// An export is only as good as its chain: one whose hash and prev fields
// were removed (and whose content was altered behind them) is refused, and
// loaded only on the operator's explicit word, after which audit never
// calls it intact.

#include <doctest/doctest.h>

#include "faults/fault_support.hpp"

using namespace keel::test;

TEST_CASE("an export stripped of its chain is refused, or imported as unverified, never intact") {
  temp_dir dir("keel-import");
  fault_node n(dir.path() / "data");
  REQUIRE_MESSAGE(n.start(), n.process().output());
  ack_book book;
  REQUIRE(n.spawn("imp/src").status == 201);
  for (int m = 0; m < 5; ++m)
    REQUIRE(book.send(n, "imp/src", "m-" + std::to_string(m), 2).status == 202);
  json lines = json::array();
  for (auto e : n.ledger("imp/src")) lines.push_back(e);
  REQUIRE(lines.size() == 11);

  // The attack: strip the chain, then change what happened.
  json stripped = lines;
  for (auto& l : stripped) {
    l.erase("hash");
    l.erase("prev");
  }
  json altered = stripped;
  for (auto& l : altered)
    if (l["type"] == "state_changed") l["data"]["total"] = 1000;

  auto refused =
      n.call("POST", fault_node::path("imp/forged") + "/import", json{{"events", altered}}.dump());
  CHECK(refused.status == 400);
  CHECK_MESSAGE(refused.raw.find("has no \\\"hash\\\"") != std::string::npos, refused.raw);
  CHECK(n.call("GET", fault_node::path("imp/forged")).status == 404);

  // A chained export imports and audits intact, with the source's head.
  auto good =
      n.call("POST", fault_node::path("imp/copy") + "/import", json{{"events", lines}}.dump());
  REQUIRE_MESSAGE(good.status == 201, good.raw);
  auto src_audit = n.call("GET", fault_node::path("imp/src") + "/audit").body;
  auto copy_audit = n.call("GET", fault_node::path("imp/copy") + "/audit").body;
  CHECK(copy_audit["intact"] == true);
  CHECK(copy_audit["head"] == src_audit["head"]);

  // On the operator's word an unchained export loads, and says what it is.
  auto unverified = n.call("POST", fault_node::path("imp/old") + "/import",
                           json{{"events", stripped}, {"unverified", true}}.dump());
  REQUIRE_MESSAGE(unverified.status == 201, unverified.raw);
  auto audit = n.call("GET", fault_node::path("imp/old") + "/audit").body;
  CHECK(audit["intact"] == false);
  CHECK(audit["unverified"] == true);
  // And stays so across a crash.
  n.process().kill9();
  REQUIRE_MESSAGE(n.start(), n.process().output());
  CHECK(n.call("GET", fault_node::path("imp/old") + "/audit").body["unverified"] == true);
  book.check(n, "imp/src");
}
