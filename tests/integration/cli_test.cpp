// The `keel` binary against a real keeld on 127.0.0.1: the quick-start
// flow, exit codes, percent-encoding of names and the KEEL_* variables.

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/cli_runner.hpp"
#include "support/http_replay_check.hpp"
#include "support/keeld_process.hpp"
#include "support/refused_port.hpp"
#include "support/temp_dir.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::cli;

namespace {

// A keeld and the --server flag that reaches it. When the test lets go of
// it, every ledger it left must replay strictly.
struct cli_node {
  test::temp_dir dir{"keel-cli"};
  test::keeld_process keeld;
  std::string token;  // from --token, for the replay check
  explicit cli_node(std::vector<std::string> extra = {})
      : keeld(KEEL_KEELD_PATH, dir.str(), extra) {
    for (std::size_t i = 0; i + 1 < extra.size(); ++i)
      if (extra[i] == "--token") token = extra[i + 1];
    REQUIRE_MESSAGE(keeld.start(), keeld.output());
  }
  ~cli_node() {
    if (keeld.running()) test::check_strict_replays_over_http(keeld.port(), token);
  }
  cli_node(const cli_node&) = delete;
  cli_node& operator=(const cli_node&) = delete;
  std::string server() const { return server_url(keeld.port()); }

  // keel --server URL args...
  cli_result keel(std::vector<std::string> args) { return run_keel(keeld.port(), std::move(args)); }
  // keel --server URL --json args..., parsed; REQUIREs exit 0.
  json keel_json(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    auto r = keel(std::move(args));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    json j = json::parse(r.out, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), r.out);
    return j;
  }
  // keel --json args... whose output is one JSON value per line (ledger
  // export), as an array.
  json keel_jsonl(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    auto r = keel(std::move(args));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    json out = json::array();
    std::size_t at = 0;
    while (at < r.out.size()) {
      std::size_t nl = r.out.find('\n', at);
      if (nl == std::string::npos) nl = r.out.size();
      json j = json::parse(r.out.substr(at, nl - at), nullptr, false);
      REQUIRE_MESSAGE(!j.is_discarded(), r.out);
      out.push_back(std::move(j));
      at = nl + 1;
    }
    return out;
  }
};

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("the quick-start flow works through the keel CLI") {
  cli_node n;
  auto spawn = n.keel({"spawn", "counter", "acct/alice"});
  REQUIRE_MESSAGE(spawn.exit_code == 0, spawn.err);
  CHECK(has(spawn.out, "spawned acct/alice (counter)"));

  auto send = n.keel({"send", "acct/alice", R"({"add": 5})"});
  CHECK(send.exit_code == 0);
  CHECK(has(send.out, "accepted id="));
  CHECK(has(send.out, " seq="));

  auto wait = n.keel({"send", "acct/alice", R"({"add": 2})", "--wait", "5000"});
  CHECK(wait.exit_code == 0);
  CHECK(has(wait.out, R"(reply {"total":7})"));

  auto show = n.keel({"show", "acct/alice"});
  CHECK(show.exit_code == 0);
  CHECK(has(show.out, "name        acct/alice\n"));
  CHECK(has(show.out, "type        counter\n"));
  CHECK(has(show.out, "status      active\n"));
  CHECK(has(show.out, "last_seq    5\n"));
  CHECK(has(show.out, "hibernated  false\n"));
  CHECK(has(show.out, "created     20"));
  CHECK(has(show.out, R"(state       {"total":7})"));

  json view = n.keel_json({"show", "acct/alice"});
  CHECK(view["name"] == "acct/alice");
  CHECK(view["state"]["total"] == 7);
  CHECK(view["last_seq"] == 5);

  auto ledger = n.keel({"ledger", "acct/alice"});
  CHECK(ledger.exit_code == 0);
  CHECK(ledger.out.rfind("SEQ", 0) == 0);
  CHECK(has(ledger.out, "TYPE"));
  CHECK(has(ledger.out, "spawned"));
  CHECK(has(ledger.out, "message_received"));
  CHECK(has(ledger.out, R"({"total":7})"));
  json events = n.keel_jsonl({"ledger", "acct/alice", "--from", "2", "--limit", "2"});
  REQUIRE(events.size() == 2);
  CHECK(events[0]["seq"] == 2);
  CHECK(events[1]["seq"] == 3);

  REQUIRE(n.keel({"spawn", "counter", "acct/bob"}).exit_code == 0);
  auto ls = n.keel({"ls"});
  CHECK(ls.exit_code == 0);
  CHECK(ls.out.rfind("NAME", 0) == 0);
  CHECK(has(ls.out, "acct/alice"));
  CHECK(has(ls.out, "acct/bob"));
  auto page = n.keel({"ls", "--prefix", "acct/", "--limit", "1"});
  CHECK(page.exit_code == 0);
  CHECK(has(page.out, "acct/alice"));
  CHECK_FALSE(has(page.out, "acct/bob"));
  CHECK(has(page.err, "keel ls --after acct/alice"));
  json rest = n.keel_json({"ls", "--prefix", "acct/", "--after", "acct/alice"});
  REQUIRE(rest["agents"].size() == 1);
  CHECK(rest["agents"][0]["name"] == "acct/bob");

  auto signal = n.keel({"signal", "acct/alice", "reset"});
  CHECK(signal.exit_code == 0);
  CHECK(has(signal.out, "accepted id=reset"));
  json query = n.keel_json({"query", "acct/alice"});
  CHECK(query == json{{"total", 0}});
  CHECK(n.keel_json({"query", "acct/alice", R"({"get": true})"}) == json{{"total", 0}});

  auto rm = n.keel({"rm", "acct/alice"});
  CHECK(rm.exit_code == 0);
  CHECK(has(rm.out, "terminated acct/alice (status terminated"));
  auto late = n.keel({"send", "acct/alice", R"({"add": 1})"});
  CHECK(late.exit_code == 1);
  CHECK(has(late.err, "conflict"));
  CHECK(has(late.err, "409"));
  CHECK(n.keel_json({"show", "acct/alice"})["status"] == "terminated");
}

