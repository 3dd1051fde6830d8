// HTTP API v1 against a real keeld on 127.0.0.1: agents, messages, signals,
// queries and the ledger (docs/http-api.md).

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/node_under_test.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::api;

TEST_CASE("spawning an agent answers 201 with its name and type and status and initial state") {
  node_under_test n;
  auto r =
      n.call_json("POST", "/v1/agents",
                  json{{"name", "acct/alice"}, {"type", "counter"}, {"input", {{"total", 7}}}});
  REQUIRE_MESSAGE(r.status == 201, r.raw);
  CHECK(r.content_type.find("application/json") == 0);
  CHECK(r.body["name"] == "acct/alice");
  CHECK(r.body["type"] == "counter");
  CHECK(r.body["status"] == "active");
  CHECK(r.body["last_seq"] == 1);
  CHECK(r.body["hibernated"] == false);
  CHECK(r.body["created_ms"].get<int64_t>() > 0);
  CHECK(r.body["state"]["total"] == 7);

  auto v = n.view("acct/alice");
  for (const char* field : {"name", "type", "status", "last_seq", "hibernated", "state"}) {
    CAPTURE(field);
    CHECK(v.contains(field));
  }
  CHECK(v["state"]["total"] == 7);
  CHECK(v["created_ms"] == r.body["created_ms"]);
}

TEST_CASE("spawning a name that exists answers 409 and leaves the agent unchanged") {
  node_under_test n;
  n.spawn("acct/bob", {{"total", 1}});
  auto r = n.call_json("POST", "/v1/agents",
                       json{{"name", "acct/bob"}, {"type", "counter"}, {"input", {{"total", 99}}}});
  CHECK(r.status == 409);
  CHECK(r.error_code() == "already_exists");
  CHECK(r.error_message().find("acct/bob") != std::string::npos);
  CHECK(n.view("acct/bob")["state"]["total"] == 1);
}

TEST_CASE("spawning with an invalid name answers 400 and creates nothing") {
  node_under_test n;
  const std::string too_long = "a" + std::string(128, 'b');  // 129 characters
  for (const std::string& name : {std::string("Alice"), std::string("acct/Bob"), too_long,
                                  std::string(""), std::string("/lead"), std::string("a b")}) {
    CAPTURE(name);
    auto r = n.call_json("POST", "/v1/agents", json{{"name", name}, {"type", "counter"}});
    CHECK(r.status == 400);
    CHECK(r.error_code() == "invalid_argument");
    CHECK_FALSE(r.error_message().empty());
  }
  auto missing = n.call_json("POST", "/v1/agents", json{{"type", "counter"}});
  CHECK(missing.status == 400);
  CHECK(missing.error_message().find("\"name\"") != std::string::npos);

  auto list = n.call("GET", "/v1/agents");
  REQUIRE(list.status == 200);
  CHECK(list.body["agents"].empty());

  // The boundary: 128 characters is a valid name.
  n.spawn("a" + std::string(127, 'b'));
}

TEST_CASE("spawning an unknown type answers 400 naming the known types") {
  node_under_test n;
  auto r = n.call_json("POST", "/v1/agents", json{{"name", "x"}, {"type", "nope"}});
  CHECK(r.status == 400);
  CHECK(r.error_code() == "invalid_argument");
  CHECK(r.error_message().find("nope") != std::string::npos);
  CHECK(r.error_message().find("counter") != std::string::npos);
  CHECK(n.call("GET", agent_path("x")).status == 404);
}

TEST_CASE("spawning with input the type refuses or an unknown field answers 400") {
  node_under_test n;
  auto bad_input =
      n.call_json("POST", "/v1/agents",
                  json{{"name", "x"}, {"type", "counter"}, {"input", {{"total", "ten"}}}});
  CHECK(bad_input.status == 400);
  CHECK(bad_input.error_code() == "invalid_argument");
  CHECK(bad_input.error_message().find("total") != std::string::npos);
  CHECK(n.call("GET", agent_path("x")).status == 404);

  auto extra = n.call_json("POST", "/v1/agents",
                           json{{"name", "x"}, {"type", "counter"}, {"colour", "red"}});
  CHECK(extra.status == 400);
  CHECK(extra.error_message().find("colour") != std::string::npos);

  auto not_string = n.call_json("POST", "/v1/agents", json{{"name", 7}, {"type", "counter"}});
  CHECK(not_string.status == 400);
  CHECK(not_string.error_message().find("must be a string") != std::string::npos);
}

