#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/cluster_config.hpp"
#include "support/temp_dir.hpp"

using keel::code;
using keel::config::cluster_config;
using keel::config::cluster_member;
using keel::config::shard_map;
using nlohmann::json;
namespace cfg = keel::config;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

cluster_member member(const std::string& id, uint16_t port) {
  cluster_member m;
  m.id = id;
  m.host = "10.0.0.1";
  m.cluster_port = port;
  m.http_host = "10.0.0.1";
  m.http_port = static_cast<uint16_t>(port + 1000);
  return m;
}

// A minimal valid config as JSON; tests change one thing at a time.
json minimal_json() {
  return json::parse(R"({
    "cluster_id": "prod-eu",
    "secret": "0123456789abcdef",
    "members": [{"id": "node-1", "host": "10.0.0.1", "cluster_port": 7001, "http_port": 8001}]
  })");
}

cluster_config valid_config() {
  cluster_config c;
  c.cluster_id = "prod-eu";
  c.secret = "0123456789abcdef";
  c.members = {member("node-1", 7001), member("node-2", 7002)};
  return c;
}

std::vector<cluster_member> members(int n) {
  std::vector<cluster_member> out;
  for (int i = 1; i <= n; ++i)
    out.push_back(member("node-" + std::to_string(i), static_cast<uint16_t>(7000 + i)));
  return out;
}

}  // namespace

// ---- parsing ---------------------------------------------------------------

TEST_CASE("cluster_from_json reads every documented key") {
  json j = json::parse(R"({
    "cluster_id": "prod-eu", "shards": 1024, "secret": "0123456789abcdefghij",
    "heartbeat_ms": 200, "connection_timeout_ms": 1500, "reconnect_min_ms": 50,
    "reconnect_max_ms": 2000, "forward_timeout_ms": 7000,
    "replication": 2, "groups": 64, "election_timeout_ms": 1500, "raft_heartbeat_ms": 150,
    "leader_wait_ms": 3000,
    "tls": {"certificate": "/etc/keel/node.pem", "key": "/etc/keel/node.key",
            "ca": "/etc/keel/ca.pem"},
    "members": [
      {"id": "node-1", "host": "10.0.0.1", "cluster_port": 7001,
       "http_host": "0.0.0.0", "http_port": 8001},
      {"id": "node-2", "host": "10.0.0.2", "cluster_port": 7001, "http_port": 8001}
    ]})");
  auto r = cfg::cluster_from_json(j, "cluster.json");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK(r->cluster_id == "prod-eu");
  CHECK(r->shards == 1024);
  CHECK(r->secret == "0123456789abcdefghij");
  CHECK(r->heartbeat_ms == 200);
  CHECK(r->connection_timeout_ms == 1500);
  CHECK(r->reconnect_min_ms == 50);
  CHECK(r->reconnect_max_ms == 2000);
  CHECK(r->forward_timeout_ms == 7000);
  CHECK(r->replication == 2);
  CHECK(r->groups == 64);
  CHECK(r->election_timeout_ms == 1500);
  CHECK(r->raft_heartbeat_ms == 150);
  CHECK(r->leader_wait_ms == 3000);
  CHECK(r->tls.enabled());
  CHECK(r->tls.certificate == "/etc/keel/node.pem");
  CHECK(r->tls.key == "/etc/keel/node.key");
  CHECK(r->tls.ca == "/etc/keel/ca.pem");
  REQUIRE(r->members.size() == 2);
  CHECK(r->members[0].id == "node-1");
  CHECK(r->members[0].host == "10.0.0.1");
  CHECK(r->members[0].cluster_port == 7001);
  CHECK(r->members[0].http_host == "0.0.0.0");
  CHECK(r->members[0].http_port == 8001);
  CHECK(r->members[1].id == "node-2");
  CHECK(r->members[1].http_host == "10.0.0.2");  // defaults to host
}

