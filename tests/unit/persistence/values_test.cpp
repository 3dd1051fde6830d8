#include <doctest/doctest.h>

#include "support/corruption.hpp"

#include <string>

#include <nlohmann/json.hpp>

#include "base/sha256.hpp"
#include "persistence/record.hpp"
#include "persistence/values.hpp"

using keel::code;
using nlohmann::json;
namespace p = keel::persistence;

namespace {

constexpr std::string_view what = "inbox of acct/alice seq 3";

template <class T>
bool is_corruption(const keel::result<T>& r, std::string_view why = {}) {
  return keel::test::is_corruption_naming(r, what, why);
}

p::agent_meta sample_meta() {
  return {42, "counter", keel::agent_status::active, 1'700'000'000'123};
}
p::inbox_entry sample_inbox() {
  return {"acct/alice",
          17,
          p::inbox_kind::message,
          "msg-1",
          "acct/bob",
          json{{"add", 5}, {"nested", {1, "two", nullptr, 3.5, {{"k", false}}}}},
          "s-n1-7"};
}
p::dedupe_entry sample_dedupe() {
  return {9, true, json{{"total", 5}}};
}
p::timer_entry sample_timer() {
  return {"acct/alice", json{{"add", -3}}};
}

// A record of the given type whose payload is the given MessagePack bytes.
std::string raw_value(p::value_type t, std::string payload) {
  return p::encode_record({static_cast<uint16_t>(t), 1, std::move(payload)});
}

}  // namespace

TEST_CASE("agent_meta round trips") {
  auto v = sample_meta();
  std::string bytes = p::encode(v, 555);
  auto rec = p::decode_record(bytes, what);
  REQUIRE(rec.is_ok());
  CHECK(rec->type == static_cast<uint16_t>(p::value_type::agent_meta));
  CHECK(rec->time_ms == 555);
  auto d = p::decode_agent_meta(bytes, what);
  REQUIRE(d.is_ok());
  CHECK(d->id == v.id);
  CHECK(d->type == v.type);
  CHECK(d->status == v.status);
  CHECK(d->created_ms == v.created_ms);

  SUBCASE("the listing fields, and an entry of an earlier version without them") {
    CHECK(d->phase.empty());
    CHECK_FALSE(d->paused);
    // Absent when unset: an entry of an earlier version reads the same.
    CHECK(p::from_msgpack(p::decode_record(bytes, what)->payload, what)->count("phase") == 0);
    auto m = v;
    m.phase = "waiting_approval";
    m.paused = true;
    auto d2 = p::decode_agent_meta(p::encode(m, 0), what);
    REQUIRE(d2.is_ok());
    CHECK(d2->phase == "waiting_approval");
    CHECK(d2->paused);
    CHECK(*d2 == m);
  }
  SUBCASE("negative created time and largest id") {
    p::agent_meta m{UINT64_MAX, "", keel::agent_status::failed, -5};
    auto d2 = p::decode_agent_meta(p::encode(m, 0), what);
    REQUIRE(d2.is_ok());
    CHECK(d2->id == UINT64_MAX);
    CHECK(d2->type.empty());
    CHECK(d2->status == keel::agent_status::failed);
    CHECK(d2->created_ms == -5);
  }
}

TEST_CASE("inbox_entry round trips, body included") {
  auto v = sample_inbox();
  SUBCASE("message with a nested body") {}
  SUBCASE("signal with a null body") {
    v.kind = p::inbox_kind::signal;
    v.id = "reset";
    v.body = nullptr;
  }
  SUBCASE("large arrival and a string body") {
    v.arrival = UINT64_MAX;
    v.body = std::string(5000, 'z');
  }
  auto bytes = p::encode(v, 1);
  CHECK(p::decode_record(bytes, what)->type == static_cast<uint16_t>(p::value_type::inbox_entry));
  auto d = p::decode_inbox_entry(bytes, what);
  REQUIRE(d.is_ok());
  CHECK(d->agent == v.agent);
  CHECK(d->arrival == v.arrival);
  CHECK(d->kind == v.kind);
  CHECK(d->id == v.id);
  CHECK(d->from == v.from);
  CHECK(d->body == v.body);
}

TEST_CASE("dedupe_entry round trips before and after processing") {
  p::dedupe_entry v;
  SUBCASE("accepted, not processed") {
    v = {3, false, nullptr};
  }
  SUBCASE("processed with a reply") {
    v = sample_dedupe();
  }
  auto d = p::decode_dedupe_entry(p::encode(v, 1), what);
  REQUIRE(d.is_ok());
  CHECK(d->arrival == v.arrival);
  CHECK(d->processed == v.processed);
  CHECK(d->reply == v.reply);
}

TEST_CASE("timer_entry round trips") {
  auto v = sample_timer();
  auto d = p::decode_timer_entry(p::encode(v, 1), what);
  REQUIRE(d.is_ok());
  CHECK(d->agent == "acct/alice");
  CHECK(d->payload == json{{"add", -3}});
}

