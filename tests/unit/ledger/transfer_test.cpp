// Agent bundles: one agent's data read from one store and written into
// another under a different agent id, as a shard handoff does.

#include <doctest/doctest.h>

#include "ledger/codec.hpp"
#include "ledger/transfer.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"
#include "persistence/values.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using persistence::family;

namespace {

std::unique_ptr<persistence::store> open_store(const std::string& dir) {
  auto s = persistence::store::open({dir, 8 << 20, true});
  REQUIRE_MESSAGE(s.is_ok(), s.error().to_string());
  return std::move(*s);
}

// An agent with two ledger events (one holding a blob), an inbox entry, a
// dedupe entry, an effect marker and a timer, stored under `id`.
void write_agent(persistence::store& db, const std::string& name, uint64_t id,
                 const std::string& big) {
  persistence::write_set ops;
  persistence::agent_meta meta{id, "counter", keel::agent_status::active, 1000, 0, false};
  ops.push_back({family::agents, false, name, persistence::encode(meta, 1000)});
  actors::blob_list blobs;
  agent::event small{agent::event_type::effect_completed, 1, {{"effect", 1}, {"result", "ok"}}};
  agent::event large{
      agent::event_type::effect_completed, 2, {{"effect", 2}, {"result", {{"page", big}}}}};
  ops.push_back({family::ledger, false, persistence::agent_seq_key(id, 1),
                 persistence::encode_record(actors::to_record(small, &blobs))});
  ops.push_back({family::ledger, false, persistence::agent_seq_key(id, 2),
                 persistence::encode_record(actors::to_record(large, &blobs))});
  REQUIRE(blobs.size() == (big.size() >= actors::blob_threshold ? 1u : 0u));
  actors::blob_ops(blobs, ops);
  ops.push_back(
      {family::inbox, false, persistence::agent_seq_key(id, 7),
       persistence::encode(
           persistence::inbox_entry{name, 7, persistence::inbox_kind::message, "m1", "x", {}, ""},
           1)});
  ops.push_back({family::dedupe, false, persistence::dedupe_key(id, "m1"),
                 persistence::encode(persistence::dedupe_entry{7, false, {}}, 1)});
  ops.push_back(
      {family::effects, false, persistence::agent_seq_key(id, 3),
       persistence::encode(
           persistence::effect_marker{name, persistence::effect_kind::http, "t", 1, "", 0, {}},
           1)});
  ops.push_back({family::timers, false, persistence::timer_key(5000, id, 9),
                 persistence::encode(persistence::timer_entry{name, {}}, 1)});
  REQUIRE(db.write(ops, true).is_ok());
}

}  // namespace

TEST_CASE("an agent bundle moves every family of one agent to another store under a new id") {
  test::temp_dir a_dir, b_dir;
  auto a = open_store(a_dir.str());
  auto b = open_store(b_dir.str());
  const std::string big(3000, 'q');
  write_agent(*a, "team/moving", 11, big);
  write_agent(*a, "team/staying", 12, "unrelated");

  auto bundle = actors::export_agent(*a, "team/moving");
  REQUIRE_MESSAGE(bundle.is_ok(), bundle.error().to_string());
  // agents + 2 ledger + inbox + dedupe + effect + timer + 1 blob.
  CHECK(bundle->kvs.size() == 8);

  // Over the wire and back.
  auto decoded = actors::decode_bundles(actors::encode_bundles({*bundle}));
  REQUIRE(decoded.is_ok());
  REQUIRE(decoded->size() == 1);
  persistence::write_set ops;
  REQUIRE(ledger::batch_builder(ops).put_bundle(decoded->front(), 42).is_ok());
  REQUIRE(b->write(ops, true).is_ok());

  auto meta = b->get_agent("team/moving");
  REQUIRE(meta.is_ok());
  REQUIRE(meta->has_value());
  CHECK((*meta)->id == 42);
  auto ledger = b->read_ledger(42, 1, 10, "team/moving");
  REQUIRE(ledger.is_ok());
  REQUIRE(ledger->size() == 2);
  auto e = actors::event_from_record(ledger->at(1).second, "moved", actors::store_blobs(*b));
  REQUIRE_MESSAGE(e.is_ok(), e.error().to_string());
  CHECK(e->data["result"]["page"] == big);  // the blob came along
  auto inbox = b->read_inbox(42, "team/moving");
  REQUIRE(inbox.is_ok());
  CHECK(inbox->size() == 1);
  auto dd = b->find_message(42, "m1", "team/moving");
  REQUIRE(dd.is_ok());
  CHECK(dd->has_value());
  auto effects = b->running_effects();
  REQUIRE(effects.is_ok());
  REQUIRE(effects->size() == 1);
  CHECK(effects->front().agent_id == 42);
  auto timers = b->due_timers(10'000, 10);
  REQUIRE(timers.is_ok());
  REQUIRE(timers->size() == 1);
  CHECK(timers->front().agent_id == 42);
  // Nothing of the other agent came along.
  auto other = b->get_agent("team/staying");
  REQUIRE(other.is_ok());
  CHECK_FALSE(other->has_value());

  SUBCASE("the source's copy is erased, blobs aside") {
    persistence::write_set erase;
    ledger::batch_builder(erase).erase_bundle(*bundle);
    REQUIRE(a->write(erase, true).is_ok());
    auto gone = a->get_agent("team/moving");
    REQUIRE(gone.is_ok());
    CHECK_FALSE(gone->has_value());
    auto left = a->read_ledger(11, 1, 10, "team/moving");
    REQUIRE(left.is_ok());
    CHECK(left->empty());
    auto kept = a->get_agent("team/staying");
    REQUIRE(kept.is_ok());
    CHECK(kept->has_value());
  }
}

TEST_CASE("a truncated or forged bundle is refused, not trusted") {
  test::temp_dir dir;
  auto a = open_store(dir.str());
  write_agent(*a, "team/x", 3, std::string(2000, 'z'));
  // A raft key that begins as the agent's keys do is still not the agent's.
  REQUIRE(
      a->write({{family::raft, false, persistence::agent_seq_key(3, 1), "entry"}}, true).is_ok());
  auto bundle = actors::export_agent(*a, "team/x");
  REQUIRE(bundle.is_ok());
  CHECK(bundle->kvs.size() == 8);
  for (const auto& kv : bundle->kvs) CHECK(kv.cf != family::raft);
  std::string wire = actors::encode_bundles({*bundle});
  CHECK_FALSE(actors::decode_bundles(std::string_view(wire).substr(0, wire.size() / 2)).is_ok());
  // A bundle may not write the node's meta family (shard maps live there).
  actors::agent_bundle forged{"team/x", {{family::meta, false, "cluster/map", "x"}}};
  CHECK_FALSE(actors::decode_bundles(actors::encode_bundles({forged})).is_ok());
  // Nor the raft family: a group's log and state are never an agent's.
  actors::agent_bundle raft{"team/x", {{family::raft, false, std::string("\0\0\0\1e", 5), "x"}}};
  auto refused = actors::decode_bundles(actors::encode_bundles({raft}));
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.error().error_code() == code::corruption);
  auto missing = actors::export_agent(*a, "team/none");
  REQUIRE_FALSE(missing.is_ok());
  CHECK(missing.error().error_code() == code::not_found);
}