TEST_CASE("cluster_from_json fills in the documented defaults") {
  auto r = cfg::cluster_from_json(minimal_json(), "cluster.json");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK(r->shards == 256);
  CHECK(r->heartbeat_ms == 500);
  CHECK(r->connection_timeout_ms == 3000);
  CHECK(r->reconnect_min_ms == 100);
  CHECK(r->reconnect_max_ms == 5000);
  CHECK(r->forward_timeout_ms == 10'000);
  CHECK(r->replication == 0);
  CHECK(r->groups == 32);
  CHECK(r->election_timeout_ms == 1000);
  CHECK(r->raft_heartbeat_ms == 100);
  CHECK(r->leader_wait_ms == 5000);
  CHECK_FALSE(r->tls.enabled());
  REQUIRE(r->members.size() == 1);
  CHECK(r->members[0].http_host == "10.0.0.1");
}

TEST_CASE("cluster_from_json refuses an unknown key and names it") {
  SUBCASE("at the top") {
    json j = minimal_json();
    j["shard_count"] = 64;
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), "cluster.json"));
    CHECK(contains(r.error().message(), "\"shard_count\""));
  }
  SUBCASE("in a member") {
    json j = minimal_json();
    j["members"][0]["cluster"] = "10.0.0.1:7001";
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "members"));
    CHECK(contains(r.error().message(), "\"cluster\""));
  }
  SUBCASE("in tls") {
    json j = minimal_json();
    j["tls"] = {{"cert", "a.pem"}};
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "\"cert\""));
  }
}

TEST_CASE("cluster_from_json refuses a value of the wrong type and names the key") {
  SUBCASE("a string where a number belongs") {
    json j = minimal_json();
    j["heartbeat_ms"] = "500";
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), "cluster.json: \"heartbeat_ms\""));
  }
  SUBCASE("a negative number") {
    json j = minimal_json();
    j["shards"] = -1;
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "\"shards\""));
  }
  SUBCASE("a port beyond 65535") {
    json j = minimal_json();
    j["members"][0]["cluster_port"] = 70000;
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "\"cluster_port\""));
  }
  SUBCASE("members as an object") {
    json j = minimal_json();
    j["members"] = json::object();
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "\"members\""));
  }
  SUBCASE("not an object at all") {
    auto r = cfg::cluster_from_json(json::array(), "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "cluster.json"));
  }
}

TEST_CASE("cluster_from_json requires a cluster id") {
  json j = minimal_json();
  j.erase("cluster_id");
  auto r = cfg::cluster_from_json(j, "cluster.json");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::invalid_argument);
  CHECK(contains(r.error().message(), "cluster_id"));
}

TEST_CASE("cluster_from_json refuses a secret shorter than 16 bytes without echoing it") {
  json j = minimal_json();
  j["secret"] = "hunter2-hunter2";  // 15 bytes
  auto r = cfg::cluster_from_json(j, "cluster.json");
  REQUIRE_FALSE(r.is_ok());
  CHECK(contains(r.error().message(), "secret"));
  CHECK(contains(r.error().message(), "16"));
  CHECK_FALSE(contains(r.error().message(), "hunter2"));
}

TEST_CASE("cluster_from_json reads the secret from secret_file without trailing newlines") {
  keel::test::temp_dir dir("keel-cluster");
  std::string path = (dir.path() / "secret").string();
  json j = minimal_json();
  j.erase("secret");

  SUBCASE("the file's content is the secret") {
    write_file(path, "0123456789abcdef-from-file\n\n");
    j["secret_file"] = path;
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK(r->secret == "0123456789abcdef-from-file");
  }
  SUBCASE("a CRLF line ending is removed too") {
    write_file(path, "0123456789abcdef\r\n");
    j["secret_file"] = path;
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK(r->secret == "0123456789abcdef");
  }
  SUBCASE("a short secret in the file is refused") {
    write_file(path, "short\n");
    j["secret_file"] = path;
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "at least 16 bytes"));
  }
  SUBCASE("a missing file is an error naming the key and the path") {
    j["secret_file"] = (dir.path() / "absent").string();
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "\"secret_file\""));
    CHECK(contains(r.error().message(), "absent"));
  }
  SUBCASE("secret and secret_file together are refused") {
    write_file(path, "0123456789abcdef\n");
    j["secret_file"] = path;
    j["secret"] = "0123456789abcdef";
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "not both"));
  }
  SUBCASE("neither secret nor secret_file is refused") {
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "\"secret\""));
  }
}

TEST_CASE("cluster_from_json refuses duplicate member ids") {
  json j = minimal_json();
  j["members"].push_back(
      {{"id", "node-1"}, {"host", "10.0.0.2"}, {"cluster_port", 7001}, {"http_port", 8001}});
  auto r = cfg::cluster_from_json(j, "cluster.json");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::invalid_argument);
  CHECK(contains(r.error().message(), "cluster.json"));
  CHECK(contains(r.error().message(), "'node-1' appears twice"));
}