TEST_CASE("decoding one value type as another is corruption") {
  const std::string meta = p::encode(sample_meta(), 1);
  const std::string inbox = p::encode(sample_inbox(), 1);
  const std::string dedupe = p::encode(sample_dedupe(), 1);
  const std::string timer = p::encode(sample_timer(), 1);

  SUBCASE("as agent_meta") {
    for (const auto* b : {&inbox, &dedupe, &timer})
      CHECK(is_corruption(p::decode_agent_meta(*b, what), "unexpected record type"));
  }
  SUBCASE("as inbox_entry") {
    for (const auto* b : {&meta, &dedupe, &timer})
      CHECK(is_corruption(p::decode_inbox_entry(*b, what), "unexpected record type"));
  }
  SUBCASE("as dedupe_entry") {
    for (const auto* b : {&meta, &inbox, &timer})
      CHECK(is_corruption(p::decode_dedupe_entry(*b, what), "unexpected record type"));
  }
  SUBCASE("as timer_entry") {
    for (const auto* b : {&meta, &inbox, &dedupe})
      CHECK(is_corruption(p::decode_timer_entry(*b, what), "unexpected record type"));
  }
  SUBCASE("an agent event record (type < 0xF000) as any value") {
    std::string event = p::encode_record({2, 1, p::to_msgpack({{"id", 1}})});
    CHECK(is_corruption(p::decode_agent_meta(event, what), "unexpected record type"));
    CHECK(is_corruption(p::decode_timer_entry(event, what), "unexpected record type"));
  }
}

TEST_CASE("a value record with a broken or incomplete payload is corruption") {
  SUBCASE("payload is not MessagePack") {
    CHECK(
        is_corruption(p::decode_agent_meta(raw_value(p::value_type::agent_meta, "\xc1\xc1"), what),
                      "MessagePack"));
  }
  SUBCASE("payload has trailing bytes after the MessagePack value") {
    CHECK(is_corruption(p::decode_timer_entry(
        raw_value(p::value_type::timer_entry,
                  p::to_msgpack({{"agent", "a"}, {"payload", nullptr}}) + "x"),
        what)));
  }
  SUBCASE("payload is not an object") {
    CHECK(is_corruption(
        p::decode_dedupe_entry(raw_value(p::value_type::dedupe_entry, p::to_msgpack({1, 2})), what),
        "not an object"));
  }
  SUBCASE("a field is missing") {
    json j = {{"id", 1}, {"type", "counter"}, {"created_ms", 0}};  // no status
    CHECK(is_corruption(
        p::decode_agent_meta(raw_value(p::value_type::agent_meta, p::to_msgpack(j)), what)));
  }
  SUBCASE("the status names no status an agent can have") {
    json j = {{"id", 1},         {"type", "counter"}, {"status", "sleeping"},
              {"created_ms", 0}, {"snapshot_seq", 0}, {"clean", false}};
    CHECK(is_corruption(
        p::decode_agent_meta(raw_value(p::value_type::agent_meta, p::to_msgpack(j)), what),
        "unknown agent status 'sleeping'"));
  }
  SUBCASE("a field has the wrong type") {
    json j = {{"arrival", "three"}, {"processed", false}, {"reply", nullptr}};
    CHECK(is_corruption(
        p::decode_dedupe_entry(raw_value(p::value_type::dedupe_entry, p::to_msgpack(j)), what)));
  }
  SUBCASE("the record frame itself is damaged") {
    std::string bytes = p::encode(sample_inbox(), 1);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
    CHECK(is_corruption(p::decode_inbox_entry(bytes, what), "checksum"));
  }
}

TEST_CASE("MessagePack helpers round trip JSON and report garbage as corruption") {
  json j = {{"a", 1}, {"b", {1, 2, 3}}, {"c", nullptr}, {"d", "text"}, {"e", -7}, {"f", true}};
  auto back = p::from_msgpack(p::to_msgpack(j), what);
  REQUIRE(back.is_ok());
  CHECK(*back == j);
  CHECK(is_corruption(p::from_msgpack("", what), "MessagePack"));
  CHECK(is_corruption(p::from_msgpack("\xdc\xff", what), "MessagePack"));  // array16 cut short
}

TEST_CASE("an effect marker of term 0 encodes as before terms existed, and a term round trips") {
  p::effect_marker m{"acct/alice", p::effect_kind::http, "fetch", 2, "", 0, json{{"url", "x"}}, 1,
                     true};
  // The bytes a marker had before it carried a term (pinned from that
  // release): single-node data must not change.
  const std::string before =
      "01f0050000018bcfe5687b6c89a56167656e74aa616363742f616c696365a9617267756d656e747381a375726c"
      "a178a7617474656d707402aa6964656d706f74656e74c3a46b696e64a468747470a86c656173655f6d7300ac6e"
      "6f64655f6372617368657301a57175657565a0a4746f6f6ca566657463684f110363";
  const std::string bytes = p::encode(m, 1'700'000'000'123);
  CHECK(keel::to_hex(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())) ==
        before);
  auto old = p::decode_effect_marker(bytes, what);
  REQUIRE(old.is_ok());
  CHECK(old->term == 0);

  m.term = 7;
  const std::string with_term = p::encode(m, 1'700'000'000'123);
  CHECK(with_term != bytes);
  auto back = p::decode_effect_marker(with_term, what);
  REQUIRE_MESSAGE(back.is_ok(), back.error().to_string());
  CHECK(back->term == 7);
  CHECK(back->agent == "acct/alice");
  CHECK(back->tool == "fetch");
  CHECK(back->node_crashes == 1);
  CHECK(back->idempotent);
  CHECK(back->arguments == json{{"url", "x"}});
}
