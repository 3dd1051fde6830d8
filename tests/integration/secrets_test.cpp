// Named secrets end to end: a real keeld, the keel CLI, agent types whose
// http and exec tools refer to ${secret:NAME}, the fake tool server. A
// value must reach the tool and never the ledger, an agent's view, the
// type's spec or the data directory's bytes.

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/sha256.hpp"
#include "support/cli_runner.hpp"
#include "support/fake_tool_server.hpp"
#include "support/file_scan.hpp"
#include "support/loop_node.hpp"
#include "support/temp_dir.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::loop;
namespace fs = std::filesystem;
namespace cli = keel::test::cli;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// keel secret set NAME, the value on stdin as `echo` would give it.
void set_secret(loop_node& n, const std::string& name, const std::string& value,
                const std::string& said_ok = "set") {
  auto r = cli::run_keel_with_stdin(n.port(), {"secret", "set", name}, value + "\n");
  REQUIRE_MESSAGE(r.exit_code == 0, cli::said(r));
  CHECK(r.out == said_ok + " secret " + name + "\n");
}

// Spawns `agent` of `type`, sends it one message and waits for the turn;
// returns its view.
json first_turn(loop_node& n, const std::string& agent, const std::string& type) {
  n.spawn(agent, type);
  n.send(agent, "go");
  return n.wait_turns(agent);
}

std::string all_text(const std::vector<json>& events) {
  std::string s;
  for (const auto& e : events) s += e.dump() + "\n";
  return s;
}

// An agent type whose scripted model calls `tool` with {} and then answers
// "done", every turn.
json one_tool_type(loop_node& n, const std::string& name, const json& tool) {
  return {{"name", name},
          {"model",
           scripted_model(n.write_script(
               name, {calls_reply({tool_call(tool["name"], json::object())}), text_reply("done")},
               true))},
          {"tools", {tool}}};
}

json crm_tool(const test::fake_tool_server& tools, bool idempotent = true) {
  json tool = http_tool(tools, "lookup_crm", idempotent);
  tool["headers"] = {{"Authorization", "Bearer ${secret:crm}"}, {"X-Plain", "$${not-a-secret}"}};
  return tool;
}

}  // namespace

TEST_CASE(
    "a secret set with keel secret set reaches an http tool's header and is redacted from its "
    "echo") {
  test::fake_tool_server tools;
  test::tool_behaviour echo;
  echo.echo_header = "Authorization";
  tools.set_behaviour("lookup_crm", echo);
  loop_node n;
  n.write_spec(one_tool_type(n, "crm-desk", crm_tool(tools)));
  n.start();
  const std::string value = "crm-token-7f3a9c2e51";
  set_secret(n, "crm", value);

  const std::string agent = "crm/one";
  json v = first_turn(n, agent, "crm-desk");
  CHECK(v["state"]["last"]["status"] == "completed");
  REQUIRE(tools.calls("lookup_crm") == 1);
  CHECK(tools.last_call("lookup_crm").header("Authorization") == "Bearer " + value);
  CHECK(tools.last_call("lookup_crm").header("X-Plain") == "${not-a-secret}");

  auto events = n.ledger(agent);
  auto done = of_type(events, "effect_completed");
  REQUIRE(done.size() == 1);
  CHECK(done[0]["result"]["header"] == "Bearer [secret:crm]");
  CHECK_FALSE(contains(all_text(events), value));
  CHECK_FALSE(contains(n.call("GET", loop_node::path(agent)).raw, value));
  CHECK_FALSE(contains(n.conversation(agent).dump(), value));

  // The type's spec keeps the reference, the listing only names.
  auto type = n.call("GET", "/v1/types/crm-desk");
  CHECK(contains(type.raw, "Bearer ${secret:crm}"));
  CHECK_FALSE(contains(type.raw, value));
  auto listed = n.call("GET", "/v1/secrets");
  REQUIRE(listed.status == 200);
  REQUIRE(listed.body["secrets"].size() == 1);
  CHECK(listed.body["secrets"][0]["name"] == "crm");
  CHECK(listed.body["secrets"][0]["source"] == "store");
  CHECK(listed.body["secrets"][0]["updated_ms"].get<int64_t>() > 0);
  CHECK_FALSE(contains(listed.raw, value));
  auto ls = cli::run_keel(n.port(), {"secret", "ls"});
  REQUIRE_MESSAGE(ls.exit_code == 0, cli::said(ls));
  CHECK(contains(ls.out, "crm"));
  CHECK(contains(ls.out, "store"));
  CHECK_FALSE(contains(ls.out, value));
}

