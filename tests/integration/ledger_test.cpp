// The ledger as a whole, end to end: real keeld processes, the keel CLI as a
// child process, the fake model and tool servers. Replay and eval must never
// reach a model or a tool; pause, cancel and resolve hold across SIGKILL; a
// record changed on disk is found by the audit; an exported ledger imports
// on another node; the ledger streams as Server-Sent Events; a hibernated
// agent forks; a compacted one goes on working. Every case ends by checking
// that the strict replay of every agent on its node is identical.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "http/sse.hpp"
#include "ledger/codec.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "support/cli_runner.hpp"
#include "support/fake_openai_server.hpp"
#include "support/fake_tool_server.hpp"
#include "support/keeld_process.hpp"
#include "support/loop_node.hpp"
#include "support/loop_scenarios.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::cli;
using namespace keel::test::loop;
namespace fs = std::filesystem;

namespace {

// --- the keel CLI's output ---------------------------------------------------

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// Lines of JSON (the ledger export); lines that are not JSON are skipped.
std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

// --- HTTP and ledger helpers -------------------------------------------------

// A request to the node at `port` on a connection of its own (usable after
// a restart, and for nodes not run by a loop_node).
answer call_at(uint16_t port, std::string_view method, const std::string& target,
               std::string_view body = {}) {
  net::http_client c;
  REQUIRE(c.connect("127.0.0.1", port).is_ok());
  auto r = c.request(method, target, body);
  REQUIRE_MESSAGE(r.is_ok(), std::string(method) << " " << target << ": " << r.error().to_string());
  return {r->status, r->body, json::parse(r->body, nullptr, false)};
}

std::string agent_path(const std::string& name) {
  return "/v1/agents/" + net::percent_encode(name);
}

std::vector<json> ledger_at(uint16_t port, const std::string& name) {
  auto r = call_at(port, "GET", agent_path(name) + "/ledger?limit=10000");
  REQUIRE_MESSAGE(r.status == 200, r.raw);
  REQUIRE_MESSAGE(r.body["next"].is_null(), "the ledger of " << name << " is longer than a page");
  return r.body["events"].get<std::vector<json>>();
}

// The seqs of the events of `type`, in order.
std::vector<uint64_t> seqs_of(const std::vector<json>& events, const std::string& type) {
  std::vector<uint64_t> out;
  for (const auto& e : events)
    if (e["type"] == type) out.push_back(e["seq"].get<uint64_t>());
  return out;
}

// The answer of the last completed turn among `events`; "" when none.
std::string last_answer(const std::vector<json>& events) {
  std::string answer;
  for (const auto& d : of_type(events, "turn_completed"))
    if (d.contains("answer") && d["answer"].is_string()) answer = d["answer"].get<std::string>();
  return answer;
}

bool has_message(const std::vector<json>& events, const std::string& id) {
  for (const auto& d : of_type(events, "message_received"))
    if (d.value("id", "") == id) return true;
  return false;
}

// Strict replay of every agent on the node at `port` is identical, except
// for those in `diverging`, whose replay must not be. Returns how many
// agents were replayed.
std::size_t check_every_replay(uint16_t port, const std::set<std::string>& diverging = {}) {
  auto list = call_at(port, "GET", "/v1/agents?limit=1000");
  REQUIRE_MESSAGE(list.status == 200, list.raw);
  std::size_t replayed = 0;
  for (const auto& a : list.body["agents"]) {
    const std::string name = a["name"].get<std::string>();
    auto r = call_at(port, "POST", agent_path(name) + "/replay", "{}");
    CAPTURE(name);
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    CHECK(r.body["mode"] == "strict");
    CHECK_MESSAGE(r.body["identical"] == !diverging.count(name), r.raw);
    CHECK(r.body["events"].get<uint64_t>() > 0);
    ++replayed;
  }
  CHECK(replayed > 0);
  return replayed;
}

// Waits until the node at `port` lists `name` as not live (hibernated).
// Only the listing is asked: GET of the agent itself would activate it.
void wait_hibernated(uint16_t port, const std::string& name) {
  json last;
  auto next_ask = std::chrono::steady_clock::time_point{};
  bool ok = test::eventually(
      [&] {
        if (std::chrono::steady_clock::now() < next_ask) return false;
        next_ask = std::chrono::steady_clock::now() + std::chrono::milliseconds(10);
        auto r = call_at(port, "GET", "/v1/agents?prefix=" + net::percent_encode(name));
        last = r.body;
        for (const auto& a : r.body.value("agents", json::array()))
          if (a["name"] == name) return a["live"] == false;
        return false;
      },
      deadline);
  REQUIRE_MESSAGE(ok, name << " did not hibernate: " << last.dump());
}

// --- specs -------------------------------------------------------------------

// An exec tool that prints `output` (JSON) whatever it is asked.
json exec_tool(const std::string& name, const json& output, bool idempotent) {
  return {{"name", name},
          {"description", "the " + name + " tool"},
          {"parameters", {{"type", "object"}}},
          {"kind", "exec"},
          {"argv", {"/bin/sh", "-c", "cat >/dev/null; echo '" + output.dump() + "'"}},
          {"idempotent", idempotent}};
}

// An exec tool that answers with its whole input: {"arguments", "agent",
// "idempotency_key", "attempt"} (effects/exec_tool.hpp), so its result
// shows which agent ran it with what.
json echo_tool(const std::string& name) {
  return {{"name", name},
          {"description", "the " + name + " tool"},
          {"parameters", {{"type", "object"}}},
          {"kind", "exec"},
          {"argv", {"/bin/sh", "-c", "cat"}},
          {"idempotent", true}};
}

// A refund desk on the scripted model: looks order 9 up, asks to refund
// 120 (which needs approval), answers; later turns answer `later` in order.
json refund_desk_spec(loop_node& n, const std::string& name,
                      const std::vector<std::string>& later = {}) {
  json replies = json::array({calls_reply({tool_call("lookup_order", {{"order", 9}})}),
                              calls_reply({tool_call("refund", {{"order", 9}, {"amount", 120}})}),
                              text_reply("Refunded 120 on order 9.")});
  for (const auto& text : later) replies.push_back(text_reply(text));
  return {
      {"name", name},
      {"instructions", "You are a refund desk."},
      {"model", scripted_model(n.write_script(name, replies))},
      {"tools",
       json::array({exec_tool("lookup_order", {{"order", 9}, {"amount", 120}}, true),
                    pinned(exec_tool("refund", {{"refunded", true}, {"refund_id", "r-9"}}, false),
                           refund_parameters())})},
      {"guardrails", big_refund_needs_approval()}};
}

// A lookup agent on the scripted model: each turn looks an order up with
// the echo tool, then answers. Replies cycle, so it takes any number of
// turns.
json lookup_spec(loop_node& n, const std::string& name, std::optional<uint32_t> idle_ms = {}) {
  json spec = {{"name", name},
               {"instructions", "You look orders up."},
               {"model", scripted_model(n.write_script(
                             name,
                             {calls_reply({tool_call("lookup_order", {{"order", 9}})}),
                              text_reply("Order 9 was delivered.")},
                             true))},
               {"tools", json::array({echo_tool("lookup_order")})}};
  if (idle_ms) spec["idle_ms"] = *idle_ms;
  return spec;
}

void post_counter(uint16_t port, const std::string& name, int add) {
  auto r =
      call_at(port, "POST", agent_path(name) + "/messages", json{{"body", {{"add", add}}}}.dump());
  REQUIRE_MESSAGE(r.status == 202, r.raw);
}

// Waits until the counter's ledger records the total `total`.
void wait_total(uint16_t port, const std::string& name, int64_t total) {
  std::vector<json> events;
  auto next_ask = std::chrono::steady_clock::time_point{};
  bool ok = test::eventually(
      [&] {
        if (std::chrono::steady_clock::now() < next_ask) return false;
        next_ask = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
        events = ledger_at(port, name);
        for (const auto& d : of_type(events, "state_changed"))
          if (d.value("total", int64_t{-1}) == total) return true;
        return false;
      },
      deadline);
  REQUIRE_MESSAGE(ok, name << " never reached total " << total << "; ledger:\n" << summary(events));
}

// Rewrites the ledger record at `seq` of agent `name` in the (stopped)
// node's store at `data_dir`: `data` in place of its event's data, its
// chain fields and the record framing kept and its checksum valid, as a
// careful forger would. Only the chain's hash can tell.
void forge_record(const std::string& data_dir, const std::string& name, uint64_t seq,
                  const json& data) {
  auto db = persistence::store::open({data_dir, 8ull << 20, false});
  REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
  auto meta = (*db)->get_agent(name);
  REQUIRE_MESSAGE(meta.is_ok(), meta.error().to_string());
  REQUIRE(meta->has_value());
  const uint64_t id = (**meta).id;
  auto records = (*db)->read_ledger(id, seq, 1, name);
  REQUIRE_MESSAGE(records.is_ok(), records.error().to_string());
  REQUIRE(records->size() == 1);
  REQUIRE((*records)[0].first == seq);
  persistence::record rec = (*records)[0].second;
  auto link = actors::ledger_link(rec, seq);
  REQUIRE(link.has_value());
  REQUIRE(link->matches);
  auto ev = actors::event_from_record(rec, "the record to forge");
  REQUIRE_MESSAGE(ev.is_ok(), ev.error().to_string());
  REQUIRE(ev->data != data);
  ev->data = data;
  const persistence::record plain = actors::to_record(*ev);
  REQUIRE((plain.type & actors::blob_ref_flag) == 0);
  rec.payload = rec.payload.substr(0, 64) + plain.payload;  // prev and hash as they were
  auto written =
      (*db)->write({{persistence::family::ledger, false, persistence::agent_seq_key(id, seq),
                     persistence::encode_record(rec)}},
                   true);
  REQUIRE_MESSAGE(written.is_ok(), written.to_string());

  // The forgery decodes (framing and checksum hold); only its hash is wrong.
  auto again = (*db)->read_ledger(id, seq, 1, name);
  REQUIRE(again.is_ok());
  REQUIRE(again->size() == 1);
  auto forged = actors::event_from_record((*again)[0].second, "the forged record");
  REQUIRE(forged.is_ok());
  CHECK(forged->data == data);
  auto forged_link = actors::ledger_link((*again)[0].second, seq);
  REQUIRE(forged_link.has_value());
  CHECK_FALSE(forged_link->matches);
  CHECK(forged_link->hash == link->hash);
}

}  // namespace

