// Signals and listings across members: a signal sent through a member that
// does not own the agent is checked by the owner exactly as if sent there,
// and a listing through any member names each agent's node.

#include <doctest/doctest.h>

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "cluster/agent_requests.hpp"
#include "cluster/test_cluster.hpp"

namespace keel::test::cluster {

TEST_CASE("a signal through another member is refused as its owner refuses it, unrecorded") {
  test_cluster c(2);
  const auto ids = c.ids();
  const auto map = c.initial_map(ids);
  const std::string remote = name_owned_by(map, "phases/remote-", "n2");
  const std::string local = name_owned_by(map, "phases/local-", "n1");
  c.start_all();
  spawn_counter(c.clients(), "n1", remote);
  spawn_counter(c.clients(), "n1", local);
  const std::size_t before = read_ledger(c.clients(), "n2", remote).size();

  auto typo = c.post("n1", agent_path(remote) + "/signals/rest", json::object());
  REQUIRE(typo.transport_ok);
  CHECK_MESSAGE(typo.status == 400, typo.describe());
  CHECK_MESSAGE(typo.raw.find("takes no signal 'rest' (did you mean reset?)") != std::string::npos,
                typo.describe());
  auto resume = c.post("n1", agent_path(remote) + "/resume", json::object());
  CHECK_MESSAGE(resume.status == 409, resume.describe());
  CHECK_MESSAGE(resume.raw.find("is not paused") != std::string::npos, resume.describe());
  CHECK(read_ledger(c.clients(), "n2", remote).size() == before);

  auto reset = c.post("n1", agent_path(remote) + "/signals/reset?wait=5000", json::object());
  CHECK_MESSAGE(reset.status == 202, reset.describe());
  CHECK(reset.body["reply"] == json{{"total", 0}});
  CHECK_FALSE(reset.body.value("queued", false));

  // The listing through either member names each agent's owner.
  for (const auto& via : ids) {
    auto list = c.call(via, "GET", "/v1/agents?prefix=phases/");
    REQUIRE_MESSAGE(list.status == 200, list.describe());
    std::map<std::string, std::string> node_of;
    for (const auto& a : list.body["agents"]) {
      CHECK(a["phase"] == "idle");
      node_of[a["name"].get<std::string>()] = a["node"].get<std::string>();
    }
    CHECK(node_of == std::map<std::string, std::string>{{remote, "n2"}, {local, "n1"}});
    auto show = c.call(via, "GET", agent_path(remote));
    REQUIRE(show.status == 200);
    CHECK(show.body["node"] == "n2");
  }
  check_replays(c, "n1");
}

}  // namespace keel::test::cluster