TEST_CASE("an unknown agent answers 404 on every agent route") {
  node_under_test n;
  const std::string p = agent_path("no/such");
  for (auto [method, target, body] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"GET", p, ""},
           {"DELETE", p, ""},
           {"POST", p + "/messages", R"({"body": {"add": 1}})"},
           {"POST", p + "/signals/reset", ""},
           {"POST", p + "/query", ""},
           {"GET", p + "/ledger", ""}}) {
    CAPTURE(method);
    CAPTURE(target);
    auto r = n.call(method, target, body);
    CHECK(r.status == 404);
    CHECK(r.error_code() == "not_found");
    CHECK(r.error_message().find("no/such") != std::string::npos);
  }
}

TEST_CASE("agent names are percent-encoded in paths and an unencoded name also resolves") {
  node_under_test n;
  n.spawn("acct/alice");
  CHECK(n.call("GET", "/v1/agents/acct%2Falice").body["name"] == "acct/alice");
  CHECK(n.call("GET", "/v1/agents/acct%2falice").body["name"] == "acct/alice");
  CHECK(n.call("GET", "/v1/agents/acct/alice").body["name"] == "acct/alice");
  auto m = n.call("POST", "/v1/agents/acct/alice/messages", R"({"body": {"add": 4}})");
  CHECK(m.status == 202);
  CHECK(n.view("acct/alice")["state"]["total"] == 4);

  auto bad = n.call("GET", "/v1/agents/acct%2");
  CHECK(bad.status == 400);
  CHECK(bad.error_message().find("percent-encoding") != std::string::npos);
}

TEST_CASE("an agent that hibernated reports hibernated true to the read that wakes it") {
  node_under_test n({"--idle-ms", "50"});
  n.spawn("sleepy");
  REQUIRE(n.send("sleepy", {{"body", {{"add", 5}}}}).status == 202);
  REQUIRE(test::eventually([&] { return n.metric("keel_agents_live") == 0.0; }));
  CHECK(n.metric("keel_hibernations_total").value_or(0) >= 1);

  auto woken = n.view("sleepy");
  CHECK(woken["hibernated"] == true);
  CHECK(woken["state"]["total"] == 5);
  CHECK(woken["last_seq"] == 3);
  // The same agent is live now (idle 50 ms may hibernate it again, in which
  // case this read woke it once more: count activations to tell).
  double activations = n.metric("keel_activations_total").value_or(-1);
  auto again = n.view("sleepy");
  if (n.metric("keel_activations_total").value_or(-1) == activations)
    CHECK(again["hibernated"] == false);
}

TEST_CASE("a read after a message woke a hibernated agent reports hibernated false") {
  // The contract of agent_view::hibernated (actors/node.hpp): true only when
  // this request activated the agent.
  node_under_test n({"--idle-ms", "300"});
  n.spawn("sleepy");
  REQUIRE(test::eventually([&] { return n.metric("keel_agents_live") == 0.0; }));
  double before = n.metric("keel_activations_total").value_or(-1);
  REQUIRE(n.send("sleepy", {{"body", {{"add", 1}}}}).status == 202);
  auto v = n.view("sleepy");
  // Only meaningful when the message's activation is the only one since.
  if (n.metric("keel_activations_total").value_or(-1) == before + 1) {
    CHECK_MESSAGE(v["hibernated"] == false,
                  "GET after a message activated the agent still says hibernated: true");
  }
  CHECK(v["state"]["total"] == 1);
}

