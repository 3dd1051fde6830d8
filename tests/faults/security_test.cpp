// The security model end to end, on real keeld processes with their shipped
// authentication defaults: a tool cannot read the node's secrets nor drive
// its API, and what a caller may do and what the ledger says they did
// follow the token they hold, not what a request body claims.

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>

#include "faults/fault_support.hpp"
#include "support/file_scan.hpp"
#include "support/loop_node.hpp"

using namespace keel::test;
using namespace keel::test::loop;

namespace {

const std::string probe_path = KEEL_ESCAPE_PROBE_PATH;

// An exec tool running the escape probe with `attempts`.
json probe_tool(const std::string& name, const std::vector<std::string>& attempts,
                bool allow_network) {
  json argv = json::array({probe_path});
  for (const auto& a : attempts) argv.push_back(a);
  return {{"name", name},
          {"parameters", {{"type", "object"}}},
          {"kind", "exec"},
          {"argv", argv},
          {"paths", {{"read", {probe_path}}}},
          {"limits", {{"allow_network", allow_network}}},
          {"idempotent", true}};
}

// A type whose one tool needs a human's approval before it runs.
json guarded_type(loop_node& n) {
  json refund = {{"name", "refund"},
                 {"parameters", {{"type", "object"}}},
                 {"kind", "exec"},
                 {"argv", {"/bin/sh", "-c", "cat >/dev/null; echo '{\"refunded\": true}'"}},
                 {"require_approval", true}};
  return one_call_type(n, "guarded", refund);
}

// The probe's report, as the tool's recorded result.
json probe_result(loop_node& n, const std::string& agent) {
  auto done = of_type(n.ledger(agent), "effect_completed");
  REQUIRE(done.size() == 1);
  return done[0]["result"];
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("a tool allowed on the network cannot approve a guarded call through the API") {
  loop_node n;
  n.process().use_default_auth();
  n.write_spec(guarded_type(n));
  n.start();
  n.spawn("victim/1", "guarded");
  n.send("victim/1", "go");
  n.wait_phase("victim/1", "waiting_approval");

  // Another agent's tool, with the network, tries the loopback API. (Its
  // type is registered now, the port being known: by the admin.)
  const std::string admin_raw = read_file(n.dir() / "data" / "admin.token");
  const std::string admin = admin_raw.substr(0, admin_raw.find('\n'));
  const std::string approve =
      "post:" + std::to_string(n.port()) + "/v1/agents/victim%2F1/signals/approve";
  const std::string resolve = "post:" + std::to_string(n.port()) + "/v1/agents/victim%2F1/resolve";
  json attacker = one_call_type(n, "attacker", probe_tool("attack", {approve, resolve}, true));
  attacker["model"]["script"] =
      json::parse(read_file(attacker["model"]["script"].get<std::string>()));
  auto put = n.call("PUT", "/v1/types/attacker", attacker.dump(), admin);
  REQUIRE_MESSAGE(put.status / 100 == 2, put.raw);
  n.spawn("attacker/1", "attacker");
  n.send("attacker/1", "go");
  n.wait_turns("attacker/1");
  json report = probe_result(n, "attacker/1");
  CHECK_MESSAGE(report[approve]["detail"].get<std::string>().find("401") != std::string::npos,
                report.dump());
  CHECK(report[approve]["ok"] == false);
  CHECK(report[resolve]["ok"] == false);
  // The call still waits for a human; nothing was approved.
  CHECK(n.view("victim/1")["phase"] == "waiting_approval");
  CHECK(of_type(n.ledger("victim/1"), "signal_received").empty());

  // The node's admin token (kept in its data directory) can, and the
  // ledger names the principal.
  n.signal("victim/1", "approve", {{"by", "mallory"}}, admin);
  n.wait_turns("victim/1");
  auto decided = of_type(n.ledger("victim/1"), "guardrail_decided");
  REQUIRE_FALSE(decided.empty());
  CHECK(decided.back()["by"] == "admin");
  CHECK(decided.back()["note"] == "mallory");
}

TEST_CASE("a tool reads neither keeld's data, its token, its command line nor its environment") {
  loop_node n;
  n.process().use_default_auth();
  n.write_spec(one_call_type(
      n, "snoop",
      probe_tool(
          "snoop",
          {"read:/proc/1/cmdline", "read:/proc/1/environ", "list:" + n.dir().string(),
           "read:" + (n.dir() / "data" / "admin.token").string(), "read:/etc/shadow", "list:/proc"},
          false)));
  n.start();
  n.spawn("snoop/1", "snoop");
  n.send("snoop/1", "go");
  n.wait_turns("snoop/1");
  json report = probe_result(n, "snoop/1");
  const std::string admin = read_file(n.dir() / "data" / "admin.token");
  const std::string dumped = report.dump();
  INFO(dumped);
  // Root's shadow file is out of reach everywhere: a non-root keeld's tools
  // run as its user, a root keeld's as the tool uid.
  CHECK(report["read:/etc/shadow"]["ok"] == false);
  // The rest needs the namespaces, which keeld says at start it has.
  const std::string log = n.process().output();
  auto layer = [&](const std::string& name) {
    bool on = log.find(name + " yes") != std::string::npos;
    if (!on) MESSAGE(name, " unavailable here, not checked: ", log);
    return on;
  };
  if (layer("pid namespace")) {
    CHECK(dumped.find(admin.substr(0, admin.find('\n'))) == std::string::npos);
    CHECK(dumped.find("--data") == std::string::npos);
    CHECK(report["read:" + (n.dir() / "data" / "admin.token").string()]["ok"] == false);
  }
  if (layer("file system view")) CHECK(report["list:" + n.dir().string()]["ok"] == false);
  // keeld's pid is not among the processes the tool sees.
  if (layer("private /proc"))
    CHECK(report["list:/proc"]["detail"].get<std::string>().find(
              " " + std::to_string(n.process().pid()) + " ") == std::string::npos);
}

TEST_CASE("a token's scopes and agent limits decide what its holder may do") {
  loop_node n;
  n.process().use_default_auth();
  n.write_spec(guarded_type(n));
  n.start();
  const std::string admin_raw = read_file(n.dir() / "data" / "admin.token");
  const std::string admin = admin_raw.substr(0, admin_raw.find('\n'));

  // Anonymous requests may read and send, not approve or create tokens.
  n.spawn("ticket/1", "guarded");
  n.spawn("other/1", "guarded");
  for (const char* a : {"ticket/1", "other/1"}) {
    n.send(a, "go");
    n.wait_phase(a, "waiting_approval");
  }
  auto anon = n.call("POST", loop_node::path("ticket/1") + "/signals/approve", "{}");
  CHECK(anon.status == 401);
  CHECK(anon.body["error"]["message"].get<std::string>().find("lacks scope approve") !=
        std::string::npos);
  CHECK(n.call("POST", "/v1/tokens", R"({"principal": "x", "scopes": ["admin"]})").status == 401);
  // Nor answer a human's question, nor work a task queue.
  CHECK(n.call("POST", loop_node::path("ticket/1") + "/signals/answer", "{}").status == 401);
  CHECK(n.call("POST", "/v1/tasks/poll", R"({"queue": "q", "worker": "w"})").status == 401);

  // Maria may approve tickets, nothing else.
  auto created =
      n.call("POST", "/v1/tokens",
             R"({"principal": "maria", "scopes": ["approve"], "agents": ["ticket/*"]})", admin);
  REQUIRE_MESSAGE(created.status == 201, created.raw);
  const std::string maria = created.body["token"];
  CHECK(n.call("POST", loop_node::path("other/1") + "/signals/approve", "{}", maria).status == 403);
  CHECK(n.call("POST", loop_node::path("ticket/1") + "/pause", "{}", maria).status == 403);
  CHECK(n.call("DELETE", loop_node::path("ticket/1"), {}, maria).status == 403);
  CHECK(n.call("GET", "/v1/tokens", {}, maria).status == 403);
  auto who = n.call("GET", "/v1/whoami", {}, maria);
  CHECK(who.body["principal"] == "maria");
  CHECK(who.body["scopes"] == json{"approve"});

  n.signal("ticket/1", "approve", {{"by", "the CFO"}}, maria);
  n.wait_turns("ticket/1");
  auto decided = of_type(n.ledger("ticket/1"), "guardrail_decided");
  CHECK(decided.back()["by"] == "maria");
  CHECK(decided.back()["note"] == "the CFO");

  // An operator of tickets cannot fork one into a name outside them.
  auto ops =
      n.call("POST", "/v1/tokens",
             R"({"principal": "ops", "scopes": ["operate"], "agents": ["ticket/*"]})", admin);
  REQUIRE_MESSAGE(ops.status == 201, ops.raw);
  auto fork_out = n.call("POST", loop_node::path("ticket/1") + "/fork",
                         R"({"at": 3, "as": "other/fork"})", ops.body["token"]);
  CHECK_MESSAGE(fork_out.status == 403, fork_out.raw);

  // Kept hashed: the token itself is nowhere in the store's files, and it
  // survives a restart.
  CHECK_FALSE(any_file_holds(n.dir() / "data", maria));
  n.kill9_and_restart();
  CHECK(n.call("GET", "/v1/whoami", {}, maria).body["principal"] == "maria");

  // Revoked: refused at once, also after a restart.
  auto listed = n.call("GET", "/v1/tokens", {}, admin);
  REQUIRE(listed.body["tokens"].size() == 2);
  CHECK_FALSE(listed.body.dump().find(maria) != std::string::npos);
  std::string id;
  for (const auto& t : listed.body["tokens"])
    if (t["principal"] == "maria") id = t["id"];
  CHECK(n.call("DELETE", "/v1/tokens/" + id, {}, admin).status == 200);
  CHECK(n.call("GET", "/v1/whoami", {}, maria).status == 401);
  n.kill9_and_restart();
  CHECK(n.call("GET", "/v1/whoami", {}, maria).status == 401);
  CHECK(n.call("GET", "/v1/whoami", {}, "keel_000000000000_" + std::string(64, '0')).status == 401);
}
