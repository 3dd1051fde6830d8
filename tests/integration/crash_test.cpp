// A real keeld, killed with SIGKILL while four clients write to it: every
// acknowledged message must be processed exactly once.

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "support/http_replay_check.hpp"
#include "support/keeld_process.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using nlohmann::json;
using namespace keel;

namespace {

constexpr int agent_count = 200;
constexpr int client_count = 4;
constexpr int message_count = 5000;
constexpr int kill_count = 4;

std::string agent_name(int i) {
  return "crash/agent-" + std::to_string(i);
}

// The server currently up: clients re-read it after a connection fails.
struct server_slot {
  std::mutex mu;
  uint16_t port = 0;
  uint64_t generation = 0;
  bool up = false;

  std::pair<uint16_t, uint64_t> current() {
    std::lock_guard lk(mu);
    return {up ? port : uint16_t{0}, generation};
  }
  void set(uint16_t p) {
    std::lock_guard lk(mu);
    port = p;
    up = true;
    ++generation;
  }
  void down() {
    std::lock_guard lk(mu);
    up = false;
  }
};

struct planned_message {
  std::string id;
  int agent;
  int add;
};

}  // namespace

TEST_CASE("acknowledged messages survive repeated SIGKILLs and are processed exactly once") {
  test::temp_dir dir("keel-crash");
  test::keeld_process keeld(KEEL_KEELD_PATH, dir.str(), {"--idle-ms", "200"});
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  server_slot slot;
  slot.set(keeld.port());

  {
    net::http_client c;
    REQUIRE(c.connect("127.0.0.1", keeld.port()).is_ok());
    for (int i = 0; i < agent_count; ++i) {
      auto r = c.request("POST", "/v1/agents",
                         json{{"name", agent_name(i)}, {"type", "counter"}}.dump());
      REQUIRE(r.is_ok());
      REQUIRE_MESSAGE(r->status == 201, r->body);
    }
  }

  std::random_device rd;
  const unsigned seed = rd();
  std::printf("crash test seed %u\n", seed);
  std::mt19937 rng(seed);
  std::vector<planned_message> plan;
  for (int i = 0; i < message_count; ++i)
    plan.push_back({"m-" + std::to_string(i), static_cast<int>(rng() % agent_count),
                    static_cast<int>(rng() % 9) + 1});

  std::atomic<int> acked{0};
  std::atomic<int> retries{0};
  std::atomic<bool> client_failed{false};
  std::mutex acked_mu;
  std::vector<bool> acknowledged(message_count, false);

  auto client = [&](int c) {
    net::http_client http;
    http.set_timeout(std::chrono::seconds(10));
    uint64_t connected_gen = 0;
    for (int i = c; i < message_count; i += client_count) {
      const auto& m = plan[static_cast<std::size_t>(i)];
      std::string target = "/v1/agents/" + net::percent_encode(agent_name(m.agent)) + "/messages";
      std::string body = json{{"id", m.id}, {"body", {{"add", m.add}}}}.dump();
      bool done = false;
      // Bounded: a message gets at most 2,000 attempts (far more than the
      // restarts need); a client that cannot deliver fails the test.
      for (int attempt = 0; attempt < 2000 && !done; ++attempt) {
        auto [port, gen] = slot.current();
        if (port == 0) {
          test::eventually([&] { return slot.current().first != 0; }, std::chrono::seconds(30));
          continue;
        }
        if (gen != connected_gen) {
          if (!http.connect("127.0.0.1", port).is_ok()) {
            ++retries;
            test::eventually([&] { return slot.current().second != gen; }, std::chrono::seconds(2));
            continue;
          }
          connected_gen = gen;
        }
        auto r = http.request("POST", target, body);
        if (r.is_ok() && r->status == 202) {
          done = true;
        } else {
          // Not acknowledged: the node died mid-request. Resend the same id
          // to the next incarnation.
          ++retries;
          connected_gen = 0;
          test::eventually([&] { return slot.current().second != gen; }, std::chrono::seconds(2));
        }
      }
      if (!done) {
        client_failed = true;
        return;
      }
      {
        std::lock_guard lk(acked_mu);
        acknowledged[static_cast<std::size_t>(i)] = true;
      }
      ++acked;
    }
  };

  std::vector<std::thread> clients;
  for (int c = 0; c < client_count; ++c) clients.emplace_back(client, c);

  // Kill at random points of progress (not at random times: progress is
  // what makes each kill land mid-stream on any machine speed).
  std::vector<int> thresholds;
  for (int k = 0; k < kill_count; ++k)
    thresholds.push_back(static_cast<int>((k + 1) * message_count / (kill_count + 1)) +
                         static_cast<int>(rng() % 300) - 150);
  int kills = 0;
  for (int t : thresholds) {
    if (!test::eventually([&] { return acked.load() >= t || client_failed.load(); },
                          std::chrono::seconds(120)))
      break;
    if (client_failed) break;
    slot.down();
    keeld.kill9();
    ++kills;
    REQUIRE_MESSAGE(keeld.start(), keeld.output());
    slot.set(keeld.port());
  }
  for (auto& t : clients) t.join();

  CHECK(kills == kill_count);
  REQUIRE_FALSE(client_failed.load());
  REQUIRE(acked.load() == message_count);
  MESSAGE("kills: " << kills << ", resends after failures: " << retries.load());

  // One more crash with everything acknowledged, then check the books.
  keeld.kill9();
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  net::http_client c;
  REQUIRE(c.connect("127.0.0.1", keeld.port()).is_ok());
  std::map<int, int64_t> expected;
  std::map<int, std::set<std::string>> expected_ids;
  for (const auto& m : plan) {
    expected[m.agent] += m.add;
    expected_ids[m.agent].insert(m.id);
  }
  int agents_checked = 0;
  for (int a = 0; a < agent_count; ++a) {
    std::string enc = net::percent_encode(agent_name(a));
    auto v = c.request("GET", "/v1/agents/" + enc);
    REQUIRE(v.is_ok());
    REQUIRE_MESSAGE(v->status == 200, v->body);
    auto view = json::parse(v->body);
    CHECK_MESSAGE(view["state"]["total"].get<int64_t>() == expected[a], agent_name(a));

    std::multiset<std::string> seen;
    uint64_t from = 1;
    for (;;) {
      auto l = c.request(
          "GET", "/v1/agents/" + enc + "/ledger?from=" + std::to_string(from) + "&limit=1000");
      REQUIRE(l.is_ok());
      REQUIRE(l->status == 200);
      auto page = json::parse(l->body);
      for (const auto& e : page["events"]) {
        CHECK(e["seq"].get<uint64_t>() == from);
        ++from;
        if (e["type"] == "message_received") seen.insert(e["data"]["id"].get<std::string>());
      }
      if (!page["next"].is_number_unsigned()) break;
    }
    for (const auto& id : seen) CHECK_MESSAGE(seen.count(id) == 1, "duplicate " << id);
    CHECK(std::set<std::string>(seen.begin(), seen.end()) == expected_ids[a]);
    ++agents_checked;
  }
  CHECK(agents_checked == agent_count);
  // Five SIGKILLs mid-stream leave ledgers that still replay strictly.
  CHECK(test::check_strict_replays_over_http(keeld.port()) == agent_count);
}