TEST_CASE("cluster_from_json refuses tls with only some of its files") {
  json j = minimal_json();
  j["tls"] = {{"certificate", "node.pem"}, {"key", "node.key"}};
  auto r = cfg::cluster_from_json(j, "cluster.json");
  REQUIRE_FALSE(r.is_ok());
  CHECK(contains(r.error().message(), "tls"));
  CHECK(contains(r.error().message(), "together"));
}

TEST_CASE("cluster_from_json requires a member's id and ports") {
  for (const char* key : {"id", "cluster_port", "http_port"}) {
    CAPTURE(key);
    json j = minimal_json();
    j["members"][0].erase(key);
    auto r = cfg::cluster_from_json(j, "cluster.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), std::string("missing \"") + key + "\""));
  }
}

TEST_CASE("load_cluster_file reads a file and reports unreadable or broken ones") {
  keel::test::temp_dir dir("keel-cluster");
  std::string path = (dir.path() / "cluster.json").string();
  SUBCASE("a valid file") {
    write_file(path, minimal_json().dump());
    auto r = cfg::load_cluster_file(path);
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK(r->cluster_id == "prod-eu");
  }
  SUBCASE("invalid JSON") {
    write_file(path, "{\"cluster_id\": ");
    auto r = cfg::load_cluster_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), path));
  }
  SUBCASE("a missing file") {
    auto r = cfg::load_cluster_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::not_found);
  }
}

// ---- validate ---------------------------------------------------------------

TEST_CASE("validate accepts a sound cluster config") {
  CHECK(cfg::validate(valid_config()).is_ok());
}

TEST_CASE("validate refuses each broken rule with a message naming it") {
  cluster_config c = valid_config();
  std::string expect;
  SUBCASE("empty cluster id") {
    c.cluster_id = "";
    expect = "cluster_id";
  }
  SUBCASE("cluster id with a slash") {
    c.cluster_id = "prod/eu";
    expect = "cluster_id";
  }
  SUBCASE("no shards") {
    c.shards = 0;
    expect = "shards";
  }
  SUBCASE("too many shards") {
    c.shards = 65537;
    expect = "shards";
  }
  SUBCASE("heartbeat below 10 ms") {
    c.heartbeat_ms = 9;
    expect = "heartbeat_ms";
  }
  SUBCASE("timeout not above the heartbeat") {
    c.heartbeat_ms = 500;
    c.connection_timeout_ms = 500;
    expect = "connection_timeout_ms";
  }
  SUBCASE("zero reconnect backoff") {
    c.reconnect_min_ms = 0;
    expect = "reconnect_min_ms";
  }
  SUBCASE("reconnect min above max") {
    c.reconnect_min_ms = 6000;
    c.reconnect_max_ms = 5000;
    expect = "reconnect_max_ms";
  }
  SUBCASE("no members") {
    c.members.clear();
    expect = "members";
  }
  SUBCASE("member id with a space") {
    c.members[1].id = "node 2";
    expect = "member id 'node 2'";
  }
  SUBCASE("member id of 65 characters") {
    c.members[1].id = std::string(65, 'n');
    expect = "longer than 64";
  }
  SUBCASE("member without host") {
    c.members[1].host = "";
    expect = "host is empty";
  }
  SUBCASE("member without cluster port") {
    c.members[1].cluster_port = 0;
    expect = "cluster_port";
  }
  SUBCASE("member without http port") {
    c.members[1].http_port = 0;
    expect = "http_port";
  }
  SUBCASE("two members on one cluster address") {
    c.members[1].cluster_port = c.members[0].cluster_port;
    expect = "10.0.0.1:7001";
  }
  SUBCASE("replication above 7") {
    c.replication = 8;
    expect = "replication must be from 0 (off) to 7";
  }
  SUBCASE("replication above the member count") {
    c.replication = static_cast<uint32_t>(c.members.size()) + 1;
    expect = "needs at least as many members";
  }
  SUBCASE("no groups") {
    c.groups = 0;
    expect = "groups must be";
  }
  SUBCASE("more groups than shards") {
    c.shards = 16;
    c.groups = 32;
    expect = "at most shards (16)";
  }
  SUBCASE("an election timeout shorter than three heartbeats") {
    c.raft_heartbeat_ms = 100;
    c.election_timeout_ms = 250;
    expect = "election_timeout_ms (250)";
  }
  auto s = cfg::validate(c);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.error_code() == code::invalid_argument);
  CHECK_MESSAGE(contains(s.message(), expect), s.message());
}

