#include <doctest/doctest.h>

#include "actors/ledger_codec.hpp"

using namespace keel;
using agent::json;

namespace {
agent::agent_state sample_state() {
  agent::agent_state s;
  s.type = "counter";
  s.status = "active";
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