TEST_CASE("listing by prefix in pages of limit after a name returns every agent exactly once") {
  node_under_test n;
  std::vector<std::string> team;
  for (int i = 0; i < 7; ++i) team.push_back("team/a-" + std::to_string(i));
  for (const auto& name : team) n.spawn(name);
  n.spawn("other/x");
  n.spawn("teamz");

  std::vector<std::string> seen;
  std::vector<std::size_t> page_sizes;
  std::string after;
  for (int pages = 0; pages < 10; ++pages) {
    std::string q = "/v1/agents?prefix=team%2F&limit=3";
    if (!after.empty()) q += "&after=" + net::percent_encode(after);
    auto r = n.call("GET", q);
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    page_sizes.push_back(r.body["agents"].size());
    for (const auto& a : r.body["agents"]) {
      seen.push_back(a["name"]);
      CHECK(a["type"] == "counter");
      CHECK(a["status"] == "active");
      CHECK(a["created_ms"].get<int64_t>() > 0);
      CHECK(a["live"].is_boolean());
    }
    if (r.body["next_after"].is_null()) break;
    after = r.body["next_after"];
    CHECK(after == seen.back());
  }
  CHECK(page_sizes == std::vector<std::size_t>{3, 3, 1});
  CHECK(seen == team);  // bytewise name order, no repeats, no other prefix

  auto all = n.call("GET", "/v1/agents");
  REQUIRE(all.status == 200);
  CHECK(all.body["agents"].size() == 9);
  CHECK(all.body["next_after"].is_null());

  auto bad = n.call("GET", "/v1/agents?limit=three");
  CHECK(bad.status == 400);
  CHECK(bad.error_message().find("limit") != std::string::npos);
}

TEST_CASE("a message is acknowledged with id and seq and a repeated id is not processed again") {
  node_under_test n;
  n.spawn("acct/alice");
  auto first = n.send("acct/alice", {{"id", "m-1"}, {"from", "tester"}, {"body", {{"add", 5}}}});
  REQUIRE_MESSAGE(first.status == 202, first.raw);
  CHECK(first.body["id"] == "m-1");
  CHECK(first.body["seq"].get<uint64_t>() >= 1);
  CHECK_FALSE(first.body.contains("duplicate"));

  auto again = n.send("acct/alice", {{"id", "m-1"}, {"body", {{"add", 5}}}});
  REQUIRE(again.status == 202);
  CHECK(again.body["id"] == "m-1");
  CHECK(again.body["seq"] == first.body["seq"]);
  CHECK(again.body["duplicate"] == true);
  CHECK(n.view("acct/alice")["state"]["total"] == 5);
  CHECK(n.metric("keel_duplicate_messages_total") == 1.0);

  auto events = n.ledger("acct/alice");
  int with_id = 0;
  for (const auto& e : events)
    if (e["type"] == "message_received" && e["data"]["id"] == "m-1") {
      ++with_id;
      CHECK(e["data"]["from"] == "tester");
      CHECK(e["data"]["body"] == json{{"add", 5}});
    }
  CHECK(with_id == 1);

  // Without an id the node makes one; each such message is new.
  auto a = n.send("acct/alice", {{"body", {{"add", 1}}}});
  auto b = n.send("acct/alice", {{"body", {{"add", 1}}}});
  REQUIRE(a.status == 202);
  REQUIRE(b.status == 202);
  CHECK_FALSE(a.body["id"].get<std::string>().empty());
  CHECK(a.body["id"] != b.body["id"]);
  CHECK(b.body["seq"].get<uint64_t>() > a.body["seq"].get<uint64_t>());
  CHECK(n.view("acct/alice")["state"]["total"] == 7);

  auto no_body = n.send("acct/alice", {{"id", "m-2"}});
  CHECK(no_body.status == 400);
  CHECK(no_body.error_message().find("\"body\"") != std::string::npos);
  auto long_id = n.send("acct/alice", {{"id", std::string(257, 'i')}, {"body", {{"add", 1}}}});
  CHECK(long_id.status == 400);
  // The ranges the node and the cluster generate ids in are not for clients.
  for (const char* reserved : {"auto-9", "keel-m-n1-4", "keel-s-n2-17"}) {
    auto r = n.send("acct/alice", {{"id", reserved}, {"body", {{"add", 1}}}});
    CHECK_MESSAGE(r.status == 400, reserved);
  }
  CHECK(n.view("acct/alice")["state"]["total"] == 7);
}