// --- 1. replay and eval are side-effect free ---------------------------------

TEST_CASE("replay, what-if runs, keel replay and keel eval never call the model or a tool") {
  test::fake_openai_server model;
  test::fake_tool_server tools;
  test::tool_behaviour lookup;
  lookup.body = json{{"order", 9}, {"status", "delivered"}};
  tools.set_behaviour("lookup_order", lookup);
  model.push_tool_call("lookup_order", {{"order", 9}}, "call_lookup");
  model.push_text("Order 9 was delivered.");

  loop_node n;
  n.write_spec({{"name", "tracker"},
                {"instructions", "You track orders."},
                {"model", openai_model(model)},
                {"tools", json::array({http_tool(tools, "lookup_order", true)})}});
  n.start();
  const std::string agent = "track/one";
  n.spawn(agent, "tracker");
  n.send(agent, "Where is order 9?");
  json v = n.wait_turns(agent);
  REQUIRE(v["state"]["last"]["status"] == "completed");
  REQUIRE(v["state"]["last"]["answer"] == "Order 9 was delivered.");

  // What the live run cost; from here on any contact is a failure.
  REQUIRE(model.calls() == 2);
  REQUIRE(tools.calls("lookup_order") == 1);
  const std::size_t model_calls = model.calls();
  const std::size_t tool_calls = tools.total_calls();
  model.fail_if_contacted(true);

  const auto events = n.ledger(agent);
  const auto results = seqs_of(events, "effect_completed");
  const auto replies = seqs_of(events, "model_replied");
  REQUIRE(results.size() == 1);
  REQUIRE(replies.size() == 2);
  const std::string tool_seq = std::to_string(results[0]);
  const std::string answer_seq = std::to_string(replies[1]);
  const json recorded_result = of_type(events, "effect_completed")[0]["result"];
  const json changed_result = {{"result", {{"order", 9}, {"status", "lost"}}}};
  const json lost_script = {{"model", json::array({text_reply("Order 9 is lost.")})}};

  SUBCASE("strict replay over HTTP") {
    auto r = n.post(loop_node::path(agent) + "/replay", json::object());
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    CHECK(r.body["mode"] == "strict");
    CHECK_MESSAGE(r.body["identical"] == true, r.raw);
    CHECK(r.body["events"] == events.size());
  }
  SUBCASE("what-if, policy recorded: an unchanged tool result gets the recorded reply") {
    auto r = n.post(
        loop_node::path(agent) + "/replay",
        {{"overrides", {{tool_seq, {{"result", recorded_result}}}}}, {"policy", "recorded"}});
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    CHECK(r.body["mode"] == "what_if");
    CHECK_MESSAGE(r.body["settled"] == true, r.raw);
    CHECK(r.body["answered_recorded"] == 1);
    CHECK(last_answer(r.body["events"].get<std::vector<json>>()) == "Order 9 was delivered.");
  }
  SUBCASE("what-if, policy recorded: a changed tool result has no recorded reply and stops") {
    auto r = n.post(loop_node::path(agent) + "/replay",
                    {{"overrides", {{tool_seq, changed_result}}}, {"policy", "recorded"}});
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    CHECK_MESSAGE(r.body["settled"] == false, r.raw);
    CHECK_FALSE(r.body["stopped"].get<std::string>().empty());
  }
  SUBCASE("what-if, policy scripted: the script answers the changed model request") {
    auto r =
        n.post(loop_node::path(agent) + "/replay", {{"overrides", {{tool_seq, changed_result}}},
                                                    {"policy", "scripted"},
                                                    {"script", lost_script}});
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    CHECK_MESSAGE(r.body["settled"] == true, r.raw);
    CHECK(r.body["answered_scripted"] == 1);
    CHECK(last_answer(r.body["events"].get<std::vector<json>>()) == "Order 9 is lost.");
  }
  SUBCASE("what-if, policy stop: the first unanswered call ends the run") {
    auto r = n.post(loop_node::path(agent) + "/replay",
                    {{"overrides", {{tool_seq, changed_result}}}, {"policy", "stop"}});
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    CHECK_MESSAGE(r.body["settled"] == false, r.raw);
    const std::string stopped = r.body["stopped"].get<std::string>();
    CHECK_MESSAGE(has(stopped, "stop"), stopped);
    CHECK(r.body["answered_recorded"] == 0);
    CHECK(r.body["answered_scripted"] == 0);
  }
  SUBCASE("keel replay, strict and with --override SEQ=FILE") {
    auto strict = run_keel(n.port(), {"replay", agent});
    CHECK_MESSAGE(strict.exit_code == 0, said(strict));
    CHECK(strict.out.rfind("identical: " + std::to_string(events.size()) + " events", 0) == 0);

    const fs::path reply = n.dir() / "reply.json";
    write_json(reply, {{"content", "Order 9 is on its way."}});
    auto what_if =
        run_keel(n.port(), {"replay", agent, "--override", answer_seq + "=" + reply.string()});
    CHECK_MESSAGE(what_if.exit_code == 0, said(what_if));
    CHECK_MESSAGE(has(what_if.out, "Order 9 is on its way."), what_if.out);
    CHECK_MESSAGE(has(what_if.out, "Order 9 was delivered."), what_if.out);
    CHECK_MESSAGE(has(what_if.out, "\nsettled"), what_if.out);

    auto stopped = run_keel(
        n.port(), {"--json", "replay", agent, "--override",
                   tool_seq + "=" + (n.dir() / "changed.json").string(), "--policy", "stop"});
    CHECK(stopped.exit_code == 2);  // the override file does not exist: a usage error
    write_json(n.dir() / "changed.json", changed_result);
    stopped = run_keel(n.port(),
                       {"--json", "replay", agent, "--override",
                        tool_seq + "=" + (n.dir() / "changed.json").string(), "--policy", "stop"});
    REQUIRE_MESSAGE(stopped.exit_code == 0, said(stopped));
    json j = json::parse(stopped.out, nullptr, false);
    REQUIRE_MESSAGE(j.is_object(), stopped.out);
    CHECK(j["policy"] == "stop");
    CHECK(j["settled"] == false);
  }
  SUBCASE("keel eval: passing cases pass, a failing one makes it exit 1") {
    const json suite = {
        {"description", "the order tracker"},
        {"cases",
         {{{"name", "as recorded"},
           {"agent", agent},
           {"expect",
            {{"identical", true},
             {"called", json::array({{{"tool", "lookup_order"}, {"arguments", {{"order", 9}}}}})},
             {"answer", "delivered"}}}},
          {{"name", "another answer"},
           {"agent", agent},
           {"overrides", {{answer_seq, {{"content", "Order 9 is on its way."}}}}},
           {"expect", {{"settled", true}, {"answer", "on its way"}}}},
          {{"name", "a lost order"},
           {"agent", agent},
           {"overrides", {{tool_seq, changed_result}}},
           {"policy", "scripted"},
           {"script", lost_script},
           {"expect", {{"settled", true}, {"answer", "^Order 9 is lost\\.$"}}}},
          {{"name", "must fail: the lookup happened"},
           {"agent", agent},
           {"expect", {{"not_called", json::array({"lookup_order"})}}}}}}};
    const fs::path file = n.dir() / "suite.json";
    write_json(file, suite);

    auto text = run_keel(n.port(), {"eval", file.string()});
    CHECK_MESSAGE(text.exit_code == 1, said(text));
    CHECK_MESSAGE(has(text.out, "4 cases, 1 failed"), text.out);

    auto out = run_keel(n.port(), {"--json", "eval", file.string()});
    CHECK_MESSAGE(out.exit_code == 1, said(out));
    json j = json::parse(out.out, nullptr, false);
    REQUIRE_MESSAGE(j.is_object(), out.out);
    CHECK(j["failures"] == 1);
    REQUIRE(j["cases"].size() == 4);
    for (int i = 0; i < 3; ++i) CHECK_MESSAGE(j["cases"][i]["ok"] == true, j["cases"][i].dump());
    CHECK(j["cases"][3]["ok"] == false);
    CHECK_MESSAGE(has(j["cases"][3]["failed"].get<std::string>(), "lookup_order was called"),
                  j["cases"][3].dump());
  }

  // The fakes' own records: nothing reached them since the live run.
  CHECK(model.calls() == model_calls);
  CHECK(model.forbidden_contacts() == 0);
  CHECK(tools.total_calls() == tool_calls);
  CHECK(n.ledger(agent).size() == events.size());  // and the ledger gained nothing
  check_every_replay(n.port());
}