TEST_CASE("a replaced secret goes with the next call, the version stays, and it survives SIGKILL") {
  test::fake_tool_server tools;
  loop_node n;
  n.write_spec(one_tool_type(n, "crm-desk", crm_tool(tools)));
  n.start();
  const std::string first = "first-crm-value-1111", second = "second-crm-value-2222";
  set_secret(n, "crm", first);
  const std::string agent = "crm/two";
  first_turn(n, agent, "crm-desk");
  CHECK(tools.last_call("lookup_crm").header("Authorization") == "Bearer " + first);
  const json version = n.call("GET", "/v1/types/crm-desk").body["version"];

  set_secret(n, "crm", second, "replaced");
  n.send(agent, "two");
  n.wait_turns(agent, 2);
  CHECK(tools.last_call("lookup_crm").header("Authorization") == "Bearer " + second);
  CHECK(n.call("GET", "/v1/types/crm-desk").body["version"] == version);
  CHECK(n.view(agent)["version"] == version);

  n.kill9_and_restart();
  n.send(agent, "three");
  n.wait_turns(agent, 3);
  CHECK(tools.calls("lookup_crm") == 3);
  CHECK(tools.last_call("lookup_crm").header("Authorization") == "Bearer " + second);

  // At rest: after a clean stop, no byte of the data directory (table
  // files, write-ahead log, archives) holds either value.
  n.check_replays();
  REQUIRE(n.process().terminate() == 0);
  const fs::path data = n.dir() / "data";
  CHECK(fs::exists(data / "secret.key"));
  CHECK_FALSE(keel::test::any_file_holds(data, first));
  CHECK_FALSE(keel::test::any_file_holds(data, second));
}

