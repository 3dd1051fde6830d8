#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/bytes.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/store.hpp"
#include "persistence/values.hpp"
#include "support/temp_dir.hpp"

using keel::code;
using nlohmann::json;
namespace p = keel::persistence;

namespace {

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

std::unique_ptr<p::store> open_store(const keel::test::temp_dir& dir) {
  auto r = p::store::open({dir.str(), 8 << 20, true});
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return std::move(r).value();
}

void write(p::store& db, const p::write_set& ops) {
  auto s = db.write(ops, /*sync=*/false);
  REQUIRE_MESSAGE(s.is_ok(), s.to_string());
}

p::record ledger_record(uint64_t agent, uint64_t seq) {
  return {static_cast<uint16_t>(1 + seq % 9), static_cast<int64_t>(seq * 10),
          "agent " + std::to_string(agent) + " event " + std::to_string(seq)};
}

p::write_op ledger_op(uint64_t agent, uint64_t seq) {
  return {p::family::ledger, false, p::agent_seq_key(agent, seq),
          p::encode_record(ledger_record(agent, seq))};
}

p::write_op snapshot_op(uint64_t agent, uint64_t seq) {
  return {p::family::snapshots, false, p::agent_seq_key(agent, seq),
          p::encode_record({0xE001, 0, "snapshot at " + std::to_string(seq)})};
}

p::write_op inbox_op(uint64_t agent_id, const std::string& name, uint64_t arrival) {
  p::inbox_entry e{name,
                   arrival,
                   p::inbox_kind::message,
                   "m" + std::to_string(arrival),
                   "acct/bob",
                   json{{"add", arrival}},
                   ""};
  return {p::family::inbox, false, p::agent_seq_key(agent_id, arrival), p::encode(e, 0)};
}

p::write_op agent_op(const std::string& name, uint64_t id) {
  return {p::family::agents, false, name,
          p::encode(p::agent_meta{id, "counter", keel::agent_status::active, 5}, 0)};
}

p::write_op timer_op(int64_t due, uint64_t agent_id, uint64_t timer_id) {
  p::timer_entry e{"agent-" + std::to_string(agent_id), json{{"timer", timer_id}}};
  return {p::family::timers, false, p::timer_key(due, agent_id, timer_id), p::encode(e, 0)};
}

std::vector<uint64_t> seqs_of(const std::vector<std::pair<uint64_t, p::record>>& v) {
  std::vector<uint64_t> out;
  for (const auto& [seq, rec] : v) out.push_back(seq);
  return out;
}

}  // namespace

TEST_CASE("a reopened store returns every written ledger record in seq order") {
  keel::test::temp_dir dir("keel-store");
  // Out of order, over several writes; seqs cross byte boundaries so that a
  // little-endian or textual key encoding would sort them wrongly.
  const std::vector<std::vector<uint64_t>> writes = {{300, 1, 0x100000000ull},
                                                     {255, 256, 2},
                                                     {0xffffffffull, 65536, 257, 3},
                                                     {0x0100000000000001ull, 65535, 128}};
  std::vector<uint64_t> all;
  {
    auto db = open_store(dir);
    for (const auto& w : writes) {
      p::write_set ops;
      for (uint64_t seq : w) {
        ops.push_back(ledger_op(7, seq));
        all.push_back(seq);
      }
      write(*db, ops);
    }
    // A neighbour on each side, to prove the scan stays inside agent 7.
    write(*db, {ledger_op(6, 5), ledger_op(8, 0), ledger_op(8, 1)});
  }
  std::sort(all.begin(), all.end());

  auto db = open_store(dir);
  auto r = db->read_ledger(7, 0, 1000, "acct/alice");
  REQUIRE(r.is_ok());
  CHECK(seqs_of(*r) == all);
  for (const auto& [seq, rec] : *r) {
    CAPTURE(seq);
    CHECK(rec == ledger_record(7, seq));
  }
}

