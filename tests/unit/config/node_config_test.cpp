#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "support/temp_dir.hpp"

using keel::code;
using keel::config::node_config;
using nlohmann::json;
namespace cfg = keel::config;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// A config with every key away from its default.
node_config changed_config() {
  json j = {{"data_dir", "/data"},
            {"http", "[::1]:8181"},
            {"token", "s3cret"},
            {"anonymous_scopes", {"read"}},
            {"idle_ms", 5},
            {"max_body_bytes", 4096},
            {"max_unacked_per_agent", 3},
            {"scheduler_threads", 2},
            {"scheduler_poll_attempts", 7},
            {"sync", false},
            {"block_cache_bytes", 1 << 20},
            {"effect_threads", 4},
            {"max_connections", 9},
            {"http_header_timeout_ms", 11},
            {"store_open_files", 32},
            {"reserved_disk_bytes", 0},
            {"max_effect_crashes", 1},
            {"max_page_bytes", 8192},
            {"dedupe_window_ms", 60000},
            {"retention_interval_ms", 13},
            {"tool_uid", 1001},
            {"tool_gid", 1002},
            {"secrets", {{"crm", {{"file", "/etc/keel/crm.token"}}}, {"ai", {{"env", "AI_KEY"}}}}},
            {"secret_key_file", "/etc/keel/secret.key"},
            {"log_level", "debug"},
            {"log_format", "json"}};
  auto r = cfg::from_json(j, "test");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return *r;
}

node_config valid_config() {
  node_config c;
  c.data_dir = "/var/lib/keel";
  return c;
}

}  // namespace

TEST_CASE("from_json reads every documented key") {
  json j = json::parse(R"({"data_dir": "/data", "http": "0.0.0.0:8080", "token": "s3cret",
                           "idle_ms": 5000, "max_body_bytes": 4096, "max_unacked_per_agent": 8,
                           "scheduler_threads": 3, "sync": false, "block_cache_bytes": 16777216,
                           "effect_threads": 4})");
  auto r = cfg::from_json(j, "node.json");
  REQUIRE(r.is_ok());
  CHECK(r->data_dir == "/data");
  CHECK(r->http_host == "0.0.0.0");
  CHECK(r->http_port == 8080);
  CHECK(r->token == "s3cret");
  CHECK(r->idle_ms == 5000);
  CHECK(r->max_body_bytes == 4096);
  CHECK(r->max_unacked_per_agent == 8);
  CHECK(r->scheduler_threads == 3);
  CHECK(r->sync == false);
  CHECK(r->block_cache_bytes == 16777216u);
  CHECK(r->effect_threads == 4);
}

TEST_CASE("from_json accepts non-negative integers built in C++ as signed values") {
  // nlohmann stores a C++ int as number_integer even when it is positive;
  // parsed text stores it as number_unsigned. Both are non-negative integers.
  json j = {{"data_dir", "/data"}, {"idle_ms", 5000}};
  REQUIRE(j["idle_ms"].is_number_integer());
  REQUIRE_FALSE(j["idle_ms"].is_number_unsigned());
  auto r = cfg::from_json(j, "flags");
  CHECK(r.is_ok());
  if (r.is_ok()) CHECK(r->idle_ms == 5000);
}

TEST_CASE("from_json on an empty object gives the documented defaults") {
  auto r = cfg::from_json(json::object(), "node.json");
  REQUIRE(r.is_ok());
  node_config d;
  CHECK(r->data_dir.empty());
  CHECK(r->http_host == "127.0.0.1");
  CHECK(r->http_port == 7070);
  CHECK(r->token.empty());
  CHECK(r->idle_ms == 30'000);
  CHECK(r->max_body_bytes == (1u << 20));
  CHECK(r->max_unacked_per_agent == 64);
  CHECK(r->scheduler_threads == 0);
  CHECK(r->sync == true);
  CHECK(r->block_cache_bytes == (64ull << 20));
  CHECK(r->effect_threads == 16);
  CHECK(d.http_port == r->http_port);
}

TEST_CASE("from_json errors name the source and the offending key") {
  std::string key;
  json j;
  SUBCASE("unknown key") {
    key = "data_directory";
    j = {{"data_dir", "/d"}, {key, "/x"}};
  }
  SUBCASE("string expected, number given") {
    key = "data_dir";
    j = {{key, 5}};
  }
  SUBCASE("token given as an array") {
    key = "token";
    j = {{key, json::array({"a"})}};
  }
  SUBCASE("negative integer") {
    key = "idle_ms";
    j = {{key, -1}};
  }
  SUBCASE("integer given as a string") {
    key = "max_body_bytes";
    j = {{key, "1024"}};
  }
  SUBCASE("fractional number") {
    key = "scheduler_threads";
    j = {{key, 1.5}};
  }
  SUBCASE("integer too large for its field") {
    key = "idle_ms";
    j = {{key, 1ull << 32}};
  }
  SUBCASE("boolean given as a string") {
    key = "sync";
    j = {{key, "true"}};
  }
  SUBCASE("http given as a number") {
    key = "http";
    j = {{key, 8080}};
  }
  auto r = cfg::from_json(j, "/etc/keel/node.json");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::invalid_argument);
  CAPTURE(r.error().message());
  CHECK(contains(r.error().message(), "/etc/keel/node.json"));
  CHECK(contains(r.error().message(), "\"" + key + "\""));
}