// --- 2. operator controls across restarts ------------------------------------

TEST_CASE("a paused agent keeps its messages through SIGKILL and takes them in order on resume") {
  loop_node n;
  n.write_spec(refund_desk_spec(n, "desk", {"Noted: second.", "Noted: third."}));
  n.start();
  const std::string agent = "desk/paused";
  n.spawn(agent, "desk");
  n.send(agent, "Please refund order 9.");
  n.wait_phase(agent, "waiting_approval");

  auto paused = run_keel(n.port(), {"pause", agent, "--by", "ops", "--wait", "5000"});
  REQUIRE_MESSAGE(paused.exit_code == 0, said(paused));
  CHECK_MESSAGE(has(paused.out, R"(reply {"paused":true})"), paused.out);
  CHECK(n.view(agent)["paused"] == true);
  for (const char* id : {"m-2", "m-3"}) {
    auto r = n.post(loop_node::path(agent) + "/messages",
                    {{"id", id}, {"body", std::string("message ") + id}});
    REQUIRE_MESSAGE(r.status == 202, r.raw);
    CHECK_FALSE(r.body.value("duplicate", false));
  }

  n.kill9_and_restart();
  json v = n.view(agent);
  CHECK(v["paused"] == true);
  CHECK(v["phase"] == "waiting_approval");
  // A second pause is an operator control, so it is taken: once it is
  // answered the agent has been activated and has seen its inbox.
  auto again = run_keel(n.port(), {"pause", agent, "--by", "ops", "--wait", "5000"});
  CHECK_MESSAGE(again.exit_code == 1, said(again));
  CHECK_MESSAGE(has(again.err, "already paused"), said(again));
  auto events = n.ledger(agent);
  CHECK_MESSAGE(!has_message(events, "m-2"), summary(events));
  CHECK_MESSAGE(!has_message(events, "m-3"), summary(events));
  CHECK(of_type(events, "resumed").empty());
  CHECK(n.view(agent)["paused"] == true);

  auto resumed = run_keel(n.port(), {"resume", agent, "--by", "ops", "--wait", "5000"});
  REQUIRE_MESSAGE(resumed.exit_code == 0, said(resumed));
  CHECK_MESSAGE(has(resumed.out, R"(reply {"paused":false})"), resumed.out);
  n.wait_view(
      agent, [&](const json&) { return has_message(n.ledger(agent), "m-3"); },
      "messages taken after the resume");
  CHECK(n.view(agent)["paused"] == false);

  n.signal(agent, "approve", {{"by", "maria"}});
  v = n.wait_turns(agent, 3);
  CHECK(v["state"]["last"]["answer"] == "Noted: third.");
  events = n.ledger(agent);
  // The tests' keeld lets anonymous requests operate: --by is a note.
  check_in_order(events, {{"paused", {{"by", "anonymous"}}},
                          {"resumed", {{"by", "anonymous"}}},
                          {"message_received", {{"id", "m-2"}, {"body", "message m-2"}}},
                          {"message_received", {{"id", "m-3"}, {"body", "message m-3"}}},
                          {"turn_completed", {{"answer", "Refunded 120 on order 9."}}},
                          {"turn_completed", {{"answer", "Noted: second."}}},
                          {"turn_completed", {{"answer", "Noted: third."}}}});
  CHECK(of_type(events, "paused").size() == 1);
  CHECK(of_type(events, "resumed").size() == 1);
  CHECK(of_type(events, "message_received").size() == 3);
  check_every_replay(n.port());
}