TEST_CASE("read_ledger pages with from and limit") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  p::write_set ops;
  for (uint64_t seq = 1; seq <= 20; ++seq) ops.push_back(ledger_op(3, seq));
  ops.push_back(ledger_op(4, 1));
  write(*db, ops);

  SUBCASE("a window in the middle") {
    auto r = db->read_ledger(3, 5, 4, "a");
    REQUIRE(r.is_ok());
    CHECK(seqs_of(*r) == std::vector<uint64_t>{5, 6, 7, 8});
  }
  SUBCASE("the tail is shorter than the limit") {
    auto r = db->read_ledger(3, 18, 10, "a");
    REQUIRE(r.is_ok());
    CHECK(seqs_of(*r) == std::vector<uint64_t>{18, 19, 20});
  }
  SUBCASE("from past the end") {
    auto r = db->read_ledger(3, 21, 10, "a");
    REQUIRE(r.is_ok());
    CHECK(r->empty());
  }
  SUBCASE("limit zero") {
    auto r = db->read_ledger(3, 1, 0, "a");
    REQUIRE(r.is_ok());
    CHECK(r->empty());
  }
  SUBCASE("paging through the whole ledger visits each record once") {
    std::vector<uint64_t> seen;
    uint64_t from = 0;
    for (;;) {
      auto r = db->read_ledger(3, from, 3, "a");
      REQUIRE(r.is_ok());
      if (r->empty()) break;
      CHECK(r->size() <= 3);
      for (auto s : seqs_of(*r)) seen.push_back(s);
      from = r->back().first + 1;
    }
    std::vector<uint64_t> want;
    for (uint64_t s = 1; s <= 20; ++s) want.push_back(s);
    CHECK(seen == want);
  }
  SUBCASE("an agent without a ledger") {
    auto r = db->read_ledger(5, 0, 10, "a");
    REQUIRE(r.is_ok());
    CHECK(r->empty());
  }
}

TEST_CASE("last_ledger_seq is 0 for an empty ledger and neighbours do not bleed") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  CHECK(*db->last_ledger_seq(1) == 0);

  write(*db, {ledger_op(1, 1), ledger_op(1, 10), ledger_op(1, 300), ledger_op(3, 5),
              ledger_op(256, 0x100000000ull), ledger_op(255, 2)});
  CHECK(*db->last_ledger_seq(1) == 300);
  CHECK(*db->last_ledger_seq(2) == 0);  // between two agents with ledgers
  CHECK(*db->last_ledger_seq(3) == 5);
  CHECK(*db->last_ledger_seq(4) == 0);
  CHECK(*db->last_ledger_seq(0) == 0);
  CHECK(*db->last_ledger_seq(255) == 2);
  CHECK(*db->last_ledger_seq(256) == 0x100000000ull);
  CHECK(*db->last_ledger_seq(257) == 0);

  SUBCASE("it survives a reopen") {
    db.reset();
    db = open_store(dir);
    CHECK(*db->last_ledger_seq(1) == 300);
    CHECK(*db->last_ledger_seq(2) == 0);
  }
}

TEST_CASE("latest_snapshot picks the highest seq of that agent only") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  auto none = db->latest_snapshot(4, "a");
  REQUIRE(none.is_ok());
  CHECK_FALSE(none->has_value());

  write(*db, {snapshot_op(4, 300), snapshot_op(4, 5)});
  write(*db, {snapshot_op(4, 256), snapshot_op(5, 1), snapshot_op(3, 0x100000000ull)});
  auto s = db->latest_snapshot(4, "a");
  REQUIRE(s.is_ok());
  REQUIRE(s->has_value());
  CHECK((*s)->first == 300);
  CHECK((*s)->second.payload == "snapshot at 300");
  CHECK((*s)->second.type == 0xE001);

  CHECK((*db->latest_snapshot(5, "a"))->first == 1);
  CHECK((*db->latest_snapshot(3, "a"))->first == 0x100000000ull);
  CHECK_FALSE(db->latest_snapshot(6, "a")->has_value());
  CHECK_FALSE(db->latest_snapshot(2, "a")->has_value());
}