TEST_CASE("keel send with an id reports a resend as a duplicate") {
  cli_node n;
  REQUIRE(n.keel({"spawn", "counter", "a"}).exit_code == 0);
  auto first = n.keel({"send", "a", R"({"add": 3})", "--id", "m-1", "--from", "me"});
  CHECK(first.exit_code == 0);
  CHECK(has(first.out, "accepted id=m-1"));
  CHECK_FALSE(has(first.out, "duplicate"));
  auto again = n.keel({"send", "a", R"({"add": 3})", "--id", "m-1"});
  CHECK(again.exit_code == 0);
  CHECK(has(again.out, "duplicate"));
  json j = n.keel_json({"send", "a", R"({"add": 3})", "--id", "m-1"});
  CHECK(j["duplicate"] == true);
  CHECK(n.keel_json({"show", "a"})["state"]["total"] == 3);
}

TEST_CASE("keel exits 1 when the server answers with an error or cannot be reached") {
  cli_node n;
  auto unknown = n.keel({"show", "no/such"});
  CHECK(unknown.exit_code == 1);
  CHECK(has(unknown.err, "not_found"));
  CHECK(has(unknown.err, "404"));
  CHECK(unknown.out.empty());

  REQUIRE(n.keel({"spawn", "counter", "a"}).exit_code == 0);
  auto twice = n.keel({"spawn", "counter", "a"});
  CHECK(twice.exit_code == 1);
  CHECK(has(twice.err, "already_exists"));

  auto bad_type = n.keel({"spawn", "nope", "b"});
  CHECK(bad_type.exit_code == 1);
  CHECK(has(bad_type.err, "invalid_argument"));

  // The agent answers a message it refuses with an error reply.
  auto rejected = n.keel({"send", "a", R"({"mul": 2})", "--wait", "5000"});
  CHECK(rejected.exit_code == 1);
  CHECK(has(rejected.err, "invalid_message"));

  test::refused_port closed;
  auto down = run_keel({"--server", server_url(closed.port()), "health"});
  CHECK(down.exit_code == 1);
  CHECK(has(down.err, "no keeld answers at " + server_url(closed.port()) +
                          " (connection refused); start one with ./build/keeld --data DIR, or "
                          "pass --server"));
  CHECK_FALSE(has(down.err, "waiting for keeld"));  // KEEL_CONNECT_WAIT_MS=0 in tests
}

TEST_CASE("keel exits 2 on a usage error without calling the server") {
  test::refused_port closed;  // a usage error must not even try to connect
  const std::string server = server_url(closed.port());
  struct usage_case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const auto& c :
       std::vector<usage_case>{{{"frobnicate"}, "unknown command 'frobnicate'"},
                               {{}, "no command given"},
                               {{"send", "a"}, "usage: keel send"},
                               {{"send", "a", "{not json"}, "must be JSON"},
                               {{"spawn", "counter", "a", "--input", "{"}, "--input must be JSON"},
                               {{"show", "a", "--bogus", "1"}, "has no flag --bogus"},
                               {{"ls", "--limit", "ten"}, "--limit must be a non-negative integer"},
                               {{"ledger", "a", "--from"}, "--from needs a value"},
                               {{"--json=yes", "ls"}, "--json takes no value"}}) {
    std::vector<std::string> args{"--server", server};
    args.insert(args.end(), c.args.begin(), c.args.end());
    CAPTURE(c.says);
    auto r = run_keel(args);
    CHECK(r.exit_code == 2);
    CHECK(has(r.err, c.says));
    CHECK(has(r.err, "--help"));
  }
  auto scheme = run_keel({"--server", "ftp://127.0.0.1:1", "health"});
  CHECK(scheme.exit_code == 2);
  CHECK(has(scheme.err, "only http:// and https://"));

  auto help = run_keel({"--help"});
  CHECK(help.exit_code == 0);
  CHECK(has(help.out, "usage: keel"));
  CHECK(has(help.out, "KEEL_SERVER"));
}

