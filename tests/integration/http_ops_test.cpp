// HTTP API v1 against a real keeld on 127.0.0.1: health, metrics, limits,
// malformed requests, routing errors, auth and durable timers.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/node_under_test.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::api;

TEST_CASE("health answers ok with the live agent count and needs no agent") {
  node_under_test n;
  auto h = n.call("GET", "/v1/health");
  REQUIRE(h.status == 200);
  CHECK(h.body["status"] == "ok");
  CHECK(h.body["live_agents"] == 0);
  CHECK(h.body["uptime_ms"].get<int64_t>() >= 0);
  n.spawn("a");
  CHECK(n.call("GET", "/v1/health").body["live_agents"] == 1);
}

TEST_CASE("metrics are Prometheus text with the counters named in the operations guide") {
  node_under_test n;
  n.spawn("a");
  n.spawn("b");
  REQUIRE(n.send("a", {{"body", {{"add", 1}}}}).status == 202);
  REQUIRE(n.call("POST", agent_path("b") + "/signals/reset", "").status == 202);

  auto r = n.call("GET", "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.content_type.find("text/plain") == 0);
  CHECK(r.content_type.find("version=0.0.4") != std::string::npos);
  for (const char* name :
       {"keel_agents_live", "keel_agents_hibernated", "keel_activations_total",
        "keel_hibernations_total", "keel_snapshots_total", "keel_spawns_total",
        "keel_messages_total", "keel_duplicate_messages_total", "keel_signals_total",
        "keel_signals_refused_total", "keel_queries_total", "keel_events_appended_total",
        "keel_inbox_spills_total", "keel_timers_fired_total", "keel_agent_failures_total",
        "keel_journal_batches_total", "keel_journal_appends_total", "keel_journal_ops_total"}) {
    CAPTURE(name);
    CHECK(r.raw.find(std::string("# TYPE ") + name + " ") != std::string::npos);
    CHECK(n.metric(name).has_value());
  }
  for (const char* name :
       {"keel_journal_batch_appends", "keel_journal_commit_seconds", "keel_journal_write_seconds",
        "keel_activation_seconds", "keel_accept_seconds"}) {
    CAPTURE(name);
    CHECK(r.raw.find(std::string("# TYPE ") + name + " summary") != std::string::npos);
    CHECK(r.raw.find(std::string(name) + "{quantile=\"0.5\"} ") != std::string::npos);
    CHECK(r.raw.find(std::string(name) + "_count ") != std::string::npos);
  }
  CHECK(n.metric("keel_spawns_total") == 2.0);
  CHECK(n.metric("keel_messages_total") == 1.0);
  CHECK(n.metric("keel_signals_total") == 1.0);
  CHECK(n.metric("keel_agents_live") == 2.0);
  // 2 spawned + message_received, state_changed + signal_received, state_changed (reset)
  CHECK(n.metric("keel_events_appended_total") == 6.0);
  CHECK(n.metric("keel_agents{phase=\"idle\"}") == 2.0);
  CHECK(n.metric("keel_agents_hibernated") == 0.0);
  CHECK(n.call("POST", agent_path("b") + "/signals/ping", "").status == 400);
  CHECK(n.metric("keel_signals_refused_total") == 1.0);
  CHECK(n.metric("keel_signals_total") == 1.0);
  CHECK(n.metric("keel_journal_batches_total").value_or(0) >= 1);
}

TEST_CASE("a body over max_body_bytes answers 413 and a body at the limit is accepted") {
  test::temp_dir cfg_dir("keel-api-cfg");
  std::string cfg = (cfg_dir.path() / "keeld.json").string();
  {
    std::ofstream f(cfg);
    f << R"({"max_body_bytes": 2048})";
  }
  node_under_test n({"--config", cfg});

  std::string head = R"({"name": "big", "type": "counter", "input": {"label": ")";
  std::string tail = R"("}})";
  std::string at_limit = head + std::string(2048 - head.size() - tail.size(), 'x') + tail;
  REQUIRE(at_limit.size() == 2048);
  std::string over = head + std::string(2049 - head.size() - tail.size(), 'x') + tail;
  REQUIRE(over.size() == 2049);

  auto r = n.call("POST", "/v1/agents", over);
  CHECK(r.status == 413);
  CHECK(r.error_code() == "too_large");
  CHECK(r.error_message().find("2048") != std::string::npos);
  CHECK(n.call("GET", agent_path("big")).status == 404);

  auto ok = n.call("POST", "/v1/agents", at_limit);
  CHECK_MESSAGE(ok.status == 201, ok.raw);
  CHECK(n.view("big")["state"]["label"].get<std::string>().size() ==
        2048 - head.size() - tail.size());
}