TEST_CASE("read_inbox returns one agent's entries in arrival order") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  write(*db, {inbox_op(2, "acct/alice", 300), inbox_op(2, "acct/alice", 4),
              inbox_op(1, "acct/zed", 1), inbox_op(3, "acct/carol", 2)});
  write(*db, {inbox_op(2, "acct/alice", 256)});

  auto r = db->read_inbox(2, "acct/alice");
  REQUIRE(r.is_ok());
  REQUIRE(r->size() == 3);
  CHECK((*r)[0].arrival == 4);
  CHECK((*r)[1].arrival == 256);
  CHECK((*r)[2].arrival == 300);
  for (const auto& e : *r) {
    CHECK(e.agent == "acct/alice");
    CHECK(e.body == json{{"add", e.arrival}});
  }
  auto empty = db->read_inbox(9, "x");
  REQUIRE(empty.is_ok());
  CHECK(empty->empty());

  SUBCASE("a consumed entry is gone") {
    write(*db, {{p::family::inbox, true, p::agent_seq_key(2, 256), ""}});
    auto after = db->read_inbox(2, "acct/alice");
    REQUIRE(after.is_ok());
    REQUIRE(after->size() == 2);
    CHECK((*after)[0].arrival == 4);
    CHECK((*after)[1].arrival == 300);
  }
}

TEST_CASE("find_message finds a dedupe entry by agent and message id") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  write(*db, {{p::family::dedupe, false, p::dedupe_key(2, "msg-1"),
               p::encode(p::dedupe_entry{7, true, json{{"total", 3}}}, 0)},
              {p::family::dedupe, false, p::dedupe_key(2, "msg-10"),
               p::encode(p::dedupe_entry{8, false, nullptr}, 0)}});
  auto hit = db->find_message(2, "msg-1", "acct/alice");
  REQUIRE(hit.is_ok());
  REQUIRE(hit->has_value());
  CHECK((*hit)->arrival == 7);
  CHECK((*hit)->processed);
  CHECK((*hit)->reply == json{{"total", 3}});

  auto pending = db->find_message(2, "msg-10", "acct/alice");
  REQUIRE(pending.is_ok());
  REQUIRE(pending->has_value());
  CHECK_FALSE((*pending)->processed);

  CHECK_FALSE(db->find_message(2, "msg-2", "a")->has_value());
  CHECK_FALSE(db->find_message(2, "msg", "a")->has_value());    // a prefix of stored ids
  CHECK_FALSE(db->find_message(3, "msg-1", "a")->has_value());  // same id, other agent
}

TEST_CASE("list_agents filters by prefix, resumes after a name and honours the limit") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  write(*db, {agent_op("acct/carol", 3), agent_op("acct/alice", 1), agent_op("other/x", 5),
              agent_op("acct", 6), agent_op("acct/bob", 2), agent_op("acctz", 4)});
  auto names = [](const keel::result<std::vector<p::agent_listing>>& r) {
    REQUIRE(r.is_ok());
    std::vector<std::string> out;
    for (const auto& a : *r) out.push_back(a.name);
    return out;
  };
  using v = std::vector<std::string>;
  CHECK(names(db->list_agents("", "", 100)) ==
        v{"acct", "acct/alice", "acct/bob", "acct/carol", "acctz", "other/x"});
  CHECK(names(db->list_agents("acct/", "", 100)) == v{"acct/alice", "acct/bob", "acct/carol"});
  CHECK(names(db->list_agents("acct/", "acct/alice", 100)) == v{"acct/bob", "acct/carol"});
  CHECK(names(db->list_agents("acct/", "", 2)) == v{"acct/alice", "acct/bob"});
  CHECK(names(db->list_agents("acct/", "acct/carol", 100)).empty());
  CHECK(names(db->list_agents("acct/", "a", 100)) == v{"acct/alice", "acct/bob", "acct/carol"});
  CHECK(names(db->list_agents("zzz", "", 100)).empty());
  CHECK(names(db->list_agents("", "", 0)).empty());

  auto r = db->list_agents("acct/b", "", 10);
  REQUIRE(r.is_ok());
  REQUIRE(r->size() == 1);
  CHECK((*r)[0].meta.id == 2);
  CHECK((*r)[0].meta.type == "counter");

  SUBCASE("paging with limit 1 visits every agent once") {
    v seen;
    std::string after;
    for (;;) {
      auto page = names(db->list_agents("", after, 1));
      if (page.empty()) break;
      REQUIRE(page.size() == 1);
      seen.push_back(page[0]);
      after = page[0];
    }
    CHECK(seen == v{"acct", "acct/alice", "acct/bob", "acct/carol", "acctz", "other/x"});
  }
}

