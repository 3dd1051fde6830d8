// The agent loop end to end: a real keeld with agent-type specs (--agents),
// the scripted or fake OpenAI model, http tools on the fake tool server, exec
// tools, worker queues with a worker process, SIGKILL and restart. Each case
// writes its specs and scripts into its own temp dir and waits only on
// conditions with deadlines.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "support/child_process.hpp"
#include "support/fake_openai_server.hpp"
#include "support/fake_tool_server.hpp"
#include "support/loop_node.hpp"
#include "support/loop_scenarios.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::loop;
namespace fs = std::filesystem;

namespace {

// Starts `n` with the example refund desk, in the example's layout:
// agents/ and scripts/ side by side.
void start_example_refund_desk(loop_node& n) {
  const fs::path examples = fs::path(KEEL_SOURCE_DIR) / "examples";
  write_json(n.dir() / "agents" / "refund-desk.json",
             read_json(examples / "agents" / "refund-desk.json"));
  write_json(n.dir() / "scripts" / "refund-desk.json",
             read_json(examples / "scripts" / "refund-desk.json"));
  n.start();
}

}  // namespace

TEST_CASE("the refund desk asks for approval, survives SIGKILL and refunds once approved") {
  loop_node n;
  start_example_refund_desk(n);

  const std::string agent = "desk/alice";
  n.spawn(agent, "refund-desk");
  n.send(agent, "Please refund order 9.");
  json v = n.wait_phase(agent, "waiting_approval");
  CHECK(v["state"]["turn"]["wait"]["tool"] == "refund");
  CHECK(v["state"]["turn"]["wait"]["arguments"] == json{{"order", 9}, {"amount", 120}});

  n.kill9_and_restart();
  v = n.view(agent);
  CHECK(v["phase"] == "waiting_approval");
  CHECK(v["state"]["turn"]["wait"]["arguments"] == json{{"order", 9}, {"amount", 120}});

  // Maria approves with a token of her own: the ledger names her
  // principal, whatever a payload says.
  const std::string maria = n.create_token("maria", {"approve"});
  auto approved = n.signal(agent, "approve", {{"by", "someone else"}}, maria);
  CHECK(approved.body["reply"] == json{{"call", "refund"}, {"approved", true}});
  v = n.wait_turns(agent);
  const std::string answer = "Refunded 120 on order 9 for customer 42 (refund r-9).";
  CHECK(v["phase"] == "idle");
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == answer);

  auto events = n.ledger(agent);
  check_in_order(
      events,
      {{"effect_completed",
        {{"tool", "lookup_order"},
         {"result", {{"order", 9}, {"customer", 42}, {"amount", 120}, {"status", "delivered"}}}}},
       {"model_replied",
        {{"tool_calls",
          {{{"id", "call_1_0"},
            {"name", "refund"},
            {"arguments", {{"order", 9}, {"amount", 120}}}}}}}},
       {"guardrail_decided",
        {{"tool", "refund"}, {"verdict", "require_approval"}, {"rule", "big-refund"}}},
       {"approval_requested", {{"tool", "refund"}, {"arguments", {{"order", 9}, {"amount", 120}}}}},
       {"signal_received",
        {{"signal", "approve"}, {"payload", {{"by", "maria"}, {"note", "someone else"}}}}},
       {"guardrail_decided",
        {{"tool", "refund"}, {"verdict", "approved"}, {"by", "maria"}, {"note", "someone else"}}},
       {"effect_started", {{"tool", "refund"}, {"attempt", 1}}},
       {"effect_completed",
        {{"tool", "refund"}, {"result", {{"refunded", true}, {"refund_id", "r-9"}}}}},
       {"turn_completed", {{"status", "completed"}, {"answer", answer}}}});
  // Each tool ran once: lookup_order before the crash, refund after it.
  CHECK(of_type(events, "effect_started").size() == 2);
  CHECK(of_type(events, "turn_completed").size() == 1);
}