TEST_CASE("keeld finishes in-flight writes and exits 0 on SIGTERM") {
  test::temp_dir dir("keel-term");
  test::keeld_process keeld(KEEL_KEELD_PATH, dir.str());
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  net::http_client c;
  REQUIRE(c.connect("127.0.0.1", keeld.port()).is_ok());
  auto r = c.request("POST", "/v1/agents", R"({"name": "term/a", "type": "counter"})");
  REQUIRE(r.is_ok());
  REQUIRE(r->status == 201);
  for (int i = 0; i < 50; ++i) {
    auto s = c.request("POST", "/v1/agents/term%2Fa/messages", R"({"body": {"add": 2}})");
    REQUIRE(s.is_ok());
    REQUIRE(s->status == 202);
  }
  CHECK(keeld.terminate() == 0);
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  REQUIRE(c.connect("127.0.0.1", keeld.port()).is_ok());
  auto v = c.request("GET", "/v1/agents/term%2Fa");
  REQUIRE(v.is_ok());
  REQUIRE(v->status == 200);
  CHECK(json::parse(v->body)["state"]["total"] == 100);
  CHECK(test::check_strict_replays_over_http(keeld.port()) == 1);
}

TEST_CASE("keeld refuses to listen beyond loopback without a token") {
  test::temp_dir dir("keel-token");
  test::keeld_process keeld(KEEL_KEELD_PATH, dir.str(), {"--http", "0.0.0.0:0"});
  CHECK_FALSE(keeld.start(std::chrono::seconds(10)));
  CHECK(keeld.output().find("token") != std::string::npos);
}
