// keeld explaining itself: its version, its config keys and effective
// config, a data directory another keeld holds, and its log (requests and
// turns, as text or JSON Lines).

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "http/client.hpp"
#include "support/cli_runner.hpp"
#include "support/keeld_process.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using nlohmann::json;
using namespace keel;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

std::string example_config() {
  return std::string(KEEL_SOURCE_DIR) + "/deploy/keeld.example.json";
}

// The JSON records of a keeld's output (its stdout line aside).
std::vector<json> records(const std::string& output) {
  std::vector<json> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("keeld listening on ", 0) == 0) continue;
    json j = json::parse(line, nullptr, false);
    CHECK_MESSAGE(!j.is_discarded(), "not a JSON line: " << line);
    if (!j.is_discarded()) out.push_back(std::move(j));
  }
  return out;
}

const json* find_record(const std::vector<json>& rs, const json& match) {
  for (const auto& r : rs) {
    bool all = true;
    for (const auto& [k, v] : match.items()) all = all && r.contains(k) && r[k] == v;
    if (all) return &r;
  }
  return nullptr;
}

// An agent type with a scripted model that greets once: one turn per
// message, no tools.
fs::path write_greeter(const fs::path& dir) {
  fs::create_directories(dir / "agents");
  json spec = {{"name", "greeter"},
               {"description", "Says hello."},
               {"instructions", "Greet."},
               {"model",
                {{"provider", "scripted"},
                 {"script", {{"replies", json::array({{{"content", "Hello there!"}}})}}}}}};
  std::ofstream(dir / "agents" / "greeter.json") << spec.dump(2);
  return dir / "agents";
}

// keeld's API with the admin token.
net::http_client client_of(const test::keeld_process& k, const std::string& token) {
  net::http_client c;
  REQUIRE(c.connect("127.0.0.1", k.port()).is_ok());
  if (!token.empty()) c.set_header("Authorization", "Bearer " + token);
  return c;
}

json call(net::http_client& c, std::string_view method, const std::string& target, const json& body,
          unsigned want) {
  auto r = c.request(method, target, body.is_null() ? "" : body.dump());
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  REQUIRE_MESSAGE(r->status == want, r->body);
  return json::parse(r->body, nullptr, false);
}

}  // namespace

TEST_CASE("keeld and keel print their version and commit, as health and the first log line do") {
  test::temp_dir dir("keeld-version");
  test::keeld_process once(KEEL_KEELD_PATH, dir.str());
  REQUIRE(once.run_to_exit({"--version"}) == 0);
  static const std::regex line(R"(^keeld (\d+\.\d+\.\d+) \(([0-9a-f]{7,}|unknown)\)\n$)");
  std::smatch m;
  const std::string printed = once.output();
  REQUIRE_MESSAGE(std::regex_match(printed, m, line), printed);
  const std::string version = m[1], commit = m[2];

  auto cli = test::cli::run_keel({"--version"});
  CHECK(cli.exit_code == 0);
  CHECK(cli.out == "keel " + version + " (" + commit + ")\n");

  test::keeld_process keeld(KEEL_KEELD_PATH, dir.str());
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  auto c = client_of(keeld, "");
  json health = call(c, "GET", "/v1/health", nullptr, 200);
  CHECK(health["version"] == version);
  CHECK(health["commit"] == commit);
  const std::string out = keeld.output();
  const std::string first = out.substr(0, out.find('\n'));
  CHECK_MESSAGE(has(first, "info  keeld " + version + " (" + commit + ") starting"), out);
  CHECK(has(first, "pid=" + std::to_string(keeld.pid())));
}

TEST_CASE("keeld --help lists every config key with its type and default") {
  test::temp_dir dir("keeld-help");
  test::keeld_process k(KEEL_KEELD_PATH, dir.str());
  REQUIRE(k.run_to_exit({"--help"}) == 0);
  const std::string help = k.output();
  CHECK(has(help, "usage: keeld --data DIR"));
  CHECK(has(help, "--log-format FMT"));
  CHECK_FALSE(has(help, "node_config.hpp"));
  for (const auto& key : config::config_keys())
    CHECK_MESSAGE(has(help, "  " + std::string(key.name) + "  " + key.type + ", default "),
                  key.name);
  CHECK(has(help, "  idle_ms  integer, default 30000\n"));
}

TEST_CASE("keeld --print-config prints file, environment and flags as JSON, the token redacted") {
  test::temp_dir dir("keeld-print");
  std::ifstream in(example_config());
  const json file = json::parse(in);
  test::keeld_process k(KEEL_KEELD_PATH, dir.str());

  REQUIRE(k.run_to_exit({"--config", example_config(), "--print-config"}) == 0);
  json shown = json::parse(k.output(), nullptr, false);
  REQUIRE_MESSAGE(shown.is_object(), k.output());
  for (const auto& [key, value] : file.items()) CHECK_MESSAGE(shown[key] == value, key);
  CHECK(shown.size() == config::config_keys().size());  // defaults for the rest
  CHECK(shown["token"] == "");

  k.set_env("KEEL_TOKEN", "env-s3cret");
  REQUIRE(k.run_to_exit({"--config", example_config(), "--idle-ms", "5", "--log-level", "debug",
                         "--data", dir.str(), "--print-config"}) == 0);
  shown = json::parse(k.output(), nullptr, false);
  REQUIRE_MESSAGE(shown.is_object(), k.output());
  CHECK(shown["idle_ms"] == 5);  // flags win over the file
  CHECK(shown["log_level"] == "debug");
  CHECK(shown["data_dir"] == dir.str());
  CHECK(shown["token"] == "<redacted>");  // from the environment, and never shown
  CHECK_FALSE(has(k.output(), "env-s3cret"));
  CHECK_FALSE(fs::exists(dir.path() / "CURRENT"));  // nothing was opened

  CHECK(k.run_to_exit({"--config", example_config(), "--log-level", "loud", "--print-config"}) ==
        2);
  CHECK(has(k.output(), "--log-level: \"loud\" is not one of error, warn, info, debug"));
}