TEST_CASE("an exec tool gets a secret in its env, and its echo of it is recorded redacted") {
  loop_node n;
  const std::string script =
      "printf '{\"echo\": \"%s\", \"sha\": \"%s\", \"path\": \"%s\"}' \"$API_TOKEN\" "
      "\"$(printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1)\" \"$PATH\"";
  json tool = {{"name", "report"},
               {"kind", "exec"},
               {"argv", {"/bin/sh", "-c", script}},
               {"env", {{"API_TOKEN", "${secret:tok}"}}},
               {"retry", {{"attempts", 1}, {"timeout_ms", 20'000}}}};
  n.write_spec(one_tool_type(n, "reporter", tool));
  n.start();
  const std::string value = "exec-token-3b8d61";
  set_secret(n, "tok", value);

  const std::string agent = "rep/one";
  json v = first_turn(n, agent, "reporter");
  CHECK(v["state"]["last"]["status"] == "completed");
  auto done = of_type(n.ledger(agent), "effect_completed");
  REQUIRE(done.size() == 1);
  const json& result = done[0]["result"];
  CHECK(result["echo"] == "[secret:tok]");
  CHECK(result["sha"] == to_hex(sha256(value)));  // the tool had the value itself
  CHECK(result["path"] == "/usr/bin:/bin");
  CHECK_FALSE(contains(all_text(n.ledger(agent)), value));
}

TEST_CASE("secrets from a file and a variable in the node config are used and cannot be removed") {
  test::temp_dir secrets_dir("keel-secret-files");
  const fs::path file = secrets_dir.path() / "crm";
  const std::string from_file = "file-crm-value-77", from_env = "env-tok-value-88";
  std::ofstream(file) << from_file << "\n";
  fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
  test::fake_tool_server tools;
  const json config = {
      {"secrets", {{"crm", {{"file", file.string()}}}, {"tok", {{"env", "KEEL_IT_SECRET_TOK"}}}}}};
  loop_node n(config);
  n.process().set_env("KEEL_IT_SECRET_TOK", from_env);
  json tool = crm_tool(tools);
  tool["headers"]["X-Token"] = "${secret:tok}";
  n.write_spec(one_tool_type(n, "crm-desk", tool));
  n.start();

  first_turn(n, "crm/three", "crm-desk");
  REQUIRE(tools.calls("lookup_crm") == 1);
  CHECK(tools.last_call("lookup_crm").header("Authorization") == "Bearer " + from_file);
  CHECK(tools.last_call("lookup_crm").header("X-Token") == from_env);

  auto listed = n.call("GET", "/v1/secrets");
  REQUIRE(listed.status == 200);
  CHECK(listed.body["secrets"][0]["name"] == "crm");
  CHECK(listed.body["secrets"][0]["source"] == "file");
  CHECK(listed.body["secrets"][0]["from"] == file.string());
  CHECK(listed.body["secrets"][1]["source"] == "env");
  CHECK(listed.body["secrets"][1]["from"] == "KEEL_IT_SECRET_TOK");
  CHECK_FALSE(contains(listed.raw, from_file));
  CHECK_FALSE(contains(listed.raw, from_env));

  auto del = n.call("DELETE", "/v1/secrets/crm");
  CHECK(del.status == 409);
  CHECK(del.body["error"]["code"] == "conflict");
  auto put = n.call("PUT", "/v1/secrets/tok", json{{"value", "other"}}.dump());
  CHECK(put.status == 409);
  auto rm = cli::run_keel(n.port(), {"secret", "rm", "crm"});
  CHECK(rm.exit_code == 1);
  CHECK(contains(rm.err, "comes from the node config"));
}

TEST_CASE("the secrets API answers 201, 200, 404 and 400 and never holds a value") {
  loop_node n;
  n.start();
  auto created = n.call("PUT", "/v1/secrets/api.key-1", json{{"value", "value-one-1"}}.dump());
  CHECK(created.status == 201);
  CHECK(created.body["created"] == true);
  CHECK(created.body["name"] == "api.key-1");
  auto replaced = n.call("PUT", "/v1/secrets/api.key-1", json{{"value", "value-two-2"}}.dump());
  CHECK(replaced.status == 200);
  CHECK(replaced.body["created"] == false);
  CHECK_FALSE(contains(created.raw + replaced.raw, "value-"));

  CHECK(n.call("PUT", "/v1/secrets/bad%20name", json{{"value", "v"}}.dump()).status == 400);
  CHECK(n.call("PUT", "/v1/secrets/x", json{{"value", ""}}.dump()).status == 400);
  CHECK(n.call("PUT", "/v1/secrets/x", json{{"value", 7}}.dump()).status == 400);
  CHECK(n.call("PUT", "/v1/secrets/x", json{{"val", "v"}}.dump()).status == 400);
  CHECK(n.call("POST", "/v1/secrets/x", "").status == 405);
  CHECK(n.call("DELETE", "/v1/secrets/absent").status == 404);
  CHECK(n.call("DELETE", "/v1/secrets/api.key-1").status == 200);
  CHECK(n.call("GET", "/v1/secrets").body["secrets"].empty());

  // The CLI never takes a value from its command line.
  auto argv_value = cli::run_keel(n.port(), {"secret", "set", "x", "value-on-argv"});
  CHECK(argv_value.exit_code == 2);
  CHECK(contains(argv_value.err, "stdin or pass --from-file"));
  test::temp_dir d("keel-secret-cli");
  std::ofstream(d.path() / "v") << "from-file-value\n";
  auto from_file =
      cli::run_keel(n.port(), {"secret", "set", "x", "--from-file", (d.path() / "v").string()});
  CHECK_MESSAGE(from_file.exit_code == 0, cli::said(from_file));
  CHECK(n.call("GET", "/v1/secrets").body["secrets"][0]["name"] == "x");
}

TEST_CASE(
    "a call referring to a secret the node lacks fails plainly, sends nothing, is not in doubt") {
  test::fake_tool_server tools;
  loop_node n;
  n.write_spec(one_tool_type(n, "crm-desk", crm_tool(tools, false)));
  n.start();
  const std::string agent = "crm/four";
  json v = first_turn(n, agent, "crm-desk");
  CHECK(v["state"]["last"]["status"] == "failed");
  CHECK(tools.calls("lookup_crm") == 0);
  auto events = n.ledger(agent);
  auto failed = of_type(events, "effect_failed");
  REQUIRE(failed.size() == 1);
  CHECK(failed[0]["final"] == true);
  CHECK(failed[0]["error"] ==
        "tool lookup_crm: header Authorization: secret \"crm\" is not set on this node");
  CHECK(of_type(events, "effect_in_doubt").empty());
}

TEST_CASE("a tool's error quoting the secret is recorded redacted") {
  test::fake_tool_server tools;
  test::tool_behaviour refuse;
  refuse.status = 401;
  refuse.echo_header = "Authorization";
  tools.set_behaviour("lookup_crm", refuse);
  loop_node n;
  json tool = crm_tool(tools);
  tool["not_applied"] = {{"http_statuses", {401}}};
  n.write_spec(one_tool_type(n, "crm-desk", tool));
  n.start();
  const std::string value = "crm-token-rejected-42";
  set_secret(n, "crm", value);
  first_turn(n, "crm/five", "crm-desk");
  auto events = n.ledger("crm/five");
  auto failed = of_type(events, "effect_failed");
  REQUIRE(failed.size() == 1);
  const std::string error = failed[0]["error"];
  CHECK(contains(error, "HTTP 401"));
  CHECK(contains(error, "Authorization: Bearer [secret:crm]"));
  CHECK_FALSE(contains(all_text(events), value));
}

TEST_CASE("keeld refuses a key file others may read and a key that is not its secrets' own") {
  loop_node n;
  n.start();
  set_secret(n, "crm", "crm-value-for-keys");
  REQUIRE(n.process().terminate() == 0);
  const fs::path key = n.dir() / "data" / "secret.key";
  REQUIRE(fs::exists(key));

  REQUIRE(::chmod(key.c_str(), 0644) == 0);
  CHECK_FALSE(n.process().start());
  CHECK(contains(n.process().output(), "may be read or written by its group or others"));
  CHECK(contains(n.process().output(), "chmod 600 " + key.string()));

  // Another key, as safe as the first: the stored value does not open.
  fs::remove(key);
  {
    std::ofstream out(key, std::ios::binary);
    out << std::string(32, 'k');
  }
  fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  CHECK_FALSE(n.process().start());
  CHECK(contains(n.process().output(), "secret \"crm\" does not decrypt with this key"));

  // The way out when the key is lost: forget the stored secrets.
  const int forgot =
      n.process().run_to_exit({"--data", (n.dir() / "data").string(), "--forget-secrets"});
  CHECK_MESSAGE(forgot == 0, n.process().output());
  CHECK(contains(n.process().output(), "deleted 1 stored secrets"));
  n.start();
  CHECK(n.call("GET", "/v1/secrets").body["secrets"].empty());
}