TEST_CASE("keel percent-encodes agent names with a slash in request paths") {
  cli_node n;
  // Unencoded, GET /v1/agents/cli/ledger would be the ledger of agent "cli".
  REQUIRE(n.keel({"spawn", "counter", "cli/ledger"}).exit_code == 0);
  auto show = n.keel({"show", "cli/ledger"});
  CHECK_MESSAGE(show.exit_code == 0, show.err);
  CHECK(has(show.out, "name        cli/ledger\n"));
  auto send = n.keel({"send", "cli/ledger", R"({"add": 4})", "--wait", "5000"});
  CHECK(send.exit_code == 0);
  CHECK(has(send.out, R"(reply {"total":4})"));
  CHECK(n.keel_json({"query", "cli/ledger"}) == json{{"total", 4}});
  json events = n.keel_jsonl({"ledger", "cli/ledger"});
  CHECK(events.size() == 3);
  // The agent "cli" does not exist.
  CHECK(n.keel({"show", "cli"}).exit_code == 1);
}

TEST_CASE("keel reads the server from KEEL_SERVER and the token from KEEL_TOKEN") {
  cli_node n({"--token", "s3cret"});
  test::refused_port closed;
  const env_list env{{"KEEL_SERVER", n.server()}, {"KEEL_TOKEN", "s3cret"}};

  auto spawn = run_keel({"spawn", "counter", "a"}, env);
  CHECK_MESSAGE(spawn.exit_code == 0, spawn.err);
  CHECK(has(spawn.out, "spawned a"));

  auto no_token = run_keel({"show", "a"}, {{"KEEL_SERVER", n.server()}});
  CHECK(no_token.exit_code == 1);
  CHECK(has(no_token.err, "unauthorized"));
  CHECK(has(no_token.err, "401"));

  auto flag_token = run_keel({"--token", "s3cret", "show", "a"}, {{"KEEL_SERVER", n.server()}});
  CHECK(flag_token.exit_code == 0);
  CHECK(has(flag_token.out, "name        a\n"));

  auto wrong = run_keel({"--token", "nope", "show", "a"}, env);  // the flag wins
  CHECK(wrong.exit_code == 1);
  CHECK(has(wrong.err, "401"));

  // --server overrides KEEL_SERVER.
  auto flag_server =
      run_keel({"--server", n.server(), "show", "a"},
               {{"KEEL_SERVER", server_url(closed.port())}, {"KEEL_TOKEN", "s3cret"}});
  CHECK(flag_server.exit_code == 0);

  auto health = run_keel({"health"}, {{"KEEL_SERVER", n.server()}});  // open without a token
  CHECK(health.exit_code == 0);
  CHECK(health.out.rfind("ok", 0) == 0);
}

TEST_CASE("a token read from a file serves like --token, and stays out of the process list") {
  test::temp_dir secrets("keel-token");
  const std::string file = secrets.str() + "/token";
  {
    std::ofstream out(file);
    out << "  s3cret-from-file \n";
  }
  std::filesystem::permissions(
      file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  cli_node n({"--token-file", file});
  n.token = "s3cret-from-file";  // for the replay check
  // Nothing in keeld's command line gives the token away.
  std::ifstream cmdline("/proc/" + std::to_string(n.keeld.pid()) + "/cmdline");
  std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  CHECK_FALSE(has(args, "s3cret"));
  CHECK_FALSE(has(n.keeld.output(), "readable by others"));

  auto refused = run_keel({"spawn", "counter", "a"}, {{"KEEL_SERVER", n.server()}});
  CHECK(refused.exit_code == 1);
  CHECK(has(refused.err, "401"));
  auto flag =
      run_keel({"--token-file", file, "spawn", "counter", "a"}, {{"KEEL_SERVER", n.server()}});
  CHECK_MESSAGE(flag.exit_code == 0, flag.err);
  auto env = run_keel({"show", "a"}, {{"KEEL_SERVER", n.server()}, {"KEEL_TOKEN_FILE", file}});
  CHECK_MESSAGE(env.exit_code == 0, env.err);
  CHECK(has(env.out, "name        a\n"));
  auto missing =
      run_keel({"--token-file", file + ".nope", "show", "a"}, {{"KEEL_SERVER", n.server()}});
  CHECK(missing.exit_code == 2);
  CHECK(has(missing.err, "cannot read the token file"));

  // keeld refuses an empty file, or a token given twice, before it starts.
  const std::string empty = secrets.str() + "/empty";
  std::ofstream(empty).flush();
  test::temp_dir data("keel-token-data");
  test::keeld_process bad(KEEL_KEELD_PATH, data.str(), {"--token-file", empty});
  CHECK_FALSE(bad.start());
  CHECK(bad.exit_code() == 2);
  CHECK(has(bad.output(), "is empty"));
  test::keeld_process twice(KEEL_KEELD_PATH, data.str(), {"--token-file", file, "--token", "x"});
  CHECK_FALSE(twice.start());
  CHECK(has(twice.output(), "not both"));
}