TEST_CASE("the refund desk's answer says what happened: a rejected refund is not reported done") {
  loop_node n;
  start_example_refund_desk(n);
  const std::string agent = "desk/carol";
  n.spawn(agent, "refund-desk");
  n.send(agent, "Please refund order 9.");
  n.wait_phase(agent, "waiting_approval");
  n.signal(agent, "reject", {{"reason", "duplicate of ticket 4700"}});
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  // The script's answer follows the refusal the model was given.
  CHECK(v["state"]["last"]["answer"] == "I did not refund order 9: duplicate of ticket 4700.");
  CHECK(of_type(n.ledger(agent), "effect_started").size() == 1);  // the lookup only
}

TEST_CASE("an OpenAI model drives http tools: arguments reach the tool and results the model") {
  test::fake_openai_server model;
  test::fake_tool_server tools;
  test::tool_behaviour lookup;
  lookup.body = json{{"order", 9}, {"customer", 42}, {"amount", 120}};
  tools.set_behaviour("lookup_order", lookup);
  model.push_tool_call("lookup_order", {{"order", 9}}, "call_lookup");
  model.push_tool_call("refund", {{"order", 9}, {"amount", 80}}, "call_refund");
  model.push_text("Refunded 80 on order 9.");

  loop_node n;
  n.write_spec({{"name", "refund-desk"},
                {"instructions", "You are a refund desk."},
                {"model", openai_model(model)},
                {"tools",
                 {http_tool(tools, "lookup_order", true),
                  pinned(http_tool(tools, "refund", false), refund_parameters())}},
                {"guardrails", big_refund_needs_approval()}});
  n.start();

  const std::string agent = "desk/bob";
  n.spawn(agent, "refund-desk");
  n.send(agent, "Refund 80 on order 9.");
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == "Refunded 80 on order 9.");

  auto events = n.ledger(agent);
  REQUIRE(tools.calls("lookup_order") == 1);
  REQUIRE(tools.calls("refund") == 1);
  auto l = tools.last_call("lookup_order");
  CHECK(l.args == json{{"order", 9}});
  CHECK(l.idempotency_key == agent + "#" + std::to_string(effect_of(events, "lookup_order")));
  auto r = tools.last_call("refund");
  CHECK(r.args == json{{"order", 9}, {"amount", 80}});
  CHECK(r.idempotency_key == agent + "#" + std::to_string(effect_of(events, "refund")));

  auto requests = model.requests();
  REQUIRE(requests.size() == 3);
  const json& first = requests[0].body;
  CHECK(first["model"] == "gpt-test");
  REQUIRE(first["messages"].size() == 2);
  CHECK(first["messages"][0] == json{{"role", "system"}, {"content", "You are a refund desk."}});
  CHECK(first["messages"][1]["content"] == "Refund 80 on order 9.");
  CHECK(first["tools"].size() == 2);
  // The second request carries the lookup's result as a tool message.
  json second_tools = tool_messages(requests[1].body["messages"]);
  REQUIRE(second_tools.size() == 1);
  CHECK(second_tools[0]["tool_call_id"] == "call_lookup");
  CHECK(json::parse(second_tools[0]["content"].get<std::string>()) == lookup.body);
  json third_tools = tool_messages(requests[2].body["messages"]);
  REQUIRE(third_tools.size() == 2);
  CHECK(third_tools[1]["tool_call_id"] == "call_refund");
  CHECK(json::parse(third_tools[1]["content"].get<std::string>())["args"] == r.args);
}

TEST_CASE("an idempotent http call cut by SIGKILL is retried with the same Idempotency-Key") {
  test::fake_tool_server tools;
  loop_node n;
  const std::string agent = "books/one";
  start_held_post(tools, n, agent, true);
  const std::string key = tools.last_call("post_entry").idempotency_key;
  const uint64_t effect = effect_of(n.ledger(agent), "post_entry");
  CHECK(key == agent + "#" + std::to_string(effect));

  n.kill9_and_restart();
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == "posted");
  CHECK(tools.applied("post_entry") == 1);
  CHECK(tools.calls_for_key(key) == 2);
  auto log = tools.log();
  REQUIRE(log.size() == 2);
  CHECK(log[1].replayed);
  CHECK(log[1].header("X-Keel-Attempt") == "2");

  auto events = n.ledger(agent);
  check_in_order(events,
                 {{"effect_started", {{"effect", effect}, {"attempt", 1}}},
                  {"effect_started", {{"effect", effect}, {"attempt", 2}, {"recovered", true}}},
                  {"effect_completed", {{"effect", effect}}},
                  {"turn_completed", {{"status", "completed"}}}});
  CHECK(of_type(events, "effect_in_doubt").empty());
}