TEST_CASE("validate accepts a 64-character member id with every allowed character") {
  cluster_config c = valid_config();
  c.members[1].id = "Az09-_." + std::string(57, 'x');
  REQUIRE(c.members[1].id.size() == 64);
  CHECK(cfg::validate(c).is_ok());
}

TEST_CASE("validate refuses more members than a shard map can index") {
  cluster_config c = valid_config();
  c.members.clear();
  for (int i = 0; i < 65536; ++i) {
    cluster_member m;
    m.id = "n" + std::to_string(i);
    m.host = "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256);
    m.cluster_port = 7001;
    m.http_port = 8001;
    c.members.push_back(std::move(m));
  }
  auto s = cfg::validate(c);
  REQUIRE_FALSE(s.is_ok());
  CHECK(contains(s.message(), "65535"));
  c.members.pop_back();
  CHECK(cfg::validate(c).is_ok());
}

// ---- members as JSON --------------------------------------------------------

TEST_CASE("a member survives a JSON round trip") {
  cluster_member m = member("node-7", 7007);
  m.http_host = "0.0.0.0";
  json j = cfg::to_json(m);
  CHECK(j["id"] == "node-7");
  CHECK(j["http_host"] == "0.0.0.0");
  auto back = cfg::member_from_json(j, "member");
  REQUIRE_MESSAGE(back.is_ok(), back.error().to_string());
  CHECK(*back == m);
}

TEST_CASE("member_from_json refuses a malformed member and names the source") {
  json j = cfg::to_json(member("node-7", 7007));
  j["id"] = "node/7";
  auto r = cfg::member_from_json(j, "peer message");
  REQUIRE_FALSE(r.is_ok());
  CHECK(contains(r.error().message(), "peer message"));
  CHECK(contains(r.error().message(), "node/7"));
}

// ---- shard_of ---------------------------------------------------------------

TEST_CASE("shard_of never changes: pinned values") {
  // fmix64(fnv1a64(name)) % shards. If one of these fails, the hash changed
  // and every existing cluster would lose track of its agents.
  CHECK(cfg::shard_of("team/a", 256) == 241);
  CHECK(cfg::shard_of("team/b", 256) == 69);
  CHECK(cfg::shard_of("acct/alice", 256) == 23);
  CHECK(cfg::shard_of("", 256) == 38);
  CHECK(cfg::shard_of("team/a", 65536) == 4849);
  CHECK(cfg::shard_of("team/b", 65536) == 40773);
  CHECK(cfg::shard_of("acct/alice", 7) == 3);
  CHECK(cfg::shard_of("anything", 1) == 0);
}

TEST_CASE("shard_of spreads consecutive names evenly over the shards") {
  constexpr int kNames = 100'000;
  constexpr uint32_t kShards = 256;
  std::vector<int> counts(kShards, 0);
  for (int i = 0; i < kNames; ++i) {
    uint32_t s = cfg::shard_of("agent-" + std::to_string(i), kShards);
    REQUIRE(s < kShards);
    ++counts[s];
  }
  double mean = double(kNames) / kShards;
  auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
  CHECK(*lo >= 0.8 * mean);
  CHECK(*hi <= 1.2 * mean);
}

// ---- shard_map --------------------------------------------------------------

TEST_CASE("rendezvous placement gives each of three members about a third of the shards") {
  shard_map m(1, 256, members(3));
  std::size_t total = 0;
  for (const auto& mem : m.members()) {
    auto owned = m.shards_of(mem.id);
    CAPTURE(mem.id);
    CHECK(owned.size() >= 0.8 * 256 / 3);
    CHECK(owned.size() <= 1.2 * 256 / 3);
    CHECK(std::is_sorted(owned.begin(), owned.end()));
    for (uint32_t s : owned) CHECK(m.owner(s) == mem.id);
    total += owned.size();
  }
  CHECK(total == 256);
}

TEST_CASE("rendezvous placement pins owners so a change of the scoring is caught") {
  shard_map m(1, 256, members(3));
  // Owners are part of the on-disk format as much as shard_of is.
  CHECK(m.owner(0) == "node-1");
  CHECK(m.owner(3) == "node-3");
  CHECK(m.owner(9) == "node-2");
  CHECK(m.owner(11) == "node-3");
  CHECK(m.owner(255) == "node-2");
  CHECK(m.owner_of("team/a") == m.owner(cfg::shard_of("team/a", 256)));
}