TEST_CASE("keel cancel after SIGKILL compensates the completed call of a turn awaiting approval") {
  test::fake_tool_server tools;
  loop_node n;
  const std::string agent = "hotel/booking-2";
  start_booking_awaiting_approval(tools, n, agent);

  n.kill9_and_restart();
  CHECK(n.view(agent)["phase"] == "waiting_approval");
  auto cancelled = run_keel(n.port(), {"cancel", agent, "--by", "ops", "--wait", "5000"});
  REQUIRE_MESSAGE(cancelled.exit_code == 0, said(cancelled));
  CHECK_MESSAGE(has(cancelled.out, R"(reply {"cancelled":true})"), cancelled.out);
  json v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "cancelled");
  CHECK(v["state"]["last"]["reason"] == "cancelled by anonymous");
  CHECK(tools.calls("reserve") == 1);
  CHECK(tools.calls("refund") == 0);
  REQUIRE(tools.calls("release") == 1);

  auto events = n.ledger(agent);
  const uint64_t reserved = effect_of(events, "reserve");
  CHECK(tools.last_args("release")["effect"] == reserved);
  CHECK(tools.last_args("release")["arguments"] == json{{"item", "room-4"}});
  check_booking_cancelled(events, reserved);
  check_every_replay(n.port());
}

