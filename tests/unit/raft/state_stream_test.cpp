// A group's state as a follower fetches it (net/raft/state_stream.hpp):
// the wire codec of requests and pages, and which keys belong to a group.
#include "net/raft/state_stream.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "base/bytes.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using persistence::family;

namespace {

std::string id_key(uint64_t id, uint64_t seq) {
  std::string k;
  put_u64_be(k, id);
  put_u64_be(k, seq);
  return k;
}

raft::group_id group_of_name(std::string_view name) {
  return name.size() > 1 ? static_cast<raft::group_id>(name[1] - '0') : 0;
}

}  // namespace

TEST_CASE("a fetch request and a page survive their encoding, and damaged bytes are refused") {
  raft::fetch_request r{7, 1234, 9, {3, std::string("k\0ey", 4)}};
  auto back = raft::decode_request(raft::encode_request(r));
  REQUIRE(back.is_ok());
  CHECK(*back == r);

  raft::state_page p;
  p.session = 9;
  p.applied = 1300;
  p.entries = {{family::ledger, "a", "1"},
               {family::blobs, "b", std::string(300, 'x')},
               {family::raft, std::string("\0\0", 2), ""}};
  p.next = {5, "after"};
  auto page = raft::decode_page(raft::encode_page(p));
  REQUIRE(page.is_ok());
  CHECK(*page == p);
  p.done = true;
  p.next = {};
  auto last = raft::decode_page(raft::encode_page(p));
  REQUIRE(last.is_ok());
  CHECK(*last == p);

  const std::string good = raft::encode_page(p);
  SUBCASE("cut short anywhere") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      CAPTURE(n);
      CHECK(raft::decode_page(good.substr(0, n)).error().error_code() == code::corruption);
    }
    const std::string req = raft::encode_request(r);
    for (std::size_t n = 0; n < req.size(); ++n)
      CHECK(raft::decode_request(req.substr(0, n)).error().error_code() == code::corruption);
  }
  SUBCASE("trailing bytes") {
    CHECK(raft::decode_page(good + "x").error().error_code() == code::corruption);
    CHECK(raft::decode_request(raft::encode_request(r) + "x").error().error_code() ==
          code::corruption);
  }
  SUBCASE("an unknown format, family or part") {
    std::string v = good;
    v[0] = 2;
    CHECK(raft::decode_page(v).error().error_code() == code::corruption);
    std::string f = good;
    f[1 + 8 + 8 + 4] = static_cast<char>(persistence::family_count);
    CHECK(raft::decode_page(f).error().error_code() == code::corruption);
    raft::fetch_request past = r;
    past.cursor.part = raft::state_parts;
    CHECK(raft::decode_request(raft::encode_request(past)).error().error_code() ==
          code::corruption);
  }
  SUBCASE("an entry count the bytes cannot hold") {
    std::string c = good;
    c[1 + 8 + 8] = '\x7f';
    CHECK(raft::decode_page(c).error().error_code() == code::corruption);
  }
}

TEST_CASE("a group's state pages hold exactly its keys, from one view, in pages of bounded size") {
  test::temp_dir dir("keel-state");
  auto opened = persistence::store::open({dir.str(), 8 << 20, true});
  REQUIRE(opened.is_ok());
  auto& db = **opened;
  const uint64_t mine = (uint64_t{2} << 48) | 5, other = (uint64_t{3} << 48) | 5;
  persistence::write_set ops;
  for (uint64_t seq = 1; seq <= 50; ++seq) {
    ops.push_back({family::ledger, false, id_key(mine, seq), std::string(100, 'm')});
    ops.push_back({family::ledger, false, id_key(other, seq), std::string(100, 'o')});
  }
  ops.push_back({family::inbox, false, id_key(mine, 1), "in"});
  ops.push_back({family::timers, false, persistence::timer_key(10, mine, 1), "t"});
  ops.push_back({family::timers, false, persistence::timer_key(5, other, 1), "t"});
  ops.push_back({family::agents, false, "a1-x", "mine"});
  ops.push_back({family::agents, false, "a2-y", "other"});
  ops.push_back({family::blobs, false, "blob", "shared"});
  ops.push_back({family::meta, false, "type/x", "local"});
  ops.push_back({family::raft, false, raft::applied_key(1), std::string(8, '\1')});
  ops.push_back({family::raft, false, raft::term_key(1), std::string(8, '\1')});
  ops.push_back({family::raft, false, raft::applied_key(2), std::string(8, '\2')});
  REQUIRE(db.write(ops, false).is_ok());
  auto view = db.view();
  REQUIRE(view.is_ok());
  // Written after the view: not in any page.
  REQUIRE(db.write({{family::ledger, false, id_key(mine, 99), "late"}}, false).is_ok());

  std::vector<raft::state_entry> got;
  raft::state_cursor at;
  int pages = 0;
  for (; pages < 100; ++pages) {
    auto p = raft::read_state_page(**view, 1, group_of_name, at, 1000);
    REQUIRE(p.is_ok());
    std::size_t bytes = 0;
    for (auto& e : p->entries) bytes += e.key.size() + e.value.size();
    CHECK(bytes < 1000 + 200);  // the budget, overshot by at most one entry
    got.insert(got.end(), p->entries.begin(), p->entries.end());
    if (p->done) break;
    at = p->next;
  }
  CHECK(pages > 3);
  std::size_t ledger = 0;
  for (auto& e : got) {
    CAPTURE(e.key);
    switch (e.cf) {
      case family::ledger:
        ++ledger;
        CHECK(get_u64_be(e.key.data()) == mine);
        CHECK(e.value != "late");
        break;
      case family::inbox:
        CHECK(e.value == "in");
        break;
      case family::timers:
        CHECK(persistence::parse_timer_key(e.key).agent_id == mine);
        break;
      case family::agents:
        CHECK(e.key == "a1-x");
        break;
      case family::blobs:
        CHECK(e.key == "blob");
        break;
      case family::raft:
        CHECK(e.key == raft::applied_key(1));
        break;
      default:
        FAIL("a key of a family that is not copied");
    }
  }
  CHECK(ledger == 50);
  CHECK(got.size() == 50 + 5);

  // The follower's side: erasing the group's state leaves the others'.
  REQUIRE(raft::begin_state_replace(db, 1, group_of_name).is_ok());
  auto marked = db.get(family::raft, raft::fetching_key(1));
  REQUIRE(marked.is_ok());
  CHECK(marked->has_value());
  auto left = db.view();
  REQUIRE(left.is_ok());
  auto rest = raft::read_state_page(**left, 1, group_of_name, {}, 1 << 20);
  REQUIRE(rest.is_ok());
  CHECK(rest->done);
  REQUIRE(rest->entries.size() == 1);  // the blob: shared, never erased
  CHECK(rest->entries[0].cf == family::blobs);
  auto others = raft::read_state_page(**left, 2, group_of_name, {}, 1 << 20);
  REQUIRE(others.is_ok());
  CHECK(others->entries.size() == 50 + 1 + 1 + 1 + 1);  // ledger, timer, agent, blob, applied
  auto term = db.get(family::raft, raft::term_key(1));
  REQUIRE(term.is_ok());
  CHECK(term->has_value());  // the raft I/O's own keys stay
}
