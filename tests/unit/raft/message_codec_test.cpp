// The binary encoding of raft messages and configurations the io sends:
// every kind survives a round trip field by field, and damaged input is
// refused without leaking what a partial decode allocated.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "net/raft/message_codec.hpp"

using namespace keel;
using namespace keel::raft;

namespace {

raft_message request_vote() {
  raft_message m{};
  m.type = RAFT_IO_REQUEST_VOTE;
  m.request_vote = {7, 3, 1'000'000'000'123ULL, 6, true, true};
  return m;
}

raft_message request_vote_result() {
  raft_message m{};
  m.type = RAFT_IO_REQUEST_VOTE_RESULT;
  m.request_vote_result = {9, true, raft_tribool_false};
  return m;
}

raft_message append_entries_result() {
  raft_message m{};
  m.type = RAFT_IO_APPEND_ENTRIES_RESULT;
  m.append_entries_result = {12, 40, 0xFFFF'FFFF'FFFFULL};
  return m;
}

raft_message timeout_now() {
  raft_message m{};
  m.type = RAFT_IO_TIMEOUT_NOW;
  m.timeout_now = {5, 77, 4};
  return m;
}

// Entries and snapshot parts point into these (the encoder only reads them).
std::string payload_a = "first command", payload_b(300, 'x'), payload_c;
std::string snapshot_data = "marker";
raft_entry sent_entries[3] = {
    {4, RAFT_COMMAND, {payload_a.data(), payload_a.size()}, nullptr},
    {4, RAFT_BARRIER, {payload_b.data(), payload_b.size()}, nullptr},
    {5, RAFT_CHANGE, {payload_c.data(), payload_c.size()}, nullptr},
};

raft_message append_entries() {
  raft_message m{};
  m.type = RAFT_IO_APPEND_ENTRIES;
  m.append_entries = {5, 10, 4, 9, sent_entries, 3};
  return m;
}

struct install_message {
  raft_message m{};
  install_message() {
    m.type = RAFT_IO_INSTALL_SNAPSHOT;
    auto& s = m.install_snapshot;
    s.term = 8;
    s.last_index = 512;
    s.last_term = 7;
    raft_configuration_init(&s.conf);
    REQUIRE(raft_configuration_add(&s.conf, 1, "node-a", RAFT_VOTER) == 0);
    REQUIRE(raft_configuration_add(&s.conf, 2, "node-b", RAFT_STANDBY) == 0);
    REQUIRE(raft_configuration_add(&s.conf, 0x1234'5678'9ABCULL, "node-c", RAFT_SPARE) == 0);
    s.conf_index = 300;
    s.data = {snapshot_data.data(), snapshot_data.size()};
  }
  ~install_message() { raft_configuration_close(&m.install_snapshot.conf); }
  install_message(const install_message&) = delete;
  install_message& operator=(const install_message&) = delete;
};

decoded_message round_trip(const raft_message& m, raft_id from) {
  const uint64_t stamp = 0x0102'0304'0506'0708ULL + from;
  auto d = decode_message(encode_message(m, from, stamp));
  REQUIRE(d.is_ok());
  CHECK(d->from == from);
  CHECK(d->stamp == stamp);
  CHECK(d->msg.type == m.type);
  return std::move(d).value();
}

std::string text(const raft_buffer& b) {
  return {static_cast<const char*>(b.base), b.len};
}

}  // namespace