TEST_CASE("keel resolve settles a call left in doubt by SIGKILL and records who did") {
  test::fake_tool_server tools;
  loop_node n;
  const std::string agent = "books/three";
  start_held_post(tools, n, agent, false);
  const uint64_t effect = effect_of(n.ledger(agent), "post_entry");
  REQUIRE(effect != 0);

  n.kill9_and_restart();
  json v = n.wait_phase(agent, "in_doubt");
  CHECK(v["state"]["turn"]["wait"]["effect"] == effect);

  const json result = {{"entry", "e-1"}, {"posted", true}};
  auto resolved = run_keel(n.port(), {"resolve", agent, "--outcome", "succeeded", "--result",
                                      result.dump(), "--by", "ops", "--wait", "5000"});
  REQUIRE_MESSAGE(resolved.exit_code == 0, said(resolved));
  CHECK_MESSAGE(has(resolved.out, R"("resolved":"succeeded")"), resolved.out);
  v = n.wait_turns(agent);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == "posted");
  CHECK(tools.calls("post_entry") == 1);
  const auto events = n.ledger(agent);
  for (const auto& d : of_type(events, "signal_received"))
    if (d["signal"] == "resolve")
      CHECK(
          d["payload"] ==
          json{{"by", "anonymous"}, {"note", "ops"}, {"outcome", "succeeded"}, {"result", result}});
  check_in_order(events, {{"effect_in_doubt", {{"effect", effect}, {"tool", "post_entry"}}},
                          {"signal_received", {{"signal", "resolve"}}},
                          {"effect_completed",
                           {{"effect", effect}, {"result", result}, {"resolved_by", "anonymous"}}},
                          {"turn_completed", {{"status", "completed"}}}});
  check_every_replay(n.port());
}

// --- 3. tampering ------------------------------------------------------------

TEST_CASE("a ledger record rewritten on disk with a valid checksum is caught by the audit") {
  test::temp_dir dir("keel-tamper");
  test::keeld_process keeld(KEEL_KEELD_PATH, dir.str());
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  const std::string tampered = "audit/tampered", untouched = "audit/untouched";
  for (const auto& name : {tampered, untouched}) {
    auto r = call_at(keeld.port(), "POST", "/v1/agents",
                     json{{"name", name}, {"type", "counter"}}.dump());
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    for (int add : {5, 7, 9}) post_counter(keeld.port(), name, add);
    wait_total(keeld.port(), name, 21);
  }
  // The record to forge: the total after the second message.
  uint64_t bad = 0;
  for (const auto& e : ledger_at(keeld.port(), tampered))
    if (e["type"] == "state_changed" && e["data"]["total"] == 12) bad = e["seq"].get<uint64_t>();
  REQUIRE(bad > 0);
  auto before = run_keel(keeld.port(), {"--json", "audit", "verify", untouched});
  REQUIRE_MESSAGE(before.exit_code == 0, said(before));
  const json untouched_audit = json::parse(before.out);
  CHECK(run_keel(keeld.port(), {"audit", "verify", tampered}).exit_code == 0);

  keeld.kill9();
  forge_record(dir.str(), tampered, bad, {{"total", 1200}});
  REQUIRE_MESSAGE(keeld.start(), keeld.output());

  auto verify = run_keel(keeld.port(), {"audit", "verify", tampered});
  CHECK_MESSAGE(verify.exit_code == 1, said(verify));
  CHECK_MESSAGE(verify.out.rfind("BROKEN at seq " + std::to_string(bad) + ":", 0) == 0,
                said(verify));
  auto audit = call_at(keeld.port(), "GET", agent_path(tampered) + "/audit");
  REQUIRE_MESSAGE(audit.status == 200, audit.raw);
  CHECK(audit.body["intact"] == false);
  CHECK_MESSAGE(audit.body["bad_seq"] == bad, audit.raw);
  CHECK_FALSE(audit.body["reason"].get<std::string>().empty());

  auto fine = run_keel(keeld.port(), {"audit", "verify", untouched});
  CHECK_MESSAGE(fine.exit_code == 0, said(fine));
  CHECK(fine.out.rfind("intact: ", 0) == 0);
  auto fine_json = run_keel(keeld.port(), {"--json", "audit", "verify", untouched});
  REQUIRE(fine_json.exit_code == 0);
  CHECK(json::parse(fine_json.out)["head"] == untouched_audit["head"]);

  // Replaying the forged ledger parts from it where the forgery is.
  auto replay = call_at(keeld.port(), "POST", agent_path(tampered) + "/replay", "{}");
  REQUIRE_MESSAGE(replay.status == 200, replay.raw);
  CHECK(replay.body["identical"] == false);
  CHECK_MESSAGE(replay.body["divergence"]["seq"] == bad, replay.raw);
  check_every_replay(keeld.port(), {tampered});
}

