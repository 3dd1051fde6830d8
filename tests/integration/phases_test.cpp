// What waits for whom, end to end through keeld and the keel CLI: signals
// checked before they are recorded, listings and gauges by phase that wake
// nobody, the exit codes of --wait, and keel retry.

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/cli_runner.hpp"
#include "support/fake_tool_server.hpp"
#include "support/loop_node.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::loop;
using keel::test::cli::run_keel;
using keel::test::cli::said;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The refund desk of examples/, its script beside it, as the README runs it.
void write_refund_desk(loop_node& n, const json& extra = json::object()) {
  const fs::path examples = fs::path(KEEL_SOURCE_DIR) / "examples";
  json spec = read_json(examples / "agents" / "refund-desk.json");
  spec.update(extra);
  write_json(n.dir() / "agents" / "refund-desk.json", spec);
  write_json(n.dir() / "scripts" / "refund-desk.json",
             read_json(examples / "scripts" / "refund-desk.json"));
}

// The value of one line ("NAME VALUE") of GET /metrics; -1 when absent.
int64_t metric(loop_node& n, const std::string& line_start) {
  const std::string text = n.call("GET", "/metrics").raw;
  auto at = text.find("\n" + line_start + " ");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + line_start.size() + 2));
}

}  // namespace

TEST_CASE("a mistyped or misplaced signal is refused unrecorded, and keel says what waits") {
  loop_node n(json{{"idle_ms", 300}});
  write_refund_desk(n);
  n.start();
  const std::string agent = "ticket/5000";
  n.spawn(agent, "refund-desk");
  n.post("/v1/agents", {{"name", "acct/alice"}, {"type", "counter"}});

  auto early = run_keel(n.port(), {"signal", agent, "approve"});
  CHECK_MESSAGE(early.exit_code == 1, said(early));
  CHECK_MESSAGE(has(early.err, "agent ticket/5000 is idle: nothing awaits approval (HTTP 409)"),
                said(early));

  // The turn parks on the approval: send --wait says so at once, with the
  // commands that move it on.
  auto sent = run_keel(n.port(), {"send", agent, R"("Please refund order 9.")", "--wait", "20000"});
  CHECK_MESSAGE(sent.exit_code == 3, said(sent));
  CHECK_MESSAGE(
      has(sent.out, R"(parked: waiting for approval of refund({"amount":120,"order":9}))"),
      said(sent));
  CHECK_MESSAGE(has(sent.out, "approve: keel signal ticket/5000 approve"), said(sent));
  CHECK_MESSAGE(has(sent.out, "reject: keel signal ticket/5000 reject --payload"), said(sent));
  const auto before = n.ledger(agent);

  auto typo = run_keel(n.port(), {"signal", agent, "aprove"});
  CHECK_MESSAGE(typo.exit_code == 1, said(typo));
  CHECK_MESSAGE(has(typo.err,
                    "agent ticket/5000 (type refund-desk) takes no signal 'aprove' (did you mean "
                    "approve?); it takes approve, reject, resolve, answer, cancel, retry (HTTP "
                    "400)"),
                said(typo));
  auto answer = run_keel(n.port(), {"signal", agent, "answer", "--payload", "{}"});
  CHECK_MESSAGE(answer.exit_code == 1, said(answer));
  CHECK_MESSAGE(has(answer.err, "is waiting_approval: nobody asked a human"), said(answer));
  // Neither took a place in the ledger, nor started a turn.
  CHECK(n.ledger(agent).size() == before.size());
  CHECK(n.view(agent)["state"]["queued"] == 0);

  // Listings: what waits for a person, by phase and node, and nobody woken.
  auto waiting = n.call("GET", "/v1/agents?waiting=true");
  REQUIRE(waiting.status == 200);
  REQUIRE(waiting.body["agents"].size() == 1);
  CHECK(waiting.body["agents"][0]["name"] == agent);
  CHECK(waiting.body["agents"][0]["phase"] == "waiting_approval");
  CHECK(waiting.body["agents"][0]["node"] == "local");
  auto ls = run_keel(n.port(), {"ls", "--waiting"});
  REQUIRE_MESSAGE(ls.exit_code == 0, said(ls));
  CHECK_MESSAGE(has(ls.out, "NAME         TYPE         PHASE             NODE   CREATED"), ls.out);
  CHECK_MESSAGE(has(ls.out, "ticket/5000  refund-desk  waiting_approval  local"), ls.out);
  CHECK_FALSE(has(ls.out, "acct/alice"));
  auto idle = run_keel(n.port(), {"--json", "ls", "--phase", "idle"});
  REQUIRE_MESSAGE(idle.exit_code == 0, said(idle));
  const json idle_page = json::parse(idle.out);
  REQUIRE(idle_page["agents"].size() == 1);
  CHECK(idle_page["agents"][0]["name"] == "acct/alice");
  auto bad_phase = n.call("GET", "/v1/agents?phase=waiting_aproval");
  CHECK(bad_phase.status == 400);
  CHECK_MESSAGE(has(bad_phase.raw, "did you mean waiting_approval?"), bad_phase.raw);
  auto show = run_keel(n.port(), {"show", agent});
  CHECK_MESSAGE(has(show.out, "node        local"), said(show));

  // Asked of /metrics, not of the agents: a view would wake them.
  auto next_ask = std::chrono::steady_clock::time_point{};
  REQUIRE(test::eventually(
      [&] {
        if (std::chrono::steady_clock::now() < next_ask) return false;
        next_ask = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        return metric(n, "keel_agents_live") == 0;
      },
      deadline));
  const int64_t activations = metric(n, "keel_activations_total");
  CHECK(metric(n, "keel_agents{phase=\"waiting_approval\"}") == 1);
  CHECK(metric(n, "keel_agents{phase=\"idle\"}") == 1);
  CHECK(metric(n, "keel_agents_hibernated") == 2);
  auto asleep = n.call("GET", "/v1/agents");
  REQUIRE(asleep.body["agents"].size() == 2);
  for (const auto& a : asleep.body["agents"]) CHECK(a["live"] == false);
  CHECK(metric(n, "keel_activations_total") == activations);

  auto approved = run_keel(n.port(), {"signal", agent, "approve", "--wait", "20000"});
  CHECK_MESSAGE(approved.exit_code == 0, said(approved));
  CHECK_MESSAGE(has(approved.out, R"(reply {"approved":true,"call":"refund"})"), said(approved));
  n.wait_turns(agent);

  // Terminated agents leave the list unless it asks for all of them.
  REQUIRE(n.call("DELETE", loop_node::path("acct/alice")).status == 200);
  auto rest = run_keel(n.port(), {"ls"});
  CHECK_MESSAGE(has(rest.out, "ticket/5000  refund-desk  idle"), rest.out);
  CHECK_FALSE(has(rest.out, "acct/alice"));
  auto all = run_keel(n.port(), {"ls", "--all"});
  CHECK_MESSAGE(has(all.out, "acct/alice   counter      terminated"), all.out);
}