TEST_CASE("every raft message kind survives an encode and decode with all its fields") {
  SUBCASE("request_vote") {
    auto d = round_trip(request_vote(), 3);
    const auto& v = d.msg.request_vote;
    CHECK(v.term == 7);
    CHECK(v.candidate_id == 3);
    CHECK(v.last_log_index == 1'000'000'000'123ULL);
    CHECK(v.last_log_term == 6);
    CHECK(v.disrupt_leader);
    CHECK(v.pre_vote);
  }
  SUBCASE("request_vote_result") {
    auto d = round_trip(request_vote_result(), 2);
    CHECK(d.msg.request_vote_result.term == 9);
    CHECK(d.msg.request_vote_result.vote_granted);
    CHECK(d.msg.request_vote_result.pre_vote == raft_tribool_false);
  }
  SUBCASE("append_entries_result") {
    auto d = round_trip(append_entries_result(), 1);
    CHECK(d.msg.append_entries_result.term == 12);
    CHECK(d.msg.append_entries_result.rejected == 40);
    CHECK(d.msg.append_entries_result.last_log_index == 0xFFFF'FFFF'FFFFULL);
  }
  SUBCASE("timeout_now") {
    auto d = round_trip(timeout_now(), 4);
    CHECK(d.msg.timeout_now.term == 5);
    CHECK(d.msg.timeout_now.last_log_index == 77);
    CHECK(d.msg.timeout_now.last_log_term == 4);
  }
  SUBCASE("append_entries, with its entries in one raft_malloc'd batch") {
    auto d = round_trip(append_entries(), 1);
    auto& a = d.msg.append_entries;
    CHECK(a.term == 5);
    CHECK(a.prev_log_index == 10);
    CHECK(a.prev_log_term == 4);
    CHECK(a.leader_commit == 9);
    REQUIRE(a.n_entries == 3);
    for (unsigned i = 0; i < 3; ++i) {
      CAPTURE(i);
      CHECK(a.entries[i].term == sent_entries[i].term);
      CHECK(a.entries[i].type == sent_entries[i].type);
      CHECK(text(a.entries[i].buf) == text(sent_entries[i].buf));
      CHECK(a.entries[i].batch == a.entries[0].batch);
    }
    CHECK(a.entries[0].buf.base == a.entries[0].batch);
    release_message(d.msg);
    CHECK(a.entries == nullptr);
  }
  SUBCASE("append_entries without entries (a heartbeat)") {
    raft_message m = append_entries();
    m.append_entries.n_entries = 0;
    m.append_entries.entries = nullptr;
    auto d = round_trip(m, 1);
    CHECK(d.msg.append_entries.n_entries == 0);
    CHECK(d.msg.append_entries.entries == nullptr);
    CHECK(d.msg.append_entries.leader_commit == 9);
  }
  SUBCASE("install_snapshot, with its configuration and data") {
    install_message im;
    auto d = round_trip(im.m, 1);
    auto& s = d.msg.install_snapshot;
    CHECK(s.term == 8);
    CHECK(s.last_index == 512);
    CHECK(s.last_term == 7);
    CHECK(s.conf_index == 300);
    CHECK(text(s.data) == "marker");
    REQUIRE(s.conf.n == 3);
    CHECK(s.conf.servers[0].id == 1);
    CHECK(std::string(s.conf.servers[0].address) == "node-a");
    CHECK(s.conf.servers[0].role == RAFT_VOTER);
    CHECK(s.conf.servers[1].role == RAFT_STANDBY);
    CHECK(s.conf.servers[2].id == 0x1234'5678'9ABCULL);
    CHECK(std::string(s.conf.servers[2].address) == "node-c");
    CHECK(s.conf.servers[2].role == RAFT_SPARE);
    release_message(d.msg);
  }
}

TEST_CASE("a raft message cut short anywhere, or with bytes after it, is refused as corruption") {
  install_message im;
  std::vector<raft_message> all = {
      request_vote(), request_vote_result(), append_entries(), append_entries_result(),
      im.m,           timeout_now()};
  for (const auto& m : all) {
    CAPTURE(m.type);
    std::string bytes = encode_message(m, 2);
    // Every proper prefix is refused (and frees whatever it had decoded,
    // which the sanitizer build checks).
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CAPTURE(n);
      auto d = decode_message(std::string_view(bytes).substr(0, n));
      REQUIRE_FALSE(d.is_ok());
      CHECK(d.error().error_code() == code::corruption);
    }
    auto longer = decode_message(bytes + "!");
    REQUIRE_FALSE(longer.is_ok());
    CHECK(longer.error().error_code() == code::corruption);
    auto whole = decode_message(bytes);
    REQUIRE(whole.is_ok());
    release_message(whole->msg);
  }
}

TEST_CASE("a raft message of another format version or an unknown kind is refused") {
  std::string bytes = encode_message(timeout_now(), 1);
  std::string other_version = bytes;
  other_version[0] = 1;  // the format before lease stamps
  auto v = decode_message(other_version);
  REQUIRE_FALSE(v.is_ok());
  CHECK(v.error().error_code() == code::corruption);
  CHECK(v.error().message().find("format 1") != std::string::npos);
  std::string other_kind = bytes;
  other_kind[1] = 9;
  auto k = decode_message(other_kind);
  REQUIRE_FALSE(k.is_ok());
  CHECK(k.error().error_code() == code::corruption);
}

TEST_CASE("a configuration with a bad role, a zero id or a repeated id does not decode") {
  raft_configuration conf;
  raft_configuration_init(&conf);
  REQUIRE(raft_configuration_add(&conf, 1, "a", RAFT_VOTER) == 0);
  REQUIRE(raft_configuration_add(&conf, 2, "b", RAFT_VOTER) == 0);
  std::string good;
  encode_configuration(good, conf);
  raft_configuration_close(&conf);

  std::string_view in = good;
  raft_configuration back;
  REQUIRE(decode_configuration(in, &back).is_ok());
  CHECK(back.n == 2);
  CHECK(in.empty());
  raft_configuration_close(&back);

  // Layout: n(4), then id(8) role(1) len(4) address per server.
  SUBCASE("role") {
    std::string bad = good;
    bad[4 + 8] = 7;
    std::string_view v = bad;
    CHECK(decode_configuration(v, &back).error_code() == code::corruption);
  }
  SUBCASE("zero id") {
    std::string bad = good;
    std::memset(bad.data() + 4, 0, 8);
    std::string_view v = bad;
    CHECK(decode_configuration(v, &back).error_code() == code::corruption);
  }
  SUBCASE("repeated id") {
    std::string bad = good;
    bad[4 + 13 + 1 + 7] = 1;  // second server's id becomes 1
    std::string_view v = bad;
    CHECK(decode_configuration(v, &back).error_code() == code::corruption);
  }
  CHECK(back.n == 0);
}