TEST_CASE("a message sent with wait returns the agent's reply") {
  node_under_test n;
  n.spawn("acct/alice", {{"total", 10}});
  auto r = n.send("acct/alice", {{"id", "w-1"}, {"body", {{"add", 2}}}}, "?wait=5000");
  REQUIRE_MESSAGE(r.status == 202, r.raw);
  CHECK(r.body["id"] == "w-1");
  CHECK(r.body["reply"] == json{{"total", 12}});

  // A resend of the same id is the first answer again: same seq, marked
  // duplicate, not processed again.
  auto dup = n.send("acct/alice", {{"id", "w-1"}, {"body", {{"add", 2}}}}, "?wait=5000");
  REQUIRE(dup.status == 202);
  CHECK(dup.body["seq"] == r.body["seq"]);
  CHECK(dup.body["duplicate"] == true);
  REQUIRE_MESSAGE(dup.body.contains("reply"),
                  "a duplicate sent with ?wait answers without the first reply: " << dup.raw);
  CHECK(dup.body["reply"] == json{{"total", 12}});

  auto get = n.send("acct/alice", {{"body", {{"get", true}}}}, "?wait=5000");
  REQUIRE(get.status == 202);
  CHECK(get.body["reply"] == json{{"total", 12}});

  // Without wait there is no reply in the answer.
  auto plain = n.send("acct/alice", {{"body", {{"add", 1}}}});
  REQUIRE(plain.status == 202);
  CHECK_FALSE(plain.body.contains("reply"));

  auto bad = n.send("acct/alice", {{"body", {{"add", 1}}}}, "?wait=soon");
  CHECK(bad.status == 400);
  CHECK(bad.error_message().find("wait") != std::string::npos);
  auto too_long = n.send("acct/alice", {{"body", {{"add", 1}}}}, "?wait=60001");
  CHECK(too_long.status == 400);
  CHECK(n.view("acct/alice")["state"]["total"] == 13);
}

TEST_CASE("a message the agent rejects is recorded and wait returns its error reply") {
  node_under_test n;
  n.spawn("acct/alice", {{"total", 3}});
  auto r = n.send("acct/alice", {{"id", "bad-1"}, {"body", {{"mul", 2}}}}, "?wait=5000");
  REQUIRE_MESSAGE(r.status == 202, r.raw);
  CHECK(r.body["id"] == "bad-1");
  REQUIRE(r.body.contains("reply"));
  CHECK(r.body["reply"]["error"]["code"] == "invalid_message");
  CHECK(r.body["reply"]["error"]["message"].get<std::string>().find("counter accepts") !=
        std::string::npos);

  CHECK(n.view("acct/alice")["state"]["total"] == 3);
  auto events = n.ledger("acct/alice");
  REQUIRE(events.size() == 3);
  CHECK(events[1]["type"] == "message_received");
  CHECK(events[2]["type"] == "message_rejected");
  CHECK(events[2]["data"]["id"] == "bad-1");
  CHECK(events[2]["data"]["code"] == "invalid_message");
}

TEST_CASE("signals are acknowledged with 202 and reset zeroes the total") {
  node_under_test n;
  n.spawn("acct/alice");
  REQUIRE(n.send("acct/alice", {{"body", {{"add", 9}}}}).status == 202);
  CHECK(n.view("acct/alice")["state"]["total"] == 9);

  auto reset = n.call("POST", agent_path("acct/alice") + "/signals/reset", "");
  REQUIRE_MESSAGE(reset.status == 202, reset.raw);
  CHECK(reset.body["id"] == "reset");
  CHECK(reset.body["seq"].get<uint64_t>() >= 1);
  CHECK(n.view("acct/alice")["state"]["total"] == 0);

  auto again = n.call_json("POST", agent_path("acct/alice") + "/signals/reset?wait=5000",
                           json{{"payload", {{"why", "test"}}}});
  REQUIRE_MESSAGE(again.status == 202, again.raw);
  CHECK(again.body["reply"] == json{{"total", 0}});
  CHECK(again.body["seq"].get<uint64_t>() == reset.body["seq"].get<uint64_t>() + 1);

  auto events = n.ledger("acct/alice");
  std::vector<json> signals;
  for (const auto& e : events)
    if (e["type"] == "signal_received") signals.push_back(e["data"]);
  REQUIRE(signals.size() == 2);
  CHECK(signals[0]["signal"] == "reset");
  // Recorded with who sent it: the caller's principal.
  CHECK(signals[1]["payload"] == json{{"why", "test"}, {"by", "anonymous"}});

  auto extra =
      n.call_json("POST", agent_path("acct/alice") + "/signals/reset", json{{"force", true}});
  CHECK(extra.status == 400);
  CHECK(extra.error_message().find("force") != std::string::npos);
}