TEST_CASE("malformed JSON answers 400 with a message naming the problem") {
  node_under_test n;
  n.spawn("a");
  auto cut = n.call("POST", "/v1/agents", R"({"name": "x", "type": )");
  CHECK(cut.status == 400);
  CHECK(cut.error_code() == "invalid_argument");
  CHECK(cut.error_message().find("malformed JSON") == 0);
  CHECK(cut.error_message().find("parse error") != std::string::npos);

  auto garbage = n.call("POST", agent_path("a") + "/messages", "{body: 1}");
  CHECK(garbage.status == 400);
  CHECK(garbage.error_message().find("malformed JSON") == 0);

  auto array = n.call("POST", "/v1/agents", "[1, 2]");
  CHECK(array.status == 400);
  CHECK(array.error_message().find("must be a JSON object") != std::string::npos);

  auto empty = n.call("POST", "/v1/agents", "");
  CHECK(empty.status == 400);
  CHECK(empty.error_message().find("empty") != std::string::npos);

  auto deep = n.call("POST", agent_path("a") + "/messages",
                     R"({"body": )" + std::string(200, '[') + std::string(200, ']') + "}");
  CHECK(deep.status == 400);
  CHECK(deep.error_message().find("deeper than") != std::string::npos);

  CHECK(n.view("a")["last_seq"] == 1);
}

TEST_CASE("an unknown path answers 404 and a wrong method answers 405") {
  node_under_test n;
  n.spawn("a");
  for (const char* path : {"/", "/v2/agents", "/v1", "/v1/nothing", "/metrics/x"}) {
    CAPTURE(path);
    auto r = n.call("GET", path);
    CHECK(r.status == 404);
    CHECK(r.error_code() == "not_found");
  }
  CHECK(n.call("GET", "/v1/nothing?x=1").error_message().find("/v1/nothing") != std::string::npos);

  for (auto [method, path, allow] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"PUT", "/v1/agents", "GET, POST"},
           {"POST", "/v1/agents/a", "GET, DELETE"},
           {"GET", "/v1/agents/a/messages", "POST"},
           {"GET", "/v1/agents/a/signals/reset", "POST"},
           {"POST", "/v1/agents/a/ledger", "GET"},
           {"DELETE", "/metrics", "GET"},
           {"POST", "/v1/health", "GET"}}) {
    CAPTURE(method);
    CAPTURE(path);
    auto r = n.call(method, path);
    CHECK(r.status == 405);
    CHECK(r.error_code() == "method_not_allowed");
    CHECK(r.error_message().find(allow) != std::string::npos);
  }
  CHECK(n.view("a")["last_seq"] == 1);
}

TEST_CASE("with a token every route but health needs Authorization Bearer TOKEN") {
  node_under_test n({"--token", "s3cret"});
  auto none = n.call("GET", "/v1/agents");
  CHECK(none.status == 401);
  CHECK(none.error_code() == "unauthorized");
  CHECK(n.call("GET", "/v1/agents", "", {{"Authorization", "Bearer nope"}}).status == 401);
  CHECK(n.call("GET", "/v1/agents", "", {{"Authorization", "Basic czNjcmV0"}}).status == 401);
  CHECK(n.call("GET", "/v1/agents", "", {{"Authorization", "Bearer s3cre"}}).status == 401);
  CHECK(n.call("GET", "/metrics").status == 401);
  auto spawn_denied = n.call_json("POST", "/v1/agents", json{{"name", "a"}, {"type", "counter"}});
  CHECK(spawn_denied.status == 401);

  CHECK(n.call("GET", "/v1/health").status == 200);

  const net::http_client::header_list auth{{"Authorization", "Bearer s3cret"}};
  CHECK(n.call("GET", "/v1/agents", "", auth).status == 200);
  CHECK(n.call("GET", "/metrics", "", auth).status == 200);
  n.client().set_header("Authorization", "Bearer s3cret");
  CHECK(n.call_json("POST", "/v1/agents", json{{"name", "a"}, {"type", "counter"}}).status == 201);
  // The denied spawn did not create anything before this one.
  CHECK(n.metric("keel_spawns_total") == 1.0);
}

TEST_CASE("a durable timer acknowledged before a SIGKILL fires after the restart") {
  node_under_test n;
  n.spawn("timed");
  auto r = n.send("timed", {{"id", "t-1"}, {"body", {{"add", 3}, {"delay_ms", 300}}}});
  REQUIRE_MESSAGE(r.status == 202, r.raw);
  n.kill9();
  n.start();

  CHECK(test::eventually([&] { return n.view("timed")["state"]["total"] == 3; },
                         std::chrono::seconds(20)));
  auto events = n.ledger("timed");
  CHECK(count_type(events, "timer_set") == 1);
  CHECK(count_type(events, "timer_fired") == 1);
  CHECK(events.back()["data"] == json{{"total", 3}});
}