TEST_CASE("rendezvous placement does not depend on the order members are listed in") {
  auto list = members(5);
  shard_map a(3, 256, list);
  std::reverse(list.begin(), list.end());
  shard_map b(3, 256, list);
  std::rotate(list.begin(), list.begin() + 2, list.end());
  shard_map c(3, 256, list);
  CHECK(a == b);
  CHECK(a == c);
  CHECK(a.members().front().id == "node-1");  // kept sorted by id
  for (uint32_t s = 0; s < 256; ++s) {
    CHECK(a.owner(s) == b.owner(s));
    CHECK(a.owner(s) == c.owner(s));
  }
  CHECK(cfg::moves_between(a, b).empty());
}

TEST_CASE("adding a fourth member moves about a quarter of the shards, all to it") {
  shard_map before(1, 256, members(3));
  shard_map after = before.with_member(member("node-4", 7004));
  CHECK(after.epoch() == 2);
  CHECK(after.members().size() == 4);
  auto moves = cfg::moves_between(before, after);
  CHECK(moves.size() >= 0.15 * 256);
  CHECK(moves.size() <= 0.35 * 256);
  CHECK(moves.size() == after.shards_of("node-4").size());
  for (const auto& mv : moves) {
    CHECK(mv.to == "node-4");
    CHECK(mv.from == before.owner(mv.shard));
    CHECK(mv.from != "node-4");
  }
  CHECK(std::is_sorted(moves.begin(), moves.end(),
                       [](const auto& a, const auto& b) { return a.shard < b.shard; }));
}

TEST_CASE("removing a member moves only the shards it owned") {
  shard_map before(4, 256, members(4));
  auto owned = before.shards_of("node-2");
  REQUIRE_FALSE(owned.empty());
  shard_map after = before.without_member("node-2");
  CHECK(after.epoch() == 5);
  CHECK(after.find("node-2") == nullptr);
  auto moves = cfg::moves_between(before, after);
  REQUIRE(moves.size() == owned.size());
  for (std::size_t i = 0; i < moves.size(); ++i) {
    CHECK(moves[i].shard == owned[i]);
    CHECK(moves[i].from == "node-2");
    CHECK(moves[i].to != "node-2");
    CHECK_FALSE(moves[i].to.empty());
  }
}

TEST_CASE("with_member replaces a member with the same id and keeps its shards") {
  shard_map before(1, 64, members(3));
  cluster_member moved = member("node-2", 7002);
  moved.host = "10.0.0.9";
  shard_map after = before.with_member(moved);
  CHECK(after.epoch() == 2);
  REQUIRE(after.members().size() == 3);
  REQUIRE(after.find("node-2") != nullptr);
  CHECK(after.find("node-2")->host == "10.0.0.9");
  CHECK(cfg::moves_between(before, after).empty());
}

TEST_CASE("an empty shard map has no owners") {
  shard_map none;
  CHECK(none.empty());
  CHECK(none.owner(0).empty());
  CHECK(none.shards_of("node-1").empty());
  shard_map emptied = shard_map(1, 16, members(1)).without_member("node-1");
  CHECK(emptied.empty());
  CHECK(emptied.owner(15).empty());
  auto moves = cfg::moves_between(shard_map(1, 16, members(1)), emptied);
  CHECK(moves.size() == 16);
  CHECK(moves.front().to.empty());
}

TEST_CASE("a shard map survives a JSON round trip with its epoch") {
  shard_map m(42, 128, members(3));
  json j = m.to_json();
  CHECK(j["epoch"] == 42);
  CHECK(j["shards"] == 128);
  CHECK(j["members"].size() == 3);
  auto back = shard_map::from_json(json::parse(j.dump()), "cluster map");
  REQUIRE_MESSAGE(back.is_ok(), back.error().to_string());
  CHECK(*back == m);
  CHECK(back->epoch() == 42);
  for (uint32_t s = 0; s < 128; ++s) CHECK(back->owner(s) == m.owner(s));

  auto empty = shard_map::from_json(shard_map(7, 16, {}).to_json(), "cluster map");
  REQUIRE(empty.is_ok());
  CHECK(empty->epoch() == 7);
  CHECK(empty->empty());
}

