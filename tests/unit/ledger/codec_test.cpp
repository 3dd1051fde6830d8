#include <doctest/doctest.h>

#include <map>

#include "ledger/codec.hpp"

using namespace keel;
using agent::json;

namespace {
agent::agent_state sample_state() {
  agent::agent_state s;
  s.type = "counter";
  s.status = keel::agent_status::active;
  s.last_seq = 300;
  s.last_arrival = 140;
  s.next_timer_id = 9;
  s.timers[3] = {1'800'000'000'000, {{"add", 2}}};
  s.timers[8] = {-5, nullptr};
  s.data = {{"total", -17}, {"label", std::string(1000, 'x')}};
  return s;
}
}  // namespace

TEST_CASE("a snapshot record decodes to exactly the state it was made from") {
  auto s = sample_state();
  auto r = actors::snapshot_record(s, 1234);
  CHECK(r.type == agent::snapshot_record_type);
  CHECK(r.time_ms == 1234);
  auto back = actors::snapshot_from_record(r, "snapshot of t");
  REQUIRE_MESSAGE(back.is_ok(), back.error().to_string());
  CHECK(*back == s);
}

TEST_CASE("a truncated or mistyped snapshot is a corruption error naming it") {
  auto r = actors::snapshot_record(sample_state(), 0);
  for (std::size_t len = 0; len + 1 < r.payload.size(); len += 13) {
    persistence::record cut = r;
    cut.payload.resize(len);
    auto back = actors::snapshot_from_record(cut, "snapshot of t");
    REQUIRE_FALSE(back.is_ok());
    CHECK(back.error().error_code() == code::corruption);
    CHECK(back.error().message().find("snapshot of t") != std::string::npos);
  }
  persistence::record wrong = r;
  wrong.type = 2;
  CHECK(actors::snapshot_from_record(wrong, "w").error().error_code() == code::corruption);
}

TEST_CASE("events round-trip through records and unknown codes are refused") {
  agent::event e{agent::event_type::message_received, 77, {{"id", "m1"}, {"body", {{"add", 1}}}}};
  auto back = actors::event_from_record(actors::to_record(e), "ledger of t seq 1");
  REQUIRE(back.is_ok());
  CHECK(*back == e);
  auto rec = actors::to_record(e);
  rec.type = 0x7777;
  auto bad = actors::event_from_record(rec, "ledger of t seq 1");
  REQUIRE_FALSE(bad.is_ok());
  CHECK(bad.error().message().find("ledger of t seq 1") != std::string::npos);
}

TEST_CASE("large strings are stored once as blobs and read back through their hash") {
  const std::string big(4000, 'x');
  agent::event e{agent::event_type::effect_completed,
                 5,
                 {{"effect", 3}, {"result", {{"page", big}, {"again", big}, {"small", "s"}}}}};
  actors::blob_list blobs;
  auto rec = actors::to_record(e, &blobs);
  CHECK((rec.type & actors::blob_ref_flag) != 0);
  REQUIRE(blobs.size() == 2);
  CHECK(blobs[0].first == blobs[1].first);  // same content, same key
  CHECK(blobs[0].first.size() == 32);
  CHECK(rec.payload.size() < 200);  // the record holds references only
  std::map<std::string, std::string> store(blobs.begin(), blobs.end());
  actors::blob_reader reader =
      [&store](std::string_view key) -> keel::result<std::optional<std::string>> {
    auto it = store.find(std::string(key));
    if (it == store.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  };
  auto back = actors::event_from_record(rec, "test", reader);
  REQUIRE(back);
  CHECK(*back == e);

  SUBCASE("a missing blob is corruption, not a crash") {
    store.clear();
    auto r = actors::event_from_record(rec, "test", reader);
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == keel::code::corruption);
  }
  SUBCASE("a reference read without a blob reader is corruption") {
    auto r = actors::event_from_record(rec, "test");
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == keel::code::corruption);
  }
  SUBCASE("small events stay inline and unflagged") {
    actors::blob_list none;
    auto small =
        actors::to_record(agent::event{agent::event_type::timer_fired, 1, {{"timer", 1}}}, &none);
    CHECK(none.empty());
    CHECK((small.type & actors::blob_ref_flag) == 0);
  }
  SUBCASE("snapshots move the conversation's large strings to the same blobs") {
    agent::agent_state s;
    s.type = "t";
    s.last_seq = 9;
    s.data = {{"conversation", {{{"role", "tool"}, {"content", big}}}}};
    actors::blob_list sb;
    auto snap = actors::snapshot_record(s, 1, &sb);
    REQUIRE(sb.size() == 1);
    CHECK(sb[0].first == blobs[0].first);
    auto restored = actors::snapshot_from_record(snap, "snap", reader);
    REQUIRE(restored);
    CHECK(*restored == s);
  }
}