TEST_CASE("a second keeld on a data directory in use names the first one's pid and exits 1") {
  test::temp_dir dir("keeld-twice");
  test::keeld_process first(KEEL_KEELD_PATH, dir.str());
  REQUIRE_MESSAGE(first.start(), first.output());
  test::keeld_process second(KEEL_KEELD_PATH, dir.str());
  CHECK_FALSE(second.start());
  CHECK(second.exit_code() == 1);
  const std::string n = std::to_string(first.pid());
  CHECK_MESSAGE(has(second.output(), "keeld: another keeld (pid " + n + ") uses " + dir.str() +
                                         "; stop it first (kill " + n + ") or pass another --data"),
                second.output());
  CHECK_FALSE(has(second.output(), "While lock file"));
  // The first one serves on, untouched.
  auto c = client_of(first, "");
  CHECK(call(c, "GET", "/v1/health", nullptr, 200)["status"] == "ok");
}

TEST_CASE("keeld --log-format json --log-level debug logs each request and each turn as JSON") {
  test::temp_dir dir("keeld-log");
  const std::string token = "tok-s3cret-never-logged";
  test::keeld_process keeld(KEEL_KEELD_PATH, (dir.path() / "data").string(),
                            {"--agents", write_greeter(dir.path()).string(), "--log-format", "json",
                             "--log-level", "debug", "--token", token});
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  auto c = client_of(keeld, token);
  call(c, "POST", "/v1/agents", {{"name", "hello/1"}, {"type", "greeter"}}, 201);
  call(c, "POST", "/v1/agents/hello%2F1/messages", {{"body", "a private greeting"}}, 202);
  REQUIRE_MESSAGE(test::eventually([&] { return has(keeld.output(), "turn completed"); }),
                  keeld.output());

  const auto rs = records(keeld.output());
  REQUIRE_FALSE(rs.empty());
  for (const auto& r : rs) {
    CHECK(r["time"].is_string());
    CHECK(r["level"].is_string());
    CHECK(r["msg"].is_string());
  }
  CHECK(has(rs.front()["msg"].get<std::string>(), "starting"));
  CHECK(rs.front().contains("version"));

  const json* spawn =
      find_record(rs, {{"msg", "request"}, {"method", "POST"}, {"path", "/v1/agents"}});
  REQUIRE_MESSAGE(spawn, keeld.output());
  CHECK((*spawn)["level"] == "debug");
  CHECK((*spawn)["status"] == 201);
  CHECK((*spawn)["principal"] == "admin");
  CHECK((*spawn)["ms"].is_number());

  const json* started = find_record(rs, {{"msg", "turn started"}, {"agent", "hello/1"}});
  REQUIRE_MESSAGE(started, keeld.output());
  CHECK((*started)["level"] == "info");
  CHECK((*started)["event"] == "turn_started");
  CHECK((*started)["seq"].is_number_unsigned());
  const json* done = find_record(rs, {{"msg", "turn completed"}, {"agent", "hello/1"}});
  REQUIRE_MESSAGE(done, keeld.output());
  CHECK((*done)["status"] == "completed");
  CHECK((*done)["seq"].get<uint64_t>() > (*started)["seq"].get<uint64_t>());
  CHECK(find_record(rs, {{"msg", "model requested"}, {"agent", "hello/1"}}));

  // Never a token, a message body or the model's text.
  CHECK_FALSE(has(keeld.output(), token));
  CHECK_FALSE(has(keeld.output(), "a private greeting"));
  CHECK_FALSE(has(keeld.output(), "Hello there!"));
}

TEST_CASE("at the default level keeld logs turns as text lines, and no requests") {
  test::temp_dir dir("keeld-text");
  test::keeld_process keeld(KEEL_KEELD_PATH, (dir.path() / "data").string(),
                            {"--agents", write_greeter(dir.path()).string()});
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  auto c = client_of(keeld, "");
  call(c, "POST", "/v1/agents", {{"name", "hello/2"}, {"type", "greeter"}}, 201);
  call(c, "POST", "/v1/agents/hello%2F2/messages", {{"body", "hi"}}, 202);
  REQUIRE_MESSAGE(test::eventually([&] { return has(keeld.output(), "turn completed"); }),
                  keeld.output());
  static const std::regex turn(
      R"(\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  turn completed agent=hello/2 seq=\d+ )");
  CHECK_MESSAGE(std::regex_search(keeld.output(), turn), keeld.output());
  CHECK(has(keeld.output(), "info  exec sandbox: rlimits "));
  CHECK_FALSE(has(keeld.output(), " request method="));
  CHECK_FALSE(has(keeld.output(), "model requested"));
}
