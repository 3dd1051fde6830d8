// The ledger's write vocabulary (ledger/writer.hpp): each method writes
// exactly the keys and value bytes the on-disk format fixes. Every expected
// op is built here from persistence/keys and the record encoders, the way
// the writers built them before the builder; a few keys are also spelled
// out byte by byte, so that a change of the key layout fails here too.

#include <doctest/doctest.h>

#include "base/bytes.hpp"
#include "base/sha256.hpp"
#include "ledger/codec.hpp"
#include "ledger/transfer.hpp"
#include "ledger/type_catalog.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/values.hpp"

using namespace keel;
using persistence::family;
using persistence::write_op;
using persistence::write_set;
using json = nlohmann::json;

namespace {

constexpr uint64_t id = 0x0102030405060708;
constexpr int64_t now = 1'700'000'000'123;

std::string be64(uint64_t v) {
  std::string out;
  put_u64_be(out, v);
  return out;
}

std::string hex(std::string_view s) {
  return to_hex(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// Doctest prints ops it compares; the bytes as hex say where they differ.
std::string show(const write_op& op) {
  return std::string(persistence::family_name(op.cf)) + (op.erase ? " erase " : " put ") +
         hex(op.key) + " = " + hex(op.value);
}

void check_ops(const write_set& got, const write_set& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(show(got[i]) == show(want[i]));
  }
}

std::string big(char c) {
  return std::string(actors::blob_threshold + 10, c);
}

}  // namespace

TEST_CASE("appended events are chained, keyed by agent id and seq, and spill their blobs last") {
  const agent::event small{agent::event_type::message_received, now, {{"id", "m1"}, {"body", 1}}};
  const agent::event large{
      agent::event_type::effect_completed, now + 1, {{"effect", 2}, {"result", big('a')}}};
  actors::chain_hash head_then{}, head_now{};
  head_then[0] = head_now[0] = 0x5a;  // a ledger that has records before seq 4

  write_set want;
  actors::blob_list blobs;
  want.push_back({family::ledger, false, persistence::agent_seq_key(id, 4),
                  persistence::encode_record(actors::chained_record(small, 4, head_then, &blobs))});
  want.push_back({family::ledger, false, persistence::agent_seq_key(id, 5),
                  persistence::encode_record(actors::chained_record(large, 5, head_then, &blobs))});
  actors::blob_ops(blobs, want);
  REQUIRE(blobs.size() == 1);

  write_set got;
  {
    ledger::batch_builder w(got);
    w.append_event(id, 4, small, head_now);
    w.append_event(id, 5, large, head_now);
    w.put_spilled_blobs();
  }
  check_ops(got, want);
  CHECK(head_now == head_then);
  CHECK(got[0].key == be64(id) + be64(4));
  CHECK(got[2].key.size() == 32);
}

TEST_CASE("spilled blobs the store holds already are left out") {
  const agent::event a{agent::event_type::effect_completed, now, {{"result", big('a')}}};
  const agent::event b{agent::event_type::effect_completed, now, {{"result", big('b')}}};
  write_set got;
  actors::chain_hash head{};
  const std::string stored_key = [] {
    auto h = sha256(big('a'));
    return std::string(reinterpret_cast<const char*>(h.data()), h.size());
  }();
  {
    ledger::batch_builder w(got);
    w.append_event(id, 1, a, head);
    w.append_event(id, 2, b, head);
    w.put_spilled_blobs([&](std::string_view key) { return key == stored_key; });
  }
  REQUIRE(got.size() == 3);
  CHECK(got[2].cf == family::blobs);
  CHECK(got[2].value == big('b'));
}

TEST_CASE("event and snapshot records, and their erasure, are keyed by agent id and seq") {
  agent::agent_state st;
  st.type = "counter";
  st.last_seq = 9;
  st.last_arrival = 3;
  st.timers[1] = {now + 500, {{"kind", "tick"}}};
  st.data = {{"count", 9}, {"notes", big('n')}};

  write_set want;
  actors::blob_list blobs;
  want.push_back({family::snapshots, false, persistence::agent_seq_key(id, 9),
                  persistence::encode_record(actors::snapshot_record(st, now, &blobs))});
  actors::blob_ops(blobs, want);
  want.push_back({family::snapshots, false, persistence::agent_seq_key(id, 12), "prepared"});
  want.push_back({family::snapshots, true, persistence::agent_seq_key(id, 4), {}});
  want.push_back({family::ledger, false, persistence::agent_seq_key(id, 13), "record"});
  want.push_back({family::ledger, true, persistence::agent_seq_key(id, 2), {}});

  write_set got;
  {
    ledger::batch_builder w(got);
    w.put_snapshot(id, 9, st, now);
    w.put_spilled_blobs();
    w.put_snapshot_record(id, 12, "prepared");
    w.erase_snapshot(id, 4);
    w.put_event_record(id, 13, "record");
    w.erase_event(id, 2);
  }
  check_ops(got, want);
  // The snapshot's long note went to a blob, written right after it.
  REQUIRE(blobs.size() == 1);
  CHECK(got[1].cf == family::blobs);
}

TEST_CASE("inbox and dedupe entries are written as the accept and consume paths wrote them") {
  const persistence::inbox_entry e{"acct/alice", 17, persistence::inbox_kind::message, "m-1", "bob",
                                   {{"n", 1}},   ""};
  const json reply = {{"ok", true}, {"body", {{"n", 2}}}};

  write_set want;
  want.push_back(
      {family::inbox, false, persistence::agent_seq_key(id, 17), persistence::encode(e, now)});
  want.push_back({family::dedupe, false, persistence::dedupe_key(id, "m-1"),
                  persistence::encode(persistence::dedupe_entry{17, false, nullptr}, now)});
  want.push_back({family::inbox, true, persistence::agent_seq_key(id, 17), {}});
  want.push_back(
      {family::dedupe, false, persistence::dedupe_key(id, "m-1"),
       persistence::encode(persistence::dedupe_entry{17, true, reply, now + 60'000}, now)});

  write_set got;
  ledger::batch_builder w(got);
  w.spill_to_inbox(id, e, now);
  w.mark_seen(id, "m-1", 17, now);
  w.remove_from_inbox(id, 17);
  w.mark_seen_with_reply(id, "m-1", 17, reply, now + 60'000, now);
  check_ops(got, want);
  CHECK(got[1].key == be64(id) + "m-1");
}

TEST_CASE("effect markers and timers are keyed as recovery and the timer service read them") {
  const persistence::effect_marker m{
      "acct/alice", persistence::effect_kind::http, "fetch", 2, "", 0, {{"url", "x"}}, 1, true};
  const persistence::timer_entry t{"acct/alice", {{"kind", "remind"}}};

  write_set want;
  want.push_back(
      {family::effects, false, persistence::agent_seq_key(id, 6), persistence::encode(m, now)});
  want.push_back({family::effects, true, persistence::agent_seq_key(id, 6), {}});
  want.push_back({family::timers, false, persistence::timer_key(now + 1000, id, 3),
                  persistence::encode(t, now)});
  want.push_back({family::timers, true, persistence::timer_key(now + 1000, id, 3), {}});

  write_set got;
  ledger::batch_builder w(got);
  w.start_effect(id, 6, m, now);
  w.end_effect(id, 6);
  w.put_timer(id, 3, now + 1000, t, now);
  w.erase_timer(id, 3, now + 1000);
  check_ops(got, want);
  CHECK(got[2].key == be64(static_cast<uint64_t>(now + 1000)) + be64(id) + be64(3));
}

TEST_CASE("an effect marker keeps the term of the leader that started it") {
  persistence::effect_marker m{
      "acct/alice", persistence::effect_kind::http, "fetch", 1, "", 0, {{"url", "x"}}, 0, false};
  m.term = 7;
  write_set got;
  ledger::batch_builder(got).start_effect(id, 6, m, now);
  REQUIRE(got.size() == 1);
  auto back = persistence::decode_effect_marker(got[0].value, "effect marker");
  REQUIRE_MESSAGE(back.is_ok(), back.error().to_string());
  CHECK(back->term == 7);
}

TEST_CASE("the directory entry is keyed by name and recognised in a batch") {
  persistence::agent_meta meta{id, "counter", agent_status::active, now - 5, 7, false};
  meta.phase = "idle";
  write_set got;
  ledger::batch_builder w(got);
  w.put_directory_entry("acct/alice", meta, now);
  check_ops(got, {{family::agents, false, "acct/alice", persistence::encode(meta, now)}});
  CHECK(ledger::batch_builder::is_directory_entry(got[0], "acct/alice"));
  CHECK_FALSE(ledger::batch_builder::is_directory_entry(got[0], "acct/bob"));
  CHECK_FALSE(ledger::batch_builder::is_ledger_or_inbox(got[0]));
  w.remove_from_inbox(id, 1);
  CHECK(ledger::batch_builder::is_ledger_or_inbox(got[1]));
}

TEST_CASE("a bundle is stored under the local id and erased without its shared keys") {
  actors::agent_bundle b;
  b.name = "acct/alice";
  persistence::agent_meta meta{id, "counter", agent_status::active, now - 5, 0, false};
  b.kvs.push_back({family::agents, false, b.name, persistence::encode(meta, now - 1)});
  b.kvs.push_back({family::ledger, false, persistence::agent_seq_key(id, 1), "event"});
  b.kvs.push_back({family::timers, false, persistence::timer_key(now, id, 2), "timer"});
  b.kvs.push_back({family::blobs, false, std::string(32, 'h'), "blob"});
  b.kvs.push_back({family::meta, false, actors::type_version_key("counter", "abc"), "type"});

  constexpr uint64_t local = 42;
  persistence::agent_meta here = meta;
  here.id = local;
  write_set want{{family::agents, false, b.name, persistence::encode(here, now - 1)},
                 {family::ledger, false, persistence::agent_seq_key(local, 1), "event"},
                 {family::timers, false, persistence::timer_key(now, local, 2), "timer"},
                 b.kvs[3],
                 b.kvs[4]};
  write_set got;
  ledger::batch_builder w(got);
  REQUIRE(w.put_bundle(b, local).is_ok());
  check_ops(got, want);

  write_set erased;
  ledger::batch_builder(erased).erase_bundle(b);
  check_ops(erased, {{family::agents, true, b.name, {}},
                     {family::ledger, true, persistence::agent_seq_key(id, 1), {}},
                     {family::timers, true, persistence::timer_key(now, id, 2), {}}});

  SUBCASE("a meta key other than a type version is refused") {
    b.kvs.push_back({family::meta, false, "cluster/map", "x"});
    write_set none;
    CHECK(ledger::batch_builder(none).put_bundle(b, local).error_code() == code::corruption);
  }
}

TEST_CASE("type versions, cluster state and outbox entries keep their keys and records") {
  const json spec = {{"name", "desk"}, {"model", "m"}};
  write_set want;
  want.push_back({family::meta, false, "type/desk/abc",
                  persistence::encode_object(
                      persistence::value_type::type_version,
                      {{"spec", spec}, {"source", "desk.json"}, {"added_ms", now}}, now)});
  want.push_back(
      {family::meta, false, "type_latest/desk",
       persistence::encode_object(persistence::value_type::type_latest, {{"hash", "abc"}}, now)});
  want.push_back(
      {family::meta, false, "cluster/map",
       persistence::encode_object(persistence::value_type::cluster_state, {{"epoch", 2}}, now)});
  want.push_back({family::meta, true, "cluster/next", {}});
  want.push_back(
      {family::outbox, false, be64(5),
       persistence::encode_object(persistence::value_type::outbox_entry, {{"to", "b"}}, now - 3)});
  want.push_back({family::outbox, true, be64(4), {}});

  write_set got;
  ledger::batch_builder w(got);
  w.put_type_version("desk", "abc", spec, "desk.json", now);
  w.put_type_latest("desk", "abc", now);
  w.put_cluster_state("cluster/map", {{"epoch", 2}}, now);
  w.erase_cluster_state("cluster/next");
  w.put_outbox_entry(be64(5), {{"to", "b"}}, now - 3);
  w.erase_outbox_entry(be64(4));
  check_ops(got, want);
  // Erasures carry no value.
  CHECK(got[3].erase);
  CHECK(got[5].erase);
}

TEST_CASE("a name lost to a salvage is reserved under lost_agent/ as plain JSON") {
  write_set got;
  ledger::batch_builder(got).reserve_lost_name("acct/alice",
                                               {{"salvage", "s-1"}, {"report", "/r.json"}});
  check_ops(got, {{family::meta, false, "lost_agent/acct/alice",
                   R"({"report":"/r.json","salvage":"s-1"})"}});
  CHECK(ledger::lost_name_key("acct/alice") == got[0].key);
}