TEST_CASE("a non-idempotent http call cut by SIGKILL is in doubt until a human resolves it") {
  test::fake_tool_server tools;
  loop_node n;
  const std::string agent = "books/two";
  start_held_post(tools, n, agent, false);
  const uint64_t effect = effect_of(n.ledger(agent), "post_entry");

  n.kill9_and_restart();
  json v = n.wait_phase(agent, "in_doubt");
  CHECK(v["state"]["turn"]["wait"]["effect"] == effect);
  CHECK(v["state"]["turn"]["wait"]["tool"] == "post_entry");
  auto events = n.ledger(agent);
  check_in_order(events, {{"effect_started", {{"effect", effect}, {"attempt", 1}}},
                          {"effect_in_doubt", {{"effect", effect}, {"tool", "post_entry"}}}});
  // Settled in doubt: nothing called the tool again.
  CHECK(of_type(events, "effect_started").size() == 1);
  CHECK(tools.calls("post_entry") == 1);

  const json result = {{"entry", "e-1"}, {"posted", true}};
  auto resolved =
      n.signal(agent, "resolve", {{"outcome", "succeeded"}, {"result", result}, {"by", "ops"}});
  CHECK(resolved.body["reply"]["resolved"] == "succeeded");
  v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == "posted");
  CHECK(tools.calls("post_entry") == 1);
  check_in_order(
      n.ledger(agent),
      {{"effect_completed", {{"effect", effect}, {"result", result}, {"resolved_by", "anonymous"}}},
       {"turn_completed", {{"status", "completed"}}}});
}

TEST_CASE(
    "a deny rule refuses every rephrasing of a destructive call and the tool is never called") {
  test::fake_tool_server tools;
  loop_node n;
  const std::string gave_up = "I cannot delete that: destructive commands are refused.";
  n.write_spec(
      {{"name", "ops-bot"},
       {"model",
        scripted_model(n.write_script(
            "ops-bot",
            {calls_reply({tool_call("run_shell", {{"command", "rm -rf /var/data"}})}),
             calls_reply({tool_call("run_shell", {{"command", "RM -RF /var/data"}})}),
             calls_reply({tool_call("run_shell", {{"command", "cd /var && rm  -fr data"}})}),
             text_reply(gave_up)}))},
       {"tools",
        {pinned(http_tool(tools, "run_shell", false), {{"command", {{"type", "string"}}}})}},
       {"guardrails",
        {{"rules",
          {{{"name", "no-rm-rf"},
            {"tool", "run_shell"},
            {"pointer", "/command"},
            {"pattern", "(?i)rm\\s+-(rf|fr)"},
            {"action", "deny"},
            {"reason", "destructive commands are not allowed"}}}}}}});
  n.start();

  const std::string agent = "ops/one";
  n.spawn(agent, "ops-bot");
  n.send(agent, "free some disk space");
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == gave_up);
  CHECK(tools.total_calls() == 0);

  auto events = n.ledger(agent);
  auto decided = of_type(events, "guardrail_decided");
  REQUIRE(decided.size() == 3);
  for (const auto& d : decided) {
    CHECK(d["verdict"] == "deny");
    CHECK(d["rule"] == "no-rm-rf");
    CHECK(d["reason"] == "destructive commands are not allowed");
  }
  CHECK(of_type(events, "effect_started").empty());
  CHECK(of_type(events, "model_requested").size() == 4);
  // The model was told each time.
  json refusals = tool_messages(n.conversation(agent));
  REQUIRE(refusals.size() == 3);
  for (const auto& m : refusals)
    CHECK(m["content"].get<std::string>().find("no-rm-rf") != std::string::npos);
}