TEST_CASE("agents_with_inbox names each agent with pending entries once") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  auto empty = db->agents_with_inbox();
  REQUIRE(empty.is_ok());
  CHECK(empty->empty());

  p::write_set ops;
  for (uint64_t a = 1; a <= 50; ++a) ops.push_back(inbox_op(2, "acct/alice", a));
  ops.push_back(inbox_op(1, "acct/zed", 9));
  ops.push_back(inbox_op(256, "acct/far", 1));
  ops.push_back(inbox_op(256, "acct/far", 0x100000000ull));
  ops.push_back(inbox_op(255, "acct/near", 3));
  write(*db, ops);

  auto r = db->agents_with_inbox();
  REQUIRE(r.is_ok());
  // In agent id order.
  CHECK(*r == std::vector<std::string>{"acct/zed", "acct/alice", "acct/near", "acct/far"});
}

TEST_CASE("due_timers returns timers due at or before now, oldest first, up to the limit") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  auto next = db->next_timer_due();
  REQUIRE(next.is_ok());
  CHECK_FALSE(next->has_value());
  CHECK(db->due_timers(1'000'000, 10)->empty());

  write(*db, {timer_op(300, 1, 1), timer_op(100, 2, 7), timer_op(200, 1, 2), timer_op(100, 1, 9),
              timer_op(0x100000000ll, 3, 1), timer_op(256, 4, 1)});
  CHECK(**db->next_timer_due() == 100);

  auto due = [&](int64_t now, std::size_t limit) {
    auto r = db->due_timers(now, limit);
    REQUIRE(r.is_ok());
    std::vector<std::tuple<int64_t, uint64_t, uint64_t>> out;
    for (const auto& t : *r) {
      CHECK(t.key == p::timer_key(t.due_ms, t.agent_id, t.timer_id));
      CHECK(t.entry.agent == "agent-" + std::to_string(t.agent_id));
      CHECK(t.entry.payload == json{{"timer", t.timer_id}});
      out.emplace_back(t.due_ms, t.agent_id, t.timer_id);
    }
    return out;
  };
  using tv = std::vector<std::tuple<int64_t, uint64_t, uint64_t>>;
  CHECK(due(99, 10).empty());
  CHECK(due(100, 10) == tv{{100, 1, 9}, {100, 2, 7}});
  CHECK(due(255, 10) == tv{{100, 1, 9}, {100, 2, 7}, {200, 1, 2}});
  CHECK(due(256, 10) == tv{{100, 1, 9}, {100, 2, 7}, {200, 1, 2}, {256, 4, 1}});
  CHECK(due(1000, 2) == tv{{100, 1, 9}, {100, 2, 7}});
  CHECK(due(0x100000000ll, 100).size() == 6);
  CHECK(due(1000, 0).empty());

  SUBCASE("next_timer_due moves on once the earliest timers are removed") {
    write(*db, {{p::family::timers, true, p::timer_key(100, 1, 9), ""},
                {p::family::timers, true, p::timer_key(100, 2, 7), ""}});
    CHECK(**db->next_timer_due() == 200);
    CHECK(due(150, 10).empty());
  }
}

TEST_CASE("allocate_agent_id is unique and strictly increasing, also across a reopen") {
  keel::test::temp_dir dir("keel-store");
  std::vector<uint64_t> before;
  {
    auto db = open_store(dir);
    for (int i = 0; i < 5000; ++i) {  // crosses at least one reservation block
      auto id = db->allocate_agent_id();
      REQUIRE(id.is_ok());
      if (!before.empty()) CHECK(*id > before.back());
      before.push_back(*id);
    }
    CHECK(before.front() >= 1);
  }
  auto db = open_store(dir);
  uint64_t highest_before = before.back();
  uint64_t prev = 0;
  for (int i = 0; i < 100; ++i) {
    auto id = db->allocate_agent_id();
    REQUIRE(id.is_ok());
    CHECK(*id > highest_before);
    CHECK(*id > prev);
    prev = *id;
  }
}

TEST_CASE("allocate_agent_id hands out distinct ids to concurrent callers") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  constexpr int threads = 4, per_thread = 3000;
  std::vector<std::vector<uint64_t>> got(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        auto id = db->allocate_agent_id();
        if (id.is_ok()) got[static_cast<std::size_t>(t)].push_back(*id);
      }
    });
  for (auto& th : ts) th.join();
  std::set<uint64_t> all;
  for (const auto& g : got) {
    CHECK(g.size() == per_thread);
    CHECK(std::is_sorted(g.begin(), g.end()));
    all.insert(g.begin(), g.end());
  }
  CHECK(all.size() == threads * per_thread);
}

