// Worker tasks in a replicated cluster (docs/replication.md): a task is
// durable in its agent's group from the write that started it (its effect
// marker), and each member's task queue holds the tasks of the groups it
// leads. When a group's leader dies with a task of its agent waiting for
// a worker, the new leader queues the task again, leased for one lease as
// after a restart, and then hands it out.

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cluster/agent_requests.hpp"
#include "cluster/replicated_cluster.hpp"
#include "cluster/test_cluster.hpp"
#include "http/url.hpp"

namespace {

// A task of queue "renders" polled from `id`, waiting up to 30 s; null
// when none came.
json poll_task(test_cluster& c, const std::string& id) {
  json task;
  poll_until(
      [&] {
        auto a = c.post(id, "/v1/tasks/poll",
                        {{"queue", "renders"}, {"worker", "w-" + id}, {"wait_ms", 2000}});
        if (a.transport_ok && a.status == 200 && a.body.value("task", json()).is_object())
          task = a.body["task"];
        return task.is_object();
      },
      30s, 100ms);
  return task;
}

}  // namespace

TEST_CASE(
    "replicated: a worker task waiting when its group's leader dies is handed out by the new "
    "leader") {
  test_cluster c(3, shards);
  const auto agents = c.root() / "agents";
  std::filesystem::create_directories(agents);
  {
    json spec{{"name", "renderer"},
              {"model",
               {{"provider", "scripted"},
                {"script",
                 {{"replies",
                   {{{"content", nullptr},
                     {"tool_calls", {{{"name", "render"}, {"arguments", {{"doc", "report-7"}}}}}}},
                    {{"content", "rendered"}}}}}}}},
              {"tools",
               {{{"name", "render"},
                 {"description", "renders a document"},
                 {"parameters", {{"type", "object"}}},
                 {"kind", "worker"},
                 {"queue", "renders"},
                 {"lease_ms", 1000},
                 {"idempotent", true}}}}};
    std::ofstream out(agents / "renderer.json");
    out << spec.dump(2);
    REQUIRE(out.good());
  }
  start_replicated(c, 3, 5000, {"--agents", agents.string()});
  const auto ids = c.ids();
  const std::string name = "docs/render-1";
  const uint32_t g = group_of(name);
  spawn(c.clients(), ids[0], name, "renderer");
  send_acked(c, ids, name, "m-1", 1);

  const std::string leader = ready_leader(c, g);
  REQUIRE_FALSE(leader.empty());
  const json first = poll_task(c, leader);
  REQUIRE_MESSAGE(first.is_object(), "the leader never handed out the task\n" << c.logs());
  CHECK(first.value("agent", "") == name);

  c.kill9(leader);
  std::string next;
  REQUIRE_MESSAGE(poll_until(
                      [&] {
                        next = ready_leader(c, g);
                        return !next.empty();
                      },
                      30s, 50ms),
                  "no new leader\n"
                      << c.logs());
  const json again = poll_task(c, next);
  REQUIRE_MESSAGE(again.is_object(), next << " never handed out the task\n" << c.logs());
  CHECK(again["id"] == first["id"]);
  CHECK(again["idempotency_key"] == first["idempotency_key"]);

  auto done =
      c.post(next, "/v1/tasks/" + net::percent_encode(again["id"].get<std::string>()) + "/complete",
             {{"result", {{"url", "s3://docs/report-7.pdf"}}}});
  REQUIRE_MESSAGE((done.transport_ok && done.status == 200), done.describe());
  CHECK(done.body.value("recorded", false));
  std::string status;
  CHECK_MESSAGE(poll_until(
                    [&] {
                      auto v = c.call(next, "GET", agent_path(name));
                      status = v.transport_ok ? v.body.value("state", json::object())
                                                    .value("last", json::object())
                                                    .value("status", "")
                                              : "";
                      return status == "completed";
                    },
                    30s, 100ms),
                "the turn is '" << status << "'\n"
                                << c.logs());
  c.restart(leader);
}