TEST_CASE("an approval rejected with a reason reaches the model as the call's refusal") {
  test::fake_openai_server model;
  test::fake_tool_server tools;
  model.push_tool_call("refund", {{"order", 9}, {"amount", 500}}, "call_big");
  model.push_text("A human refused the refund of 500.");
  loop_node n;
  n.write_spec({{"name", "refund-desk"},
                {"model", openai_model(model)},
                {"tools", {pinned(http_tool(tools, "refund", false), refund_parameters())}},
                {"guardrails", big_refund_needs_approval()}});
  n.start();

  const std::string agent = "desk/carol";
  n.spawn(agent, "refund-desk");
  n.send(agent, "Refund 500 on order 9.");
  n.wait_phase(agent, "waiting_approval");
  const std::string why = "500 exceeds the order total of 120";
  auto rejected =
      n.signal(agent, "reject", {{"reason", why}}, n.create_token("maria", {"approve"}));
  CHECK(rejected.body["reply"] == json{{"call", "refund"}, {"rejected", true}});
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["answer"] == "A human refused the refund of 500.");
  CHECK(tools.total_calls() == 0);

  auto requests = model.requests();
  REQUIRE(requests.size() == 2);
  json refusals = tool_messages(requests[1].body["messages"]);
  REQUIRE(refusals.size() == 1);
  CHECK(refusals[0]["tool_call_id"] == "call_big");
  json content = json::parse(refusals[0]["content"].get<std::string>());
  CHECK(content["verdict"] == "rejected");
  CHECK(content["reason"] == why);
  CHECK(tool_messages(n.conversation(agent)) == refusals);
  check_in_order(
      n.ledger(agent),
      {{"guardrail_decided", {{"verdict", "require_approval"}, {"rule", "big-refund"}}},
       {"guardrail_decided", {{"verdict", "rejected"}, {"by", "maria"}, {"reason", why}}},
       {"turn_completed", {{"status", "completed"}}}});
}

TEST_CASE("a per-turn tool_calls budget stops the turn before the second call") {
  test::fake_tool_server tools;
  loop_node n;
  n.write_spec(
      {{"name", "pinger"},
       {"model",
        scripted_model(n.write_script(
            "pinger", {calls_reply({tool_call("ping", {{"n", 1}}), tool_call("ping", {{"n", 2}})}),
                       text_reply("pinged twice")}))},
       {"tools", {http_tool(tools, "ping", true)}},
       {"budgets", {{"per_turn", {{"tool_calls", 1}}}}}});
  n.start();

  const std::string agent = "net/pinger";
  n.spawn(agent, "pinger");
  n.send(agent, "ping twice");
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "stopped");
  const std::string reason = v["state"]["last"].value("reason", "");
  CHECK_MESSAGE(reason.find("tool_calls") != std::string::npos, reason);
  CHECK(tools.calls("ping") == 1);
  CHECK(tools.last_args("ping") == json{{"n", 1}});

  auto events = n.ledger(agent);
  CHECK(of_type(events, "effect_started").size() == 1);
  CHECK(of_type(events, "model_requested").size() == 1);
  check_in_order(events, {{"effect_completed", {{"tool", "ping"}}},
                          {"turn_completed", {{"status", "stopped"}, {"reason", reason}}}});
}

