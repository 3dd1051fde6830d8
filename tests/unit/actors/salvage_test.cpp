// What a salvage reports as lost, from dropped write batches compared with
// the store (step 4 of actors/salvage.hpp), without a damaged log: the
// batches are made here, as the log reader would list them.

#include <doctest/doctest.h>

#include "actors/salvage.hpp"
#include "base/bytes.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/values.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using persistence::family;

namespace {

// A raft log entry key of group 1 (net/raft/keys.hpp's layout).
std::string entry_key(uint64_t index) {
  std::string k("\0\0\0\1e", 5);
  put_u64_be(k, index);
  return k;
}

persistence::wal_op put(uint32_t family_id, std::string key, std::string value) {
  return {family_id, false, std::move(key), std::move(value), {}};
}

}  // namespace

TEST_CASE("a dropped range erase counts the raft keys it would have removed, never as an agent's") {
  test::temp_dir dir;
  auto db = persistence::store::open({dir.str(), 8 << 20, true});
  REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
  auto& store = **db;
  // Before the damage: agent a/1 (id 5) with one event, raft entries 1-5.
  persistence::write_set before{
      {family::agents, false, "a/1",
       persistence::encode(persistence::agent_meta{5, "counter", agent_status::active, 1, 0, false},
                           1)},
      {family::ledger, false, persistence::agent_seq_key(5, 1),
       persistence::encode_record({7, 1, "one"})}};
  for (uint64_t i = 1; i <= 5; ++i) before.push_back({family::raft, false, entry_key(i), "old"});
  REQUIRE(store.write(before, true).is_ok());

  const uint32_t raft = store.family_id(family::raft);
  const uint32_t ledger = store.family_id(family::ledger);
  persistence::wal_scan scan;
  // Event 2 of a/1; raft entries 6 and 7, and a raft key shaped like an
  // agent's inbox key.
  scan.after_damage.push_back(
      {"log",
       0,
       10,
       {put(ledger, persistence::agent_seq_key(5, 2), persistence::encode_record({7, 2, "two"})),
        put(raft, entry_key(6), "six"), put(raft, entry_key(7), "seven"),
        put(raft, persistence::agent_seq_key(9, 1), "not an inbox")}});
  // The log truncated from entry 4 up to 7 (entries 4, 5 and 6 go) ...
  scan.after_damage.push_back({"log", 100, 14, {{raft, true, entry_key(4), {}, entry_key(7)}}});
  // ... and entry 5 written anew.
  scan.after_damage.push_back({"log", 200, 15, {put(raft, entry_key(5), "new five")}});

  auto report = actors::survey_losses(store, scan);
  REQUIRE_MESSAGE(report.is_ok(), report.error().to_string());
  INFO(report->dump());
  // Raft: entry 4 (still held, the erase was dropped), 5 (holds "old", not
  // "new five"), 7 (never written) and the inbox-shaped key. Entry 6 was
  // written and erased among the dropped batches: nothing differs.
  CHECK((*report)["other_keys_lost"] == nlohmann::json{{"raft", 4}});
  CHECK((*report)["keys_lost"] == 5);
  // The only agent loss is a/1's event 2.
  REQUIRE((*report)["agents"].size() == 1);
  const auto& a = (*report)["agents"][0];
  CHECK(a["name"] == "a/1");
  CHECK(a["id"] == 5);
  CHECK(a["ledger_lost"] == nlohmann::json::array({2, 2}));
  CHECK(a["messages_lost"] == 0);
}