TEST_CASE("from_json refuses a document that is not an object") {
  for (const json& j : {json::array(), json(5), json("x"), json(nullptr)}) {
    auto r = cfg::from_json(j, "cli");
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), "cli"));
  }
}

TEST_CASE("from_json names the source when the http address is malformed") {
  auto r = cfg::from_json({{"http", "no-port-here"}}, "/etc/keel/node.json");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::invalid_argument);
  CHECK(contains(r.error().message(), "no-port-here"));
  CHECK(contains(r.error().message(), "/etc/keel/node.json"));
}

TEST_CASE("set_http_address parses HOST:PORT") {
  node_config c;
  SUBCASE("ipv4") {
    REQUIRE(cfg::set_http_address(c, "10.0.0.5:9000").is_ok());
    CHECK(c.http_host == "10.0.0.5");
    CHECK(c.http_port == 9000);
  }
  SUBCASE("hostname") {
    REQUIRE(cfg::set_http_address(c, "localhost:80").is_ok());
    CHECK(c.http_host == "localhost");
    CHECK(c.http_port == 80);
  }
  SUBCASE("bracketed ipv6 loses its brackets") {
    REQUIRE(cfg::set_http_address(c, "[::1]:7071").is_ok());
    CHECK(c.http_host == "::1");
    CHECK(c.http_port == 7071);
  }
  SUBCASE("port 0 picks a free port") {
    REQUIRE(cfg::set_http_address(c, "127.0.0.1:0").is_ok());
    CHECK(c.http_port == 0);
  }
  SUBCASE("highest port") {
    REQUIRE(cfg::set_http_address(c, "127.0.0.1:65535").is_ok());
    CHECK(c.http_port == 65535);
  }
}

TEST_CASE("set_http_address refuses malformed addresses and leaves the config unchanged") {
  for (const char* bad : {"", "nocolon", ":8080", "host:", "host:65536", "host:99999", "host:abc",
                          "host:80x", "host:-1"}) {
    CAPTURE(bad);
    node_config c;
    auto s = cfg::set_http_address(c, bad);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK(contains(s.message(), std::string("'") + bad + "'"));
    CHECK(c.http_host == "127.0.0.1");
    CHECK(c.http_port == 7070);
  }
}

TEST_CASE("validate accepts a loopback config without a token") {
  node_config c = valid_config();
  CHECK(cfg::validate(c).is_ok());
  for (const char* host : {"127.0.0.1", "127.1.2.3", "localhost", "::1"}) {
    CAPTURE(host);
    c.http_host = host;
    CHECK(cfg::validate(c).is_ok());
  }
}

TEST_CASE("validate refuses a non-loopback host without a token and accepts it with one") {
  node_config c = valid_config();
  for (const char* host : {"0.0.0.0", "10.1.2.3", "::", "example.com", "128.0.0.1"}) {
    CAPTURE(host);
    c.http_host = host;
    c.token.clear();
    auto s = cfg::validate(c);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK(contains(s.message(), host));
    CHECK(contains(s.message(), "token"));
    c.token = "s3cret";
    CHECK(cfg::validate(c).is_ok());
  }
}

TEST_CASE("a DNS name that merely starts with 127. is not treated as loopback") {
  // Such a name may resolve to a public address: it must need a token.
  CHECK(cfg::is_loopback_host("127.0.0.1"));
  CHECK_FALSE(cfg::is_loopback_host("127.attacker.example"));
}

TEST_CASE("validate refuses configs that break a rule and names the rule") {
  node_config c = valid_config();
  std::string needle;
  SUBCASE("no data dir") {
    c.data_dir.clear();
    needle = "data";
  }
  SUBCASE("empty host") {
    c.http_host.clear();
    needle = "host";
  }
  SUBCASE("tiny body limit") {
    c.max_body_bytes = 1023;
    needle = "max_body_bytes";
  }
  SUBCASE("zero idle time") {
    c.idle_ms = 0;
    needle = "idle_ms";
  }
  SUBCASE("no effect threads") {
    c.effect_threads = 0;
    needle = "effect_threads";
  }
  SUBCASE("too many effect threads") {
    c.effect_threads = 1025;
    needle = "effect_threads";
  }
  auto s = cfg::validate(c);
  CHECK(s.error_code() == code::invalid_argument);
  CHECK(contains(s.message(), needle));
}