TEST_CASE("a permanent failure compensates the completed calls in reverse order") {
  test::fake_tool_server tools;
  test::tool_behaviour refuse;
  refuse.status = 400;
  tools.set_behaviour("charge", refuse);
  loop_node n;
  json reserve = http_tool(tools, "reserve", false);
  reserve["compensate"] = "release";
  // The charge API answers 400 only when it did nothing, and says so.
  json charge = http_tool(tools, "charge", false);
  charge["not_applied"] = {{"http_statuses", {400}}};
  n.write_spec({{"name", "checkout"},
                {"model", scripted_model(n.write_script(
                              "checkout", {calls_reply({tool_call("reserve", {{"item", "a"}})}),
                                           calls_reply({tool_call("reserve", {{"item", "b"}})}),
                                           calls_reply({tool_call("charge", {{"amount", 10}})}),
                                           text_reply("charged")}))},
                {"tools", {reserve, http_tool(tools, "release", true), charge}}});
  n.start();

  const std::string agent = "shop/cart-1";
  n.spawn(agent, "checkout");
  n.send(agent, "buy a and b");
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "failed");
  const std::string reason = v["state"]["last"].value("reason", "");
  CHECK_MESSAGE(reason.find("charge") != std::string::npos, reason);
  CHECK(tools.calls("charge") == 1);  // 400 is permanent: not retried

  auto events = n.ledger(agent);
  std::vector<uint64_t> reserved;
  for (const auto& d : of_type(events, "effect_completed"))
    if (d["tool"] == "reserve") reserved.push_back(d["effect"].get<uint64_t>());
  REQUIRE(reserved.size() == 2);

  std::vector<test::tool_call_record> releases;
  for (auto& c : tools.log())
    if (c.tool == "release") releases.push_back(c);
  REQUIRE(releases.size() == 2);
  const char* items[] = {"b", "a"};
  for (std::size_t i = 0; i < 2; ++i) {
    CAPTURE(i);
    const json& args = releases[i].args;
    CHECK(args["tool"] == "reserve");
    CHECK(args["arguments"] == json{{"item", items[i]}});
    CHECK(args["result"] ==
          json{{"ok", true}, {"tool", "reserve"}, {"args", {{"item", items[i]}}}});
    CHECK(args["effect"] == reserved[1 - i]);
  }
  check_in_order(events,
                 {{"effect_failed", {{"effect", effect_of(events, "charge")}, {"final", true}}},
                  {"compensation_started", {{"tool", "release"}, {"for", reserved[1]}}},
                  {"compensation_completed", {{"for", reserved[1]}, {"ok", true}}},
                  {"compensation_started", {{"tool", "release"}, {"for", reserved[0]}}},
                  {"compensation_completed", {{"for", reserved[0]}, {"ok", true}}},
                  {"turn_completed", {{"status", "failed"}}}});
}

TEST_CASE("a worker task whose worker dies is handed to the next worker once its lease runs out") {
  loop_node n;
  n.write_spec(
      {{"name", "renderer"},
       {"model", scripted_model(n.write_script(
                     "renderer", {calls_reply({tool_call("render", {{"doc", "report-7"}})}),
                                  text_reply("rendered")}))},
       {"tools",
        {{{"name", "render"},
          {"parameters", {{"type", "object"}}},
          {"kind", "worker"},
          {"queue", "renders"},
          {"lease_ms", 600},
          // Rendering twice does no harm: the next worker may do it again.
          {"idempotent", true}}}}});
  n.start();

  const std::string agent = "docs/render-1";
  n.spawn(agent, "renderer");
  n.send(agent, "render report 7");
  n.wait_phase(agent, "waiting_worker");
  const uint64_t effect = effect_of(n.ledger(agent), "render");

  test::child_process first(
      {KEEL_TEST_WORKER_PATH, std::to_string(n.port()), "renders", "w1", "5000"});
  auto line = first.read_line(deadline);
  REQUIRE_MESSAGE(line.has_value(), "the first worker printed no task");
  const json leased = json::parse(*line)["task"];
  REQUIRE_MESSAGE(leased.is_object(), *line);
  CHECK(leased["agent"] == agent);
  CHECK(leased["tool"] == "render");
  CHECK(leased["arguments"] == json{{"doc", "report-7"}});
  CHECK(leased["attempt"] == 1);
  CHECK(leased["idempotency_key"] == agent + "#" + std::to_string(effect));
  first.kill9();

  // While its lease holds, nobody else gets the task.
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  if (now_ms() + 200 < leased["lease_until_ms"].get<int64_t>()) {
    auto early = n.post("/v1/tasks/poll", {{"queue", "renders"}, {"worker", "w2"}});
    REQUIRE_MESSAGE(early.status == 200, early.raw);
    CHECK_MESSAGE(early.body["task"].is_null(), early.raw);
  }

  auto second =
      n.post("/v1/tasks/poll", {{"queue", "renders"}, {"worker", "w2"}, {"wait_ms", 5000}});
  REQUIRE_MESSAGE(second.status == 200, second.raw);
  const json task = second.body["task"];
  REQUIRE_MESSAGE(task.is_object(), second.raw);
  CHECK(task["id"] == leased["id"]);
  CHECK(task["attempt"] == leased["attempt"]);
  CHECK(task["idempotency_key"] == leased["idempotency_key"]);
  CHECK(task["lease_until_ms"].get<int64_t>() >= leased["lease_until_ms"].get<int64_t>());

  const std::string done =
      "/v1/tasks/" + net::percent_encode(task["id"].get<std::string>()) + "/complete";
  auto completed = n.post(done, {{"result", {{"url", "s3://docs/report-7.pdf"}}}});
  CHECK_MESSAGE(completed.status == 200, completed.raw);
  CHECK(completed.body["recorded"] == true);
  auto again = n.post(done, {{"result", {{"url", "s3://docs/other.pdf"}}}});
  CHECK_MESSAGE(again.status == 404, again.raw);

  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == "rendered");
  auto events = n.ledger(agent);
  auto completions = of_type(events, "effect_completed");
  REQUIRE(completions.size() == 1);
  CHECK(completions[0]["effect"] == effect);
  CHECK(completions[0]["result"] == json{{"url", "s3://docs/report-7.pdf"}});

  auto stats = n.call("GET", "/v1/tasks");
  REQUIRE_MESSAGE(stats.status == 200, stats.raw);
  CHECK_MESSAGE(stats.body["requeued"].get<uint64_t>() >= 1, stats.raw);
}