// --- 4. export and import ----------------------------------------------------

TEST_CASE("a ledger exported from one node imports on another, read-only and verifiable") {
  loop_node a;
  a.write_spec(refund_desk_spec(a, "desk"));
  a.start();
  const std::string agent = "desk/exported";
  a.spawn(agent, "desk");
  a.send(agent, "Please refund order 9.");
  a.wait_phase(agent, "waiting_approval");
  a.signal(agent, "approve", {{"by", "maria"}});
  a.wait_turns(agent);

  auto exported = run_keel(a.port(), {"--json", "ledger", agent});
  REQUIRE_MESSAGE(exported.exit_code == 0, said(exported));
  const auto lines = json_lines(exported.out);
  const auto events_a = a.ledger(agent);
  REQUIRE(lines.size() == events_a.size());
  const fs::path file = a.dir() / "exported.jsonl";
  {
    std::ofstream out(file);
    out << exported.out;
    REQUIRE(out.good());
  }

  // Node B has its own data dir and the same agent type, byte for byte: the
  // spawn records the spec's hash, so a strict replay needs the same spec.
  loop_node b;
  write_json(b.dir() / "agents" / "desk.json", read_json(a.dir() / "agents" / "desk.json"));
  b.start();
  const std::string copy = "analysis/desk-copy";
  auto imported = run_keel(b.port(), {"import", copy, file.string()});
  REQUIRE_MESSAGE(imported.exit_code == 0, said(imported));
  CHECK(has(imported.out, "imported " + copy + ": " + std::to_string(lines.size()) + " events"));

  auto audit_a = run_keel(a.port(), {"--json", "audit", "verify", agent});
  auto audit_b = run_keel(b.port(), {"--json", "audit", "verify", copy});
  REQUIRE_MESSAGE(audit_a.exit_code == 0, said(audit_a));
  REQUIRE_MESSAGE(audit_b.exit_code == 0, said(audit_b));
  const json ja = json::parse(audit_a.out), jb = json::parse(audit_b.out);
  CHECK(jb["intact"] == true);
  CHECK(jb["head"] == ja["head"]);
  CHECK(jb["events"] == ja["events"]);
  CHECK(jb["last_seq"] == ja["last_seq"]);
  CHECK(ja["head"] == events_a.back()["hash"]);

  // The same events, hash for hash.
  const auto events_b = b.ledger(copy);
  REQUIRE(events_b.size() == events_a.size());
  for (std::size_t i = 0; i < events_a.size(); ++i) {
    CAPTURE(i);
    CHECK(events_b[i]["hash"] == events_a[i]["hash"]);
    CHECK(events_b[i]["data"] == events_a[i]["data"]);
  }

  auto replay = run_keel(b.port(), {"replay", copy});
  CHECK_MESSAGE(replay.exit_code == 0, said(replay));
  CHECK(replay.out.rfind("identical: ", 0) == 0);
  auto show = run_keel(b.port(), {"show", copy});
  CHECK_MESSAGE(has(show.out, "imported ledger (read-only)"), show.out);

  auto refused = b.post(loop_node::path(copy) + "/messages", {{"body", "refund order 10"}});
  CHECK_MESSAGE(refused.status == 409, refused.raw);
  auto refused_cli = run_keel(b.port(), {"send", copy, R"("refund order 10")", "--wait", "5000"});
  CHECK_MESSAGE(refused_cli.exit_code == 1, said(refused_cli));
  CHECK(b.ledger(copy).size() == events_a.size());

  check_every_replay(a.port());
  check_every_replay(b.port());
}

// --- 5. Server-Sent Events ---------------------------------------------------

