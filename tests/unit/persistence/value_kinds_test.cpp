#include <doctest/doctest.h>

#include "support/corruption.hpp"

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "persistence/record.hpp"
#include "persistence/value_kinds.hpp"
#include "persistence/values.hpp"

using nlohmann::json;
namespace p = keel::persistence;

namespace {

constexpr std::string_view what = "directory entry of acct/alice";

std::string raw_value(p::value_type t, const json& payload) {
  return p::encode_record({static_cast<uint16_t>(t), 1, p::to_msgpack(payload)});
}

// The stored payload of an encoded value, to see the string on disk.
json stored(const std::string& bytes) {
  return *p::from_msgpack(p::decode_record(bytes, what)->payload, what);
}

}  // namespace

TEST_CASE("every agent origin round trips through the string stored for it") {
  const std::vector<std::pair<p::agent_origin, std::string>> all = {
      {p::agent_origin::spawned, ""},
      {p::agent_origin::imported, "import"},
      {p::agent_origin::forked, "fork"}};
  for (const auto& [o, text] : all) {
    CAPTURE(text);
    CHECK(p::to_string(o) == text);
    CHECK(p::agent_origin_from_string(text) == o);
    p::agent_meta m{7, "counter", keel::agent_status::active, 1};
    m.origin = o;
    if (o != p::agent_origin::spawned) m.parent = "acct/bob";
    const std::string bytes = p::encode(m, 0);
    // A spawned agent's entry has no origin field, as before the enum.
    if (o == p::agent_origin::spawned)
      CHECK(stored(bytes).count("origin") == 0);
    else
      CHECK(stored(bytes).at("origin") == text);
    auto d = p::decode_agent_meta(bytes, what);
    REQUIRE(d.is_ok());
    CHECK(d->origin == o);
  }
  CHECK_FALSE(p::agent_origin_from_string("imported").has_value());
}

TEST_CASE("an agent origin read from disk that names no origin is refused as corruption") {
  json j = {{"id", 1},           {"type", "counter"}, {"status", "active"}, {"created_ms", 0},
            {"snapshot_seq", 0}, {"clean", false},    {"origin", "clone"}};
  CHECK(keel::test::is_corruption_naming(
      p::decode_agent_meta(raw_value(p::value_type::agent_meta, j), what), what,
      "unknown agent origin 'clone'"));
}

TEST_CASE("every inbox entry kind round trips through the string stored for it") {
  for (auto k : {p::inbox_kind::message, p::inbox_kind::signal}) {
    const std::string text(p::to_string(k));
    CAPTURE(text);
    CHECK(p::inbox_kind_from_string(text) == k);
    p::inbox_entry e{"acct/alice", 3, k, "m-1", "", json{{"n", 1}}, ""};
    const std::string bytes = p::encode(e, 0);
    CHECK(stored(bytes).at("kind") == text);
    auto d = p::decode_inbox_entry(bytes, what);
    REQUIRE(d.is_ok());
    CHECK(d->kind == k);
  }
  CHECK(p::to_string(p::inbox_kind::message) == "message");
  CHECK(p::to_string(p::inbox_kind::signal) == "signal");
  CHECK_FALSE(p::inbox_kind_from_string("").has_value());
}

TEST_CASE("an inbox entry kind read from disk that names no kind is refused as corruption") {
  json j = {{"agent", "acct/alice"}, {"arrival", 3}, {"kind", "letter"},
            {"id", "m-1"},           {"from", ""},   {"body", nullptr}};
  CHECK(keel::test::is_corruption_naming(
      p::decode_inbox_entry(raw_value(p::value_type::inbox_entry, j), what), what,
      "unknown inbox entry kind 'letter'"));
}

TEST_CASE("every effect marker kind round trips through the string stored for it") {
  const std::vector<std::pair<p::effect_kind, std::string>> all = {
      {p::effect_kind::model, "model"},
      {p::effect_kind::http, "http"},
      {p::effect_kind::exec, "exec"},
      {p::effect_kind::worker, "worker"},
      {p::effect_kind::send_message, "send_message"},
      {p::effect_kind::spawn_agent, "spawn_agent"},
      {p::effect_kind::sleep, "sleep"},
      {p::effect_kind::ask_human, "ask_human"},
      {p::effect_kind::unknown, "unknown"}};
  for (const auto& [k, text] : all) {
    CAPTURE(text);
    CHECK(p::to_string(k) == text);
    CHECK(p::effect_kind_from_string(text) == k);
    p::effect_marker m{"acct/alice", k, "fetch", 1, "", 0, json::object()};
    const std::string bytes = p::encode(m, 0);
    CHECK(stored(bytes).at("kind") == text);
    auto d = p::decode_effect_marker(bytes, what);
    REQUIRE(d.is_ok());
    CHECK(d->kind == k);
  }
}

TEST_CASE("an effect marker kind read from disk that names no kind is refused as corruption") {
  json j = {{"agent", "acct/alice"}, {"kind", "telepathy"}, {"tool", "t"},         {"attempt", 1},
            {"queue", ""},           {"lease_ms", 0},       {"arguments", nullptr}};
  CHECK(keel::test::is_corruption_naming(
      p::decode_effect_marker(raw_value(p::value_type::effect_marker, j), what), what,
      "unknown effect kind 'telepathy'"));
}