TEST_CASE("validate accepts the smallest allowed limits") {
  node_config c = valid_config();
  c.max_body_bytes = 1024;
  c.idle_ms = 1;
  c.effect_threads = 1;
  CHECK(cfg::validate(c).is_ok());
}

TEST_CASE("load_file reads a JSON file") {
  keel::test::temp_dir dir("keel-config");
  std::string path = dir.str() + "/node.json";
  write_file(path, R"({"data_dir": "/d", "http": "127.0.0.1:0", "idle_ms": 10})");
  auto r = cfg::load_file(path);
  REQUIRE(r.is_ok());
  CHECK(r->data_dir == "/d");
  CHECK(r->http_port == 0);
  CHECK(r->idle_ms == 10);
}

TEST_CASE("load_file reports a missing file, bad JSON and bad keys with the path") {
  keel::test::temp_dir dir("keel-config");
  std::string path = dir.str() + "/node.json";
  SUBCASE("missing file") {
    auto r = cfg::load_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::not_found);
    CHECK(contains(r.error().message(), path));
  }
  SUBCASE("bad JSON") {
    write_file(path, R"({"data_dir": "/d",)");
    auto r = cfg::load_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), path));
  }
  SUBCASE("empty file") {
    write_file(path, "");
    auto r = cfg::load_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), path));
  }
  SUBCASE("unknown key") {
    write_file(path, R"({"dta_dir": "/d"})");
    auto r = cfg::load_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), path));
    CHECK(contains(r.error().message(), "\"dta_dir\""));
  }
}

TEST_CASE("from_json reads the TLS file keys") {
  auto r = cfg::from_json({{"tls_cert", "/etc/keel/tls.pem"},
                           {"tls_key", "/etc/keel/tls.key"},
                           {"tls_client_ca", "/etc/keel/clients.pem"}},
                          "node.json");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK(r->tls_cert == "/etc/keel/tls.pem");
  CHECK(r->tls_key == "/etc/keel/tls.key");
  CHECK(r->tls_client_ca == "/etc/keel/clients.pem");
  CHECK(cfg::tls_enabled(*r));
  CHECK_FALSE(cfg::tls_enabled(node_config{}));
}

TEST_CASE("validate wants the TLS certificate and key together, readable, and names the file") {
  keel::test::temp_dir dir("keel-config");
  const std::string cert = dir.str() + "/tls.pem", key = dir.str() + "/tls.key",
                    ca = dir.str() + "/ca.pem", missing = dir.str() + "/missing.pem";
  write_file(cert, "-----BEGIN CERTIFICATE-----\n");
  write_file(key, "-----BEGIN PRIVATE KEY-----\n");
  write_file(ca, "-----BEGIN CERTIFICATE-----\n");
  node_config c = valid_config();

  SUBCASE("both readable, with or without a client CA") {
    c.tls_cert = cert;
    c.tls_key = key;
    CHECK(cfg::validate(c).is_ok());
    c.tls_client_ca = ca;
    CHECK(cfg::validate(c).is_ok());
  }
  SUBCASE("a certificate without a key") {
    c.tls_cert = cert;
    auto s = cfg::validate(c);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(s.message(), "no key"), s.message());
    CHECK(contains(s.message(), "--tls-key"));
  }
  SUBCASE("a key without a certificate") {
    c.tls_key = key;
    auto s = cfg::validate(c);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(s.message(), "no certificate"), s.message());
  }
  SUBCASE("a client CA without TLS") {
    c.tls_client_ca = ca;
    auto s = cfg::validate(c);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(s.message(), "tls_client_ca"), s.message());
  }
  SUBCASE("a file that cannot be read is named") {
    std::string* slot = nullptr;
    c.tls_cert = cert;
    c.tls_key = key;
    SUBCASE("certificate") {
      slot = &c.tls_cert;
    }
    SUBCASE("key") {
      slot = &c.tls_key;
    }
    SUBCASE("client CA") {
      slot = &c.tls_client_ca;
    }
    *slot = missing;
    auto s = cfg::validate(c);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(s.message(), "'" + missing + "'"), s.message());
    CHECK_MESSAGE(contains(s.message(), "No such file"), s.message());
  }
  SUBCASE("an empty file or a directory is refused") {
    const std::string empty = dir.str() + "/empty.pem";
    write_file(empty, "");
    for (const std::string& bad : {empty, dir.str()}) {
      CAPTURE(bad);
      c.tls_cert = bad;
      c.tls_key = key;
      auto s = cfg::validate(c);
      CHECK(s.error_code() == code::invalid_argument);
      CHECK_MESSAGE(contains(s.message(), "'" + bad + "'"), s.message());
    }
  }
  SUBCASE("TLS does not lift the token rule off a non-loopback address") {
    c.tls_cert = cert;
    c.tls_key = key;
    c.http_host = "0.0.0.0";
    CHECK(cfg::validate(c).error_code() == code::invalid_argument);
    c.token = "s3cret";
    CHECK(cfg::validate(c).is_ok());
  }
}