TEST_CASE("a signal the agent's type does not take is refused with 400 and leaves no trace") {
  node_under_test n;
  n.spawn("acct/alice");
  const uint64_t last = n.view("acct/alice")["last_seq"];

  auto ping = n.call_json("POST", agent_path("acct/alice") + "/signals/ping?wait=5000",
                          json{{"payload", {{"why", "test"}}}});
  CHECK(ping.status == 400);
  CHECK(ping.error_message() ==
        "agent acct/alice (type counter) takes no signal 'ping'; it takes reset");
  auto typo = n.call("POST", agent_path("acct/alice") + "/signals/rest", "");
  CHECK(typo.status == 400);
  CHECK_MESSAGE(typo.raw.find("(did you mean reset?)") != std::string::npos, typo.raw);

  CHECK(n.view("acct/alice")["last_seq"] == last);
  // The refused ones took no place in the mailbox either.
  auto reset = n.call("POST", agent_path("acct/alice") + "/signals/reset", "");
  REQUIRE(reset.status == 202);
  CHECK(reset.body["seq"] == 1);
}

TEST_CASE("a query answers from the state without appending to the ledger") {
  node_under_test n;
  n.spawn("acct/alice");
  REQUIRE(n.send("acct/alice", {{"body", {{"add", 4}}}}).status == 202);
  uint64_t last = n.view("acct/alice")["last_seq"];

  auto q = n.call_json("POST", agent_path("acct/alice") + "/query", json{{"get", true}});
  REQUIRE_MESSAGE(q.status == 200, q.raw);
  CHECK(q.body == json{{"total", 4}});
  auto empty = n.call("POST", agent_path("acct/alice") + "/query", "");
  REQUIRE(empty.status == 200);
  CHECK(empty.body == json{{"total", 4}});

  auto bad = n.call_json("POST", agent_path("acct/alice") + "/query", json{{"sum", true}});
  CHECK(bad.status == 400);
  CHECK(bad.error_code() == "invalid_argument");

  CHECK(n.view("acct/alice")["last_seq"] == last);
  CHECK(n.metric("keel_queries_total").value_or(0) >= 3);
}

TEST_CASE("the ledger pages by from and limit with dense seqs and every field") {
  node_under_test n;
  n.spawn("acct/alice");
  for (int i = 1; i <= 10; ++i)
    REQUIRE(
        n.send("acct/alice", {{"id", "m-" + std::to_string(i)}, {"body", {{"add", i}}}}).status ==
        202);
  uint64_t last = n.view("acct/alice")["last_seq"];
  CHECK(last == 21);  // spawned + 10 x (message_received, state_changed)

  std::vector<json> events;
  for (uint64_t from = 1, pages = 0; pages < 20; ++pages) {
    auto r = n.call("GET",
                    agent_path("acct/alice") + "/ledger?from=" + std::to_string(from) + "&limit=4");
    REQUIRE(r.status == 200);
    CHECK(r.body["events"].size() <= 4);
    for (const auto& e : r.body["events"]) events.push_back(e);
    if (r.body["events"].empty()) break;
    from = r.body["events"].back()["seq"].get<uint64_t>() + 1;
  }
  REQUIRE(events.size() == last);
  for (std::size_t i = 0; i < events.size(); ++i) {
    CAPTURE(i);
    CHECK(events[i]["seq"] == i + 1);
    CHECK(events[i]["type"].is_string());
    CHECK(events[i]["time"].get<int64_t>() > 0);
    CHECK(events[i].contains("data"));
  }
  CHECK(events[0]["type"] == "spawned");
  CHECK(events[0]["data"]["type"] == "counter");
  CHECK(count_type(events, "message_received") == 10);
  CHECK(events[1]["data"]["id"] == "m-1");
  CHECK(events[2]["type"] == "state_changed");
  CHECK(events[2]["data"] == json{{"total", 1}});
  CHECK(events.back()["data"] == json{{"total", 55}});

  // The whole ledger in one default page; past the end is empty.
  CHECK(n.ledger("acct/alice").size() == last);
  auto past = n.call("GET", agent_path("acct/alice") + "/ledger?from=1000");
  REQUIRE(past.status == 200);
  CHECK(past.body["events"].empty());
  auto bad = n.call("GET", agent_path("acct/alice") + "/ledger?from=-1");
  CHECK(bad.status == 400);
  CHECK(bad.error_message().find("from") != std::string::npos);
}