TEST_CASE("send --wait exits 4 on a failed turn and 5 while it still runs; keel retry reruns it") {
  test::fake_tool_server tools;
  test::tool_behaviour refuse_once;
  refuse_once.fail_first = 1;
  refuse_once.fail_status = 400;
  tools.set_behaviour("charge", refuse_once);
  test::tool_behaviour held;
  held.hold = true;
  tools.set_behaviour("slow", held);
  loop_node n;
  json charge = http_tool(tools, "charge", false);
  charge["not_applied"] = {{"http_statuses", {400}}};  // a 400 proves nothing happened
  n.write_spec({{"name", "checkout"},
                {"model", scripted_model(n.write_script(
                              "checkout", {calls_reply({tool_call("charge", {{"amount", 10}})}),
                                           calls_reply({tool_call("charge", {{"amount", 10}})}),
                                           text_reply("charged")}))},
                {"tools", {charge}},
                {"signals", {"escalate"}}});
  n.write_spec(
      {{"name", "waiter"},
       {"model",
        scripted_model(n.write_script(
            "waiter", {calls_reply({tool_call("slow", json::object())}), text_reply("done")},
            /*cycle=*/true))},
       {"tools", {http_tool(tools, "slow", true)}}});
  n.start();
  const std::string agent = "shop/1";
  n.spawn(agent, "checkout");

  auto nothing = run_keel(n.port(), {"retry", agent});
  CHECK_MESSAGE(nothing.exit_code == 1, said(nothing));
  CHECK_MESSAGE(has(nothing.err, "no turn has run yet: nothing to retry (HTTP 409)"),
                said(nothing));

  auto failed = run_keel(n.port(), {"send", agent, R"("charge 10")", "--wait", "20000"});
  CHECK_MESSAGE(failed.exit_code == 4, said(failed));
  CHECK_MESSAGE(has(failed.out, "failed: tool charge failed"), said(failed));
  CHECK_MESSAGE(has(failed.out, "retry: keel retry shop/1"), said(failed));
  CHECK(n.call("GET", "/v1/agents?phase=idle").body["agents"].size() == 1);

  auto retried = run_keel(n.port(), {"retry", agent, "--by", "ops", "--wait", "20000"});
  CHECK_MESSAGE(retried.exit_code == 0, said(retried));
  CHECK_MESSAGE(has(retried.out, R"("answer":"charged")"), said(retried));
  CHECK(tools.calls("charge") == 2);
  auto again = run_keel(n.port(), {"retry", agent});
  CHECK_MESSAGE(again.exit_code == 1, said(again));
  CHECK_MESSAGE(has(again.err, "the last turn (2) completed: nothing to retry"), said(again));

  const auto events = n.ledger(agent);
  check_in_order(
      events, {{"turn_completed", {{"turn", 1}, {"status", "failed"}}},
               {"signal_received", {{"signal", "retry"}}},
               {"turn_started", {{"turn", 2}, {"retry_of", 1}}},
               {"turn_completed", {{"turn", 2}, {"status", "completed"}, {"answer", "charged"}}}});
  CHECK(of_type(events, "signal_received").size() == 1);  // the refused ones left nothing
  const json conv = n.conversation(agent);
  int inputs = 0;
  for (const auto& m : conv) inputs += m["role"] == "user" && m["content"] == "charge 10";
  CHECK(inputs == 2);

  // A declared signal starts a turn; one the spec does not declare is 400.
  auto undeclared = n.call("POST", loop_node::path(agent) + "/signals/remind", "");
  CHECK(undeclared.status == 400);
  CHECK_MESSAGE(has(undeclared.raw,
                    "it takes approve, reject, resolve, answer, cancel, retry, "
                    "escalate"),
                undeclared.raw);

  // No reply within the wait: the phase, and exit 5.
  n.spawn("shop/2", "waiter");
  auto slow = run_keel(n.port(), {"send", "shop/2", R"("go")", "--wait", "300"});
  CHECK_MESSAGE(slow.exit_code == 5, said(slow));
  CHECK_MESSAGE(has(slow.out, "no reply within 300 ms; the agent is running_tool"), said(slow));
  auto raw = n.post(loop_node::path("shop/2") + "/messages?wait=200", {{"body", "again"}});
  CHECK(raw.body["phase"] == "running_tool");
  CHECK(raw.body["wait"]["tool"] == "slow");
  tools.set_behaviour("slow", test::tool_behaviour{});
  tools.release();
  n.wait_turns("shop/2", 2);

  // The next page's command keeps the filters.
  auto page = run_keel(n.port(), {"ls", "--phase", "idle", "--limit", "1"});
  CHECK_MESSAGE(has(page.out, "shop/1"), said(page));
  CHECK_FALSE(has(page.out, "shop/2"));
  CHECK_MESSAGE(has(page.err, "more: keel ls --after shop/1 --limit 1 --phase idle"), said(page));
}

TEST_CASE("restarted without --agents, an agent runs the version of its type the node stored") {
  loop_node n;
  write_refund_desk(n);
  n.start();
  const std::string agent = "ticket/4711";
  n.spawn(agent, "refund-desk");
  n.send(agent, "Please refund order 9.");
  n.wait_phase(agent, "waiting_approval");

  fs::remove(n.dir() / "agents" / "refund-desk.json");
  n.kill9_and_restart();
  auto show = run_keel(n.port(), {"show", agent});
  CHECK_MESSAGE(show.exit_code == 0, said(show));
  CHECK_MESSAGE(has(show.out, "phase       waiting_approval: refund"), said(show));
  auto approved = run_keel(n.port(), {"signal", agent, "approve", "--wait", "20000"});
  CHECK_MESSAGE(approved.exit_code == 0, said(approved));
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  // The stored version goes on deciding: the next refund waits for approval.
  auto sent = run_keel(n.port(), {"send", agent, R"("Refund order 9 again.")", "--wait", "20000"});
  CHECK_MESSAGE(sent.exit_code == 3, said(sent));
}