TEST_CASE(
    "from_json reads the scopes of anonymous requests and the tools' uid, and refuses bad ones") {
  auto r = cfg::from_json(
      json{{"anonymous_scopes", {"read"}}, {"tool_uid", 4242}, {"tool_gid", 4243}}, "node.json");
  REQUIRE(r);
  CHECK(r->anonymous_scopes == 1);
  CHECK(r->tool_uid == 4242);
  CHECK(r->tool_gid == 4243);
  CHECK(cfg::from_json(json::object(), "node.json")->anonymous_scopes == -1);  // the default

  auto bad = cfg::from_json(json{{"anonymous_scopes", {"read", "everything"}}}, "node.json");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("\"anonymous_scopes\": unknown scope \"everything\"") !=
        std::string::npos);
  cfg::node_config root_tools;
  root_tools.data_dir = "/tmp/x";
  root_tools.tool_uid = 0;
  CHECK_FALSE(cfg::validate(root_tools));
}

// The table of keys: the loader, keeld --help and keeld --print-config
// read the same rows, and the operations guide documents every one.

TEST_CASE("every config key is read and shown through the same table row") {
  const node_config c = changed_config();
  const json shown = cfg::to_json(c);
  std::set<std::string> names;
  for (const auto& k : cfg::config_keys()) names.insert(k.name);
  // One row per key, and to_json shows every row.
  CHECK(names.size() == cfg::config_keys().size());
  CHECK(shown.size() == names.size());
  for (const auto& n : names) CHECK_MESSAGE(shown.contains(n), n);
  // What is shown loads back to the same config (the token aside: it is
  // redacted).
  json again = shown;
  again["token"] = "s3cret";
  auto r = cfg::from_json(again, "shown");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK(cfg::to_json(*r) == shown);
  CHECK(r->http_host == "::1");
  CHECK(r->http_port == 8181);
  CHECK(r->log_level == keel::log::level::debug);
  CHECK(r->log_format == keel::log::format::json);
  CHECK(r->secrets.at("ai").where == "AI_KEY");
}

TEST_CASE("the printed config never holds the token") {
  const json shown = cfg::to_json(changed_config());
  CHECK(shown["token"] == "<redacted>");
  CHECK_FALSE(contains(shown.dump(), "s3cret"));
  // No token is shown as none, not as a redaction.
  CHECK(cfg::to_json(node_config{})["token"] == "");
}

TEST_CASE("the keys' help names each key with its type and the default node_config holds") {
  const std::string help = cfg::keys_help();
  for (const auto& k : cfg::config_keys()) {
    CAPTURE(k.name);
    CHECK(contains(help, "  " + std::string(k.name) + "  " + k.type + ", default "));
    CHECK(contains(help, k.meaning));
  }
  CHECK(contains(help, "idle_ms  integer, default 30000\n"));
  CHECK(contains(help, "http  HOST:PORT, default \"127.0.0.1:7070\"\n"));
  CHECK(contains(help, "log_level  string, default \"info\"\n"));
  CHECK(contains(help, "sync  bool, default true\n"));
}

TEST_CASE("a log level or format the log does not know is refused, naming the key") {
  for (const char* key : {"log_level", "log_format"}) {
    auto r = cfg::from_json({{key, "loud"}}, "node.json");
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), std::string("node.json: \"") + key + "\""));
    CHECK(contains(r.error().message(), "\"loud\" is not one of"));
  }
}

TEST_CASE("the operations guide documents every config key, and the example file loads") {
  std::ifstream in(std::string(KEEL_SOURCE_DIR) + "/docs/operations.md");
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string guide = ss.str();
  for (const auto& k : cfg::config_keys())
    CHECK_MESSAGE(contains(guide, "`" + std::string(k.name) + "`"), k.name);

  auto example = cfg::load_file(std::string(KEEL_SOURCE_DIR) + "/deploy/keeld.example.json");
  REQUIRE_MESSAGE(example.is_ok(), example.error().to_string());
  CHECK(cfg::validate(*example).is_ok());
}