TEST_CASE("cancelling a turn that waits for approval compensates its completed call") {
  test::fake_tool_server tools;
  loop_node n;
  const std::string agent = "hotel/booking-1";
  start_booking_awaiting_approval(tools, n, agent);

  auto cancelled = n.post(loop_node::path(agent) + "/cancel?wait=5000", {{"by", "ops"}});
  REQUIRE_MESSAGE(cancelled.status == 202, cancelled.raw);
  CHECK(cancelled.body["reply"] == json{{"cancelled", true}});
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "cancelled");
  CHECK(v["state"]["last"]["reason"] == "cancelled by anonymous");
  CHECK(tools.calls("refund") == 0);
  REQUIRE(tools.calls("release") == 1);

  auto events = n.ledger(agent);
  const uint64_t reserved = effect_of(events, "reserve");
  const json release = tools.last_args("release");
  CHECK(release["tool"] == "reserve");
  CHECK(release["arguments"] == json{{"item", "room-4"}});
  CHECK(release["effect"] == reserved);
  check_booking_cancelled(events, reserved);
}

// Reply n of a script answers every attempt of the agent's n-th model call
// (effects/scripted_model.hpp): a retry must not move on to the next reply.
TEST_CASE("every attempt of a retried scripted model call gets the same reply") {
  loop_node n;
  n.write_spec(
      {{"name", "flaky"},
       {"model",
        {{"provider", "scripted"},
         {"script", n.write_script("flaky", {{{"error", "overloaded"}, {"retryable", true}},
                                             text_reply("the reply of the next call")})},
         {"retry", {{"attempts", 3}, {"backoff_ms", 20}, {"jitter", 0}}}}}});
  n.start();

  const std::string agent = "flaky/one";
  n.spawn(agent, "flaky");
  n.send(agent, "hello");
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "failed");
  CHECK_MESSAGE(v["state"]["last"].value("reason", "").find("overloaded") != std::string::npos,
                v.dump());
  auto events = n.ledger(agent);
  auto requested = of_type(events, "model_requested");
  REQUIRE(requested.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(requested[i]["effect"] == requested[0]["effect"]);
    CHECK(requested[i]["attempt"] == i + 1);
  }
  CHECK(of_type(events, "model_replied").empty());
}