TEST_CASE("keel ledger -f and GET .../ledger/stream deliver new events as they happen") {
  loop_node n;
  n.start();
  const std::string agent = "stream/counter";
  n.spawn(agent, "counter");
  post_counter(n.port(), agent, 1);
  wait_total(n.port(), agent, 1);
  const std::size_t before = n.ledger(agent).size();

  SUBCASE("keel ledger -f") {
    auto follower = start_keel(n.port(), {"--json", "ledger", agent, "-f"});
    auto count_lines = [](const std::string& out) { return json_lines(out).size(); };
    REQUIRE_MESSAGE(
        follower.wait_output([&](const std::string& out) { return count_lines(out) >= before; },
                             deadline),
        follower.output());
    post_counter(n.port(), agent, 2);
    post_counter(n.port(), agent, 3);
    auto saw_total = [](const std::string& out, int64_t total) {
      for (const auto& e : json_lines(out))
        if (e["type"] == "state_changed" && e["data"]["total"] == total) return true;
      return false;
    };
    CHECK_MESSAGE(
        follower.wait_output([&](const std::string& out) { return saw_total(out, 6); }, deadline),
        follower.output());
    CHECK(follower.kill9());  // still following when stopped

    // The first page and the stream join with no gap and no repeat.
    const auto printed = json_lines(follower.output());
    const auto events = n.ledger(agent);
    REQUIRE(printed.size() == events.size());
    for (std::size_t i = 0; i < printed.size(); ++i) {
      CAPTURE(i);
      CHECK(printed[i]["seq"] == i + 1);
      CHECK(printed[i]["hash"] == events[i]["hash"]);
    }
  }

  SUBCASE("GET .../ledger/stream with http_client::stream and sse_parser") {
    std::mutex mu;
    std::vector<net::sse_event> got;  // guarded by mu
    bool opened = false;              // guarded by mu
    status ended = status::ok();
    bool stream_ok = false;
    unsigned stream_status = 0;
    auto reached = [](const std::vector<net::sse_event>& evs, int64_t total) {
      for (const auto& e : evs) {
        json d = json::parse(e.data, nullptr, false);
        if (d.is_object() && d["type"] == "state_changed" && d["data"]["total"] == total)
          return true;
      }
      return false;
    };
    std::thread reader([&] {
      net::http_client c;
      if (auto s = c.connect("127.0.0.1", n.port()); !s) {
        ended = s;
        return;
      }
      net::sse_parser parser;
      auto r = c.stream(
          "GET", loop_node::path(agent) + "/ledger/stream",
          [&](std::string_view chunk) {
            std::lock_guard lk(mu);
            opened = true;
            parser.feed(chunk, [&](const net::sse_event& e) { got.push_back(e); });
            return !reached(got, 6);
          },
          std::chrono::seconds(10));
      stream_ok = r.is_ok();
      if (r) stream_status = r->status;
      if (!r) ended = r.error();
    });
    struct joiner {
      std::thread& t;
      ~joiner() {
        if (t.joinable()) t.join();
      }
    } join_reader{reader};

    // Only once the stream is open: it starts after the last event.
    REQUIRE(test::eventually(
        [&] {
          std::lock_guard lk(mu);
          return opened;
        },
        deadline));
    post_counter(n.port(), agent, 5);
    reader.join();
    CHECK_MESSAGE(stream_ok, ended.to_string());
    CHECK(stream_status == 200);

    std::lock_guard lk(mu);
    REQUIRE(got.size() == 2);  // message_received, state_changed
    std::string prev_hash = n.ledger(agent)[before - 1]["hash"].get<std::string>();
    for (std::size_t i = 0; i < got.size(); ++i) {
      CAPTURE(i);
      json d = json::parse(got[i].data);
      CHECK(d["seq"] == before + 1 + i);
      CHECK(got[i].id == std::to_string(d["seq"].get<uint64_t>()));
      CHECK(got[i].event == d["type"].get<std::string>());
      CHECK(d["prev"] == prev_hash);
      prev_hash = d["hash"].get<std::string>();
    }
    CHECK(got[0].event == "message_received");
    CHECK(got[1].event == "state_changed");

    // With ?from=1 the stream starts at the beginning.
    net::http_client c;
    REQUIRE(c.connect("127.0.0.1", n.port()).is_ok());
    net::sse_parser parser;
    std::vector<net::sse_event> all;
    const uint64_t last = before + 2;
    auto r = c.stream(
        "GET", loop_node::path(agent) + "/ledger/stream?from=1",
        [&](std::string_view chunk) {
          parser.feed(chunk, [&](const net::sse_event& e) { all.push_back(e); });
          return all.empty() || all.back().id != std::to_string(last);
        },
        std::chrono::seconds(10));
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    REQUIRE(all.size() == last);
    for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].id == std::to_string(i + 1));
    CHECK(all[0].event == "spawned");
  }
  check_every_replay(n.port());
}

// --- 6. fork -----------------------------------------------------------------

