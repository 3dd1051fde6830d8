// The leader lease across a real partition (docs/replication.md, "The
// leader lease"): three members in namespaces of a private network
// (cluster/partitioned_cluster.hpp) and, in a fourth namespace, a tool API
// that every member reaches. A group's leader is in the middle of an
// idempotent http call when nftables cut it from both followers; the
// followers elect a new leader, which makes the call again under the same
// Idempotency-Key. The old leader's request must be abandoned (its
// connection closed) before the new leader's arrives: two members never
// run the same call at once.
//
// Skips like the other partition cases where namespaces or nft are
// refused.

#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "base/clock.hpp"
#include "cluster/partitioned_cluster.hpp"
#include "support/raw_http.hpp"
#include "support/temp_dir.hpp"

namespace {

// The tool API's namespace takes the address after the members'.
constexpr const char* tools_host = "10.99.0.4";
constexpr uint16_t tools_port = 18080;

// The value of header `name` in a raw request ("" when absent).
std::string header_of(const std::string& request, const std::string& name) {
  const std::string wanted = "\r\n" + name + ": ";
  auto at = request.find(wanted);
  if (at == std::string::npos) return {};
  at += wanted.size();
  return request.substr(at, request.find("\r\n", at) - at);
}

}  // namespace

TEST_CASE(
    "a leader cut off while an idempotent http call runs abandons it before the new leader "
    "makes it again") {
  keel::test::temp_dir agents("keel-lease-agents");
  {
    std::ofstream out(agents.path() / "payer.json");
    const std::string url =
        std::string("http://") + tools_host + ":" + std::to_string(tools_port) + "/tools/charge";
    out << one_http_call_type("payer", "charge", url, true, 30'000).dump(2);
    REQUIRE(out.good());
  }
  partitioned_cluster pc;
  pc.extra_namespaces = {"tools"};
  pc.member_args = {"--agents", agents.str()};
  if (!pc.start()) return;
  REQUIRE(pc.net->address("tools") == tools_host);
  auto tools = pc.net->in(
      "tools", [] { return std::make_unique<keel::test::raw_listener>(tools_host, tools_port); });

  const std::string name = "pay/1";
  const uint32_t g = group_of(name);
  const std::string leader = pc.ready_leader(g);
  REQUIRE_FALSE(leader.empty());
  auto spawned =
      pc.call(leader, "POST", "/v1/agents", json{{"name", name}, {"type", "payer"}}.dump());
  REQUIRE_MESSAGE((spawned.transport_ok && spawned.status == 201), spawned.describe());
  sent m{name, "order-9", 1};
  pc.send_acked(m, {leader});

  // The leader's call arrives and is held: no answer.
  auto first = tools->accept(30s);
  REQUIRE_MESSAGE(first.fd() >= 0, "the leader never called the tool\n" << pc.c->logs());
  const std::string request1 = first.read_until("\r\n\r\n", 10s);
  const std::string key = header_of(request1, "Idempotency-Key");
  REQUIRE_FALSE(key.empty());
  CHECK(first.peer_address() == pc.net->address(leader));

  // Cut it from both followers; the tool API still hears it.
  for (const auto& o : pc.others(leader)) pc.net->cut(leader, o);
  std::atomic<int64_t> closed_at{0};
  std::thread watch([&] {
    bool closed = false;
    first.read_all(60s, &closed);
    if (closed) closed_at.store(keel::mono_ns());
  });
  auto second = tools->accept(60s);
  const int64_t second_at = keel::mono_ns();
  watch.join();
  REQUIRE_MESSAGE(second.fd() >= 0, "no member made the call again\n" << pc.c->logs());
  const std::string request2 = second.read_until("\r\n\r\n", 10s);
  CHECK(header_of(request2, "Idempotency-Key") == key);
  CHECK(second.peer_address() != pc.net->address(leader));
  // The old leader had let go of its request before the new one came.
  REQUIRE_MESSAGE(closed_at.load() != 0, "the old leader kept its request open\n" << pc.c->logs());
  CHECK(closed_at.load() < second_at);

  const std::string body = R"({"charged": true})";
  REQUIRE(second.send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body));
  pc.net->heal_all();
  const auto rest = pc.others(leader);
  std::string status;
  bool completed = poll_until(
      [&] {
        const std::string via = pc.ready_leader(g, rest);
        if (via.empty()) return false;
        auto a = pc.call(via, "GET", agent_path(name));
        if (!a.transport_ok || a.status != 200) return false;
        status =
            a.body.value("state", json::object()).value("last", json::object()).value("status", "");
        return status == "completed";
      },
      30s, 100ms);
  CHECK_MESSAGE(completed, "the agent's last turn is '" << status << "'\n" << pc.c->logs());
  // Nothing more reached the tool API: the old leader started nothing
  // after the cut, and the new leader's call was answered.
  CHECK(tools->accept(0ms).fd() < 0);
}
