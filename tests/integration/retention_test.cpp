// Retention end to end on a real keeld: processed message ids answer
// retries only within their dedupe window (per node, or per type), and a
// type's retention policy compacts its agents' ledgers by itself with the
// guarantees of keel compact (audit intact, replay identical, an archive).

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "support/loop_node.hpp"
#include "support/wait.hpp"

using namespace keel::test;
using namespace keel::test::loop;
using nlohmann::json;

namespace {

// A type whose every message is one turn answered "ok".
json chatty(loop_node& n, const std::string& name, json extra = json::object()) {
  json spec = {
      {"name", name},
      {"model", scripted_model(n.write_script(name, json::array({text_reply("ok")}), true))}};
  spec.update(extra);
  return spec;
}

// Whether the node took the message as a retry of one it has (duplicate).
bool duplicate(loop_node& n, const std::string& agent, const std::string& id) {
  auto r = n.post(loop_node::path(agent) + "/messages", {{"id", id}, {"body", "hello"}});
  REQUIRE_MESSAGE(r.status == 202, r.raw);
  return r.body.value("duplicate", false);
}

}  // namespace

TEST_CASE("a message id answers retries within its dedupe window, and is new after it") {
  // The node forgets processed ids after 1.5 s; one type keeps them forever.
  loop_node n(json{{"dedupe_window_ms", 1500}});
  n.write_spec(chatty(n, "brief"));
  n.write_spec(chatty(n, "keeper", {{"dedupe_window_ms", 0}}));
  n.start();
  n.spawn("a/brief", "brief");
  n.spawn("a/keeper", "keeper");
  CHECK(!duplicate(n, "a/brief", "m-1"));
  CHECK(!duplicate(n, "a/keeper", "m-1"));
  n.wait_turns("a/brief", 1);
  n.wait_turns("a/keeper", 1);

  // Within the window a retry is the same message: nothing runs again.
  CHECK(duplicate(n, "a/brief", "m-1"));
  // Past it, the same id is a new message (bounded: the window is 1.5 s).
  bool fresh =
      eventually([&] { return !duplicate(n, "a/brief", "m-1"); }, std::chrono::seconds(10));
  REQUIRE(fresh);
  n.wait_turns("a/brief", 2);
  // ... whose own entry answers the next retry again.
  CHECK(duplicate(n, "a/brief", "m-1"));
  // The type that keeps its ids still knows the first message, and a
  // restart changes neither.
  CHECK(duplicate(n, "a/keeper", "m-1"));
  n.kill9_and_restart();
  CHECK(duplicate(n, "a/keeper", "m-1"));
  CHECK(n.view("a/keeper")["state"]["turns"] == 1);
  CHECK(n.view("a/brief")["state"]["turns"] == 2);
}

TEST_CASE("a type's retention policy compacts its agents by itself, auditably") {
  loop_node n(json{{"retention_interval_ms", 100}});
  n.write_spec(chatty(n, "rolling", {{"retention", {{"keep_events", 20}}}}));
  n.write_spec(chatty(n, "forever"));
  n.start();
  n.spawn("r/rolling", "rolling");
  n.spawn("r/forever", "forever");
  // Each message is one turn of a few events: 20 turns make well over the
  // 20 kept plus the 32 a compaction archives at least.
  for (int i = 0; i < 20; ++i) {
    n.send("r/rolling", "m" + std::to_string(i));
    n.send("r/forever", "m" + std::to_string(i));
  }
  n.wait_turns("r/rolling", 20);
  n.wait_turns("r/forever", 20);
  json v = n.wait_view(
      "r/rolling", [](const json& view) { return view.value("compacted_seq", 0) > 0; },
      "an automatic compaction");
  const uint64_t compacted = v["compacted_seq"].get<uint64_t>();
  const uint64_t last = v["last_seq"].get<uint64_t>();
  CHECK(last - compacted >= 20);
  CHECK(compacted >= 32);
  // The same guarantees as keel compact: the chain audits from its anchor,
  // the rest replays from the snapshot, and the archive holds the cut.
  auto audit = n.call("GET", loop_node::path("r/rolling") + "/audit");
  REQUIRE(audit.status == 200);
  CHECK(audit.body["intact"] == true);
  CHECK(audit.body["compacted_seq"] == compacted);
  auto replay = n.post(loop_node::path("r/rolling") + "/replay", json::object());
  REQUIRE(replay.status == 200);
  CHECK(replay.body["identical"] == true);
  CHECK(n.ledger("r/rolling").front()["seq"] == compacted + 1);
  const auto archive =
      n.dir() / "data" / "archive" / ("r%2Frolling.1-" + std::to_string(compacted) + ".jsonl");
  CHECK_MESSAGE(std::filesystem::exists(archive), archive.string());
  // A type without a policy keeps everything.
  CHECK_FALSE(n.view("r/forever").contains("compacted_seq"));
  // And it all survives a crash.
  n.kill9_and_restart();
  CHECK(n.view("r/rolling")["compacted_seq"] == compacted);
  CHECK(n.post(loop_node::path("r/rolling") + "/replay", json::object()).body["identical"] == true);
}