TEST_CASE("keel fork of a hibernated agent goes on live with the override") {
  loop_node n;
  n.write_spec(lookup_spec(n, "tracker", 100));
  n.start();
  const std::string parent = "track/parent", child = "track/child";
  n.spawn(parent, "tracker");
  n.send(parent, "Where is order 9?");
  n.wait_turns(parent);
  const auto parent_events = n.ledger(parent);
  const auto replies = seqs_of(parent_events, "model_replied");
  REQUIRE(replies.size() == 2);
  const uint64_t at = replies[0];  // the model's first reply: look order 9 up
  wait_hibernated(n.port(), parent);

  const fs::path reply = n.dir() / "reply.json";
  write_json(reply, calls_reply({tool_call("lookup_order", {{"order", 7}})}));
  auto forked = run_keel(n.port(), {"fork", parent, "--at", std::to_string(at), "--override",
                                    reply.string(), "--as", child, "--by", "ops"});
  REQUIRE_MESSAGE(forked.exit_code == 0, said(forked));
  CHECK_MESSAGE(has(forked.out, "forked " + parent + " at seq " + std::to_string(at) + " as " +
                                    child + " (" + std::to_string(at - 1) + " events copied"),
                forked.out);

  json v = n.wait_turns(child);
  CHECK(v["state"]["last"]["status"] == "completed");
  CHECK(v["state"]["last"]["answer"] == "Order 9 was delivered.");
  const auto child_events = n.ledger(child);
  // The shared history is the parent's, hash for hash.
  REQUIRE(child_events.size() > at);
  for (std::size_t i = 0; i + 1 < at; ++i) {
    CAPTURE(i);
    CHECK(child_events[i]["hash"] == parent_events[i]["hash"]);
  }
  // From `at` on it ran live: the tool saw the overridden call, in the fork.
  auto completed = of_type(child_events, "effect_completed");
  REQUIRE(completed.size() == 1);
  CHECK(completed[0]["result"]["arguments"] == json{{"order", 7}});
  CHECK(completed[0]["result"]["agent"] == child);
  CHECK(seqs_of(child_events, "model_replied").size() == 2);

  auto show_parent = run_keel(n.port(), {"show", parent});
  CHECK_MESSAGE(has(show_parent.out, "fork        " + child + " at seq " + std::to_string(at)),
                show_parent.out);
  auto show_child = run_keel(n.port(), {"show", child});
  CHECK_MESSAGE(has(show_child.out, "forked from " + parent + " at seq " + std::to_string(at)),
                show_child.out);
  check_in_order(n.ledger(parent), {{"forked", {{"as", child}, {"at", at}, {"by", "anonymous"}}}});
  for (const auto& name : {parent, child}) {
    auto verify = run_keel(n.port(), {"audit", "verify", name});
    CHECK_MESSAGE(verify.exit_code == 0, said(verify));
    auto replay = run_keel(n.port(), {"replay", name});
    CHECK_MESSAGE(replay.exit_code == 0, said(replay));
    CHECK(replay.out.rfind("identical: ", 0) == 0);
  }
  check_every_replay(n.port());
}

// --- 7. compaction -----------------------------------------------------------

TEST_CASE("keel compact archives a prefix and the agent still verifies, replays and works") {
  loop_node n;
  n.write_spec(lookup_spec(n, "tracker"));
  n.start();
  const std::string agent = "track/compacted";
  n.spawn(agent, "tracker");
  n.send(agent, "Where is order 9?");
  n.wait_turns(agent, 1);
  n.send(agent, "And now?");
  n.wait_turns(agent, 2);
  const auto events = n.ledger(agent);
  const auto turns = seqs_of(events, "turn_completed");
  REQUIRE(turns.size() == 2);
  const uint64_t before = turns[0] + 1;  // everything of the first turn
  const auto head_before = run_keel(n.port(), {"--json", "audit", "verify", agent});
  REQUIRE_MESSAGE(head_before.exit_code == 0, said(head_before));

  auto compacted = run_keel(n.port(), {"compact", agent, "--before", std::to_string(before)});
  REQUIRE_MESSAGE(compacted.exit_code == 0, said(compacted));
  CHECK_MESSAGE(
      has(compacted.out, "compacted " + std::to_string(before - 1) +
                             " events into a snapshot at seq " + std::to_string(before - 1)),
      compacted.out);
  auto j = run_keel(n.port(), {"--json", "compact", agent, "--before", std::to_string(before)});
  CHECK_MESSAGE(j.exit_code == 1, said(j));  // nothing left to compact there

  // The archive: a header, then the archived events as exported.
  const fs::path archive = n.dir() / "data" / "archive";
  std::vector<fs::path> files;
  for (const auto& f : fs::directory_iterator(archive)) files.push_back(f.path());
  REQUIRE(files.size() == 1);
  std::ifstream in(files[0]);
  std::stringstream ss;
  ss << in.rdbuf();
  const auto archived = json_lines(ss.str());
  REQUIRE(archived.size() == before);
  CHECK(archived[0]["archive"] == 1);
  CHECK(archived[0]["through"] == before - 1);
  CHECK(archived.back()["hash"] == events[before - 2]["hash"]);

  auto check_compacted = [&](std::size_t events_after) {
    auto verify = run_keel(n.port(), {"--json", "audit", "verify", agent});
    REQUIRE_MESSAGE(verify.exit_code == 0, said(verify));
    json a = json::parse(verify.out);
    CHECK(a["intact"] == true);
    CHECK(a["first_seq"] == before);
    CHECK(a["compacted_seq"] == before - 1);
    CHECK(a["events"] == events_after);
    auto text = run_keel(n.port(), {"audit", "verify", agent});
    CHECK(text.exit_code == 0);
    CHECK(has(text.out, "compacted through seq " + std::to_string(before - 1)));
    auto replay = run_keel(n.port(), {"--json", "replay", agent});
    REQUIRE_MESSAGE(replay.exit_code == 0, said(replay));
    json r = json::parse(replay.out);
    CHECK_MESSAGE(r["identical"] == true, replay.out);
    CHECK(r["from_seq"] == before);
    CHECK(n.ledger(agent).front()["seq"] == before);
  };
  check_compacted(events.size() - (before - 1));
  CHECK(json::parse(head_before.out)["head"] ==
        json::parse(run_keel(n.port(), {"--json", "audit", "verify", agent}).out)["head"]);

  n.kill9_and_restart();
  check_compacted(events.size() - (before - 1));
  n.send(agent, "Once more?");
  json v = n.wait_turns(agent, 3);
  CHECK(v["state"]["last"]["answer"] == "Order 9 was delivered.");
  CHECK(v["compacted_seq"] == before - 1);
  const auto after = n.ledger(agent);
  CHECK(after.back()["seq"].get<uint64_t>() > events.back()["seq"].get<uint64_t>());
  check_compacted(after.size());
  check_every_replay(n.port());
}