TEST_CASE("a corrupted ledger value is reported with the agent label and the seq") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  std::string bad;
  SUBCASE("garbage bytes") {
    bad = "this is not a record at all";
  }
  SUBCASE("a record with one flipped byte") {
    bad = p::encode_record(ledger_record(7, 3));
    bad[5] = static_cast<char>(bad[5] ^ 0x01);
  }
  SUBCASE("an empty value") {
    bad = "";
  }
  write(*db, {ledger_op(7, 1),
              ledger_op(7, 2),
              {p::family::ledger, false, p::agent_seq_key(7, 3), bad},
              ledger_op(7, 4)});
  auto r = db->read_ledger(7, 0, 100, "acct/alice");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::corruption);
  CAPTURE(r.error().message());
  CHECK(contains(r.error().message(), "acct/alice"));
  CHECK(contains(r.error().message(), "seq 3"));

  // Reads that stop before the damaged record still succeed.
  auto head = db->read_ledger(7, 1, 2, "acct/alice");
  REQUIRE(head.is_ok());
  CHECK(seqs_of(*head) == std::vector<uint64_t>{1, 2});
}

TEST_CASE("a corrupted snapshot or inbox value is reported, naming the agent") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  write(*db, {{p::family::snapshots, false, p::agent_seq_key(4, 12), "garbage"},
              {p::family::inbox, false, p::agent_seq_key(4, 13), "garbage"}});
  auto s = db->latest_snapshot(4, "acct/dora");
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.error().error_code() == code::corruption);
  CHECK(contains(s.error().message(), "acct/dora"));
  CHECK(contains(s.error().message(), "seq 12"));

  auto i = db->read_inbox(4, "acct/dora");
  REQUIRE_FALSE(i.is_ok());
  CHECK(i.error().error_code() == code::corruption);
  CHECK(contains(i.error().message(), "acct/dora"));
}

TEST_CASE("the ledger of the highest possible agent id is readable") {
  // The scan's upper bound, agent_prefix(id + 1), would wrap to 0 here.
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  write(*db, {ledger_op(UINT64_MAX, 1), ledger_op(UINT64_MAX, 2)});
  CHECK(*db->last_ledger_seq(UINT64_MAX) == 2);
  auto r = db->read_ledger(UINT64_MAX, 0, 10, "max");
  REQUIRE(r.is_ok());
  CHECK(r->size() == 2);
}

TEST_CASE("schema 1 and 2 databases open and are marked 3; a newer one is refused untouched") {
  keel::test::temp_dir dir("keel-store");
  auto version = [&dir] {
    auto db = open_store(dir);
    auto v = db->get(p::family::meta, "schema_version");
    REQUIRE(v);
    REQUIRE(*v);
    REQUIRE((*v)->size() == 8);
    return keel::get_u64_be((*v)->data());
  };
  CHECK(version() == 3);  // a new database
  auto set = [&dir](uint64_t v) {
    auto db = open_store(dir);
    std::string enc;
    keel::put_u64_be(enc, v);
    REQUIRE(db->write({{p::family::meta, false, "schema_version", enc}}, true));
  };
  set(1);
  CHECK(version() == 3);
  set(2);
  CHECK(version() == 3);
  set(4);
  auto refused = p::store::open({dir.str(), 8 << 20, true});
  REQUIRE_FALSE(refused);
  CHECK(refused.error().error_code() == keel::code::corruption);
}

TEST_CASE(
    "a range erase removes exactly the keys from key up to range_end, in the same batch as puts") {
  keel::test::temp_dir dir("keel-store");
  auto db = open_store(dir);
  const auto f = p::family::raft;
  write(*db,
        {{f, false, "a", "1"}, {f, false, "b", "2"}, {f, false, "c", "3"}, {f, false, "d", "4"}});
  p::write_op range{f, true, "b", {}, "d"};
  write(*db, {range, {f, false, "c2", "5"}});  // a put after the erase in one batch survives it
  auto left = db->scan(f, "", "", 10);
  REQUIRE(left);
  std::vector<std::string> keys;
  for (const auto& kv : *left) keys.push_back(kv.first);
  CHECK(keys == std::vector<std::string>{"a", "c2", "d"});
}