TEST_CASE("shard_map::from_json refuses bad input with invalid_argument naming what it read") {
  json j = shard_map(1, 16, members(2)).to_json();
  std::string expect;
  SUBCASE("duplicate member ids") {
    j["members"][1]["id"] = "node-1";
    expect = "appears twice";
  }
  SUBCASE("zero shards") {
    j["shards"] = 0;
    expect = "\"shards\"";
  }
  SUBCASE("an unknown key") {
    j["version"] = 2;
    expect = "\"version\"";
  }
  SUBCASE("a missing epoch") {
    j.erase("epoch");
    expect = "\"epoch\"";
  }
  SUBCASE("an epoch of the wrong type") {
    j["epoch"] = "1";
    expect = "\"epoch\"";
  }
  SUBCASE("a malformed member") {
    j["members"][0]["cluster_port"] = 0;
    expect = "cluster_port";
  }
  auto r = shard_map::from_json(j, "map from node-3");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::invalid_argument);
  CHECK(contains(r.error().message(), "map from node-3"));
  CHECK_MESSAGE(contains(r.error().message(), expect), r.error().message());
}

TEST_CASE("group replicas are distinct members, best first, and do not depend on listing order") {
  auto list = members(5);
  for (uint32_t g = 0; g < 32; ++g) {
    CAPTURE(g);
    auto r = cfg::group_replicas(list, g, 3);
    REQUIRE(r.size() == 3);
    CHECK(std::set<std::string>(r.begin(), r.end()).size() == 3);
    auto reversed = list;
    std::reverse(reversed.begin(), reversed.end());
    CHECK(cfg::group_replicas(reversed, g, 3) == r);
    // A smaller replication takes a prefix: the preferred leader is the
    // same whatever the replication.
    CHECK(cfg::group_replicas(list, g, 1) == std::vector<std::string>{r[0]});
  }
  // More replicas asked than members: every member, once.
  CHECK(cfg::group_replicas(members(2), 0, 3).size() == 2);
  CHECK(cfg::group_replicas({}, 0, 3).empty());
}

TEST_CASE("group placement spreads replicas and preferred leaders over the members") {
  auto list = members(5);
  std::map<std::string, int> replicas, preferred;
  for (uint32_t g = 0; g < 320; ++g) {
    auto r = cfg::group_replicas(list, g, 3);
    for (const auto& id : r) ++replicas[id];
    ++preferred[r[0]];
  }
  for (const auto& m : list) {
    CAPTURE(m.id);
    // 320 groups x 3 replicas over 5 members: 192 each; 64 preferred each.
    CHECK(replicas[m.id] >= 0.8 * 192);
    CHECK(replicas[m.id] <= 1.2 * 192);
    CHECK(preferred[m.id] >= 0.7 * 64);
    CHECK(preferred[m.id] <= 1.3 * 64);
  }
  // Salted apart from shard ownership: the preferred leader of group g is
  // not always the owner of shard g.
  shard_map owners(1, 320, list);
  int same = 0;
  for (uint32_t g = 0; g < 320; ++g) same += cfg::group_replicas(list, g, 1)[0] == owners.owner(g);
  CHECK(same < 320 / 2);
}

TEST_CASE("adding a member changes a group's replicas only by letting it in") {
  auto before = members(4);
  auto after = before;
  after.push_back(member("node-5", 7005));
  int changed = 0;
  for (uint32_t g = 0; g < 64; ++g) {
    CAPTURE(g);
    auto a = cfg::group_replicas(before, g, 3);
    auto b = cfg::group_replicas(after, g, 3);
    if (a == b) continue;
    ++changed;
    // The newcomer entered; the others keep their order, the last one out.
    CHECK(std::find(b.begin(), b.end(), "node-5") != b.end());
    std::vector<std::string> rest;
    for (const auto& id : b)
      if (id != "node-5") rest.push_back(id);
    CHECK(rest == std::vector<std::string>(a.begin(), a.begin() + 2));
  }
  // About 3/5 of the groups take the newcomer.
  CHECK(changed >= 0.4 * 64);
  CHECK(changed <= 0.8 * 64);
  CHECK(cfg::group_of_shard(300, 32) == 300 % 32);
}

TEST_CASE("group placement pins replicas so a change of the scoring is caught") {
  auto list = members(3);
  CHECK(cfg::group_replicas(list, 0, 3) == std::vector<std::string>{"node-2", "node-3", "node-1"});
  CHECK(cfg::group_replicas(list, 31, 1) == std::vector<std::string>{"node-1"});
}