TEST_CASE(
    "deleting an agent terminates it and refuses later messages with 409 and keeps its ledger") {
  node_under_test n;
  n.spawn("acct/alice");
  REQUIRE(n.send("acct/alice", {{"id", "m-1"}, {"body", {{"add", 2}}}}).status == 202);

  auto del = n.call("DELETE", agent_path("acct/alice") + "?by=ops");
  REQUIRE_MESSAGE(del.status == 200, del.raw);
  CHECK(del.body["status"] == "terminated");
  CHECK(del.body["state"]["total"] == 2);
  CHECK(n.view("acct/alice")["status"] == "terminated");

  auto msg = n.send("acct/alice", {{"id", "m-2"}, {"body", {{"add", 1}}}});
  CHECK(msg.status == 409);
  CHECK(msg.error_code() == "conflict");
  auto sig = n.call("POST", agent_path("acct/alice") + "/signals/reset", "");
  CHECK(sig.status == 409);
  CHECK(n.call("DELETE", agent_path("acct/alice")).status == 409);
  CHECK(
      n.call_json("POST", "/v1/agents", json{{"name", "acct/alice"}, {"type", "counter"}}).status ==
      409);

  auto events = n.ledger("acct/alice");
  REQUIRE(events.size() == 4);  // spawned, message_received, state_changed, terminated
  CHECK(events[1]["data"]["id"] == "m-1");
  CHECK(events.back()["type"] == "terminated");
  CHECK(events.back()["data"]["by"] == "anonymous");  // the caller, not ?by
  CHECK(n.view("acct/alice")["state"]["total"] == 2);
}

TEST_CASE("no client can pass for a cluster member: forks are created only by the fork route") {
  node_under_test n;
  n.spawn("acct/real", {{"total", 1}});
  auto ledger = n.call("GET", agent_path("acct/real") + "/ledger");
  REQUIRE(ledger.status == 200);
  const json events = ledger.body["events"];
  const net::http_client::header_list forged{{"x-keel-forwarded", "n1"}};

  // The internal path exists only for requests from the cluster transport.
  auto internal =
      n.call("POST", "/v1/internal/forks/acct%2Fforged",
             json{{"events", events}, {"parent", "acct/real"}, {"at", 1}}.dump(), forged);
  CHECK(internal.status == 404);
  // An import is always read-only: a client cannot make it a live fork.
  auto as_fork =
      n.call("POST", agent_path("acct/forged") + "/import",
             json{{"events", events}, {"origin", "fork"}, {"parent", "acct/real"}}.dump(), forged);
  CHECK(as_fork.status == 400);
  // Nor claim a fork on a real agent's ledger.
  auto claim = n.call("POST", agent_path("acct/real") + "/signals/forked",
                      json{{"payload", {{"as", "ghost/1"}, {"at", 1}}}}.dump(), forged);
  CHECK(claim.status == 400);
  CHECK(n.call("GET", agent_path("acct/forged")).status == 404);
  CHECK(n.view("acct/real").value("forks", json::array()).empty());

  // What a client may do: import read-only.
  auto imported = n.call_json("POST", agent_path("acct/copy") + "/import", {{"events", events}});
  REQUIRE_MESSAGE(imported.status == 201, imported.raw);
  CHECK(imported.body["origin"] == "import");
  auto refused =
      n.call_json("POST", agent_path("acct/copy") + "/messages", {{"body", {{"add", 1}}}});
  CHECK(refused.status == 409);
}
