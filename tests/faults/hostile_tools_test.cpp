// Tools that try to harm the node that runs them: one kills its parent and
// everything it can reach, one leaves setsid'd grandchildren behind, and
// one is running each time the node dies. None of them takes the node down
// or outlives its call, and a call the node keeps dying in is not started
// again on every restart.

#include <doctest/doctest.h>

#include <fstream>

#include "faults/fault_support.hpp"
#include "support/loop_node.hpp"

using namespace keel::test;
using namespace keel::test::loop;

namespace {

json exec_tool(const std::string& name, const std::string& script, bool idempotent) {
  return {{"name", name},
          {"description", "the " + name + " tool"},
          {"parameters", {{"type", "object"}}},
          {"kind", "exec"},
          {"argv", {"/bin/sh", "-c", "cat >/dev/null; " + script}},
          {"idempotent", idempotent},
          {"retry", {{"attempts", 1}, {"timeout_ms", 60'000}}}};
}

int lines_in(const fs::path& p) {
  std::ifstream in(p);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

int processes_with(const std::string& token) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(token) == std::string::npos) continue;
    std::ifstream st(e.path() / "stat");
    std::string stat;
    std::getline(st, stat);
    auto close = stat.rfind(')');
    if (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z') ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("a tool that kills its parent and all it can reach leaves keeld running") {
  loop_node n;
  n.write_spec(one_call_type(
      n, "killer",
      exec_tool("kill_all", "kill -9 $PPID; kill -9 -1; kill -9 1; echo '{\"tried\": true}'",
                true)));
  n.start();
  n.spawn("hostile/k", "killer");
  n.send("hostile/k", "go");
  auto v = n.wait_turns("hostile/k");
  CHECK(n.process().alive());
  CHECK(v["phase"] == "idle");
  // The tool ran once and its call completed: nothing it did reached the node.
  auto events = n.ledger("hostile/k");
  REQUIRE(of_type(events, "effect_completed").size() == 1);
  // keeld answers, and a restart finds nothing to recover.
  n.kill9_and_restart();
  CHECK(n.view("hostile/k")["phase"] == "idle");
}

TEST_CASE("a tool's setsid grandchildren end with its call") {
  const std::string token = "keel-escapee-" + std::to_string(::getpid());
  loop_node n;
  n.write_spec(one_call_type(n, "leaver",
                             exec_tool("leave",
                                       "setsid sh -c 'sleep 120; echo " + token +
                                           "' >/dev/null 2>&1 </dev/null & echo '{\"left\": true}'",
                                       true)));
  n.start();
  n.spawn("hostile/l", "leaver");
  n.send("hostile/l", "go");
  n.wait_turns("hostile/l");
  CHECK(processes_with(token) == 0);
}

TEST_CASE(
    "a call the node died in twice in a row is not started again but fails, with the reason") {
  temp_dir marks("keel-marks");
  const fs::path runs = marks.path() / "runs";
  // Granted to the tool, which runs as an unprivileged uid under root.
  fs::permissions(marks.path(), fs::perms::all);
  loop_node n;
  // Each run notes itself, then stays until the node is killed under it.
  json linger =
      exec_tool("linger", "echo run >> " + runs.string() + "; sleep 120; echo '{}'", true);
  linger["paths"] = {{"write", {marks.path().string()}}};
  n.write_spec(one_call_type(n, "crasher", linger));
  n.start();
  n.spawn("hostile/c", "crasher");
  n.send("hostile/c", "go");

  // The node dies while the call runs; recovery runs it again (it is
  // idempotent), and the node dies again.
  REQUIRE(eventually([&] { return lines_in(runs) == 1; }, fault_deadline));
  n.kill9_and_restart();
  REQUIRE(eventually([&] { return lines_in(runs) == 2; }, fault_deadline));
  n.kill9_and_restart();
  // The third start does not run it: the turn fails instead, saying why.
  auto v = n.wait_turns("hostile/c");
  CHECK(lines_in(runs) == 2);
  auto failed = of_type(n.ledger("hostile/c"), "effect_failed");
  REQUIRE(failed.size() == 1);
  CHECK_MESSAGE(
      failed[0]["error"].get<std::string>().find("stopped 2 times in a row") != std::string::npos,
      failed[0].dump());
  auto turns = of_type(n.ledger("hostile/c"), "turn_completed");
  REQUIRE(turns.size() == 1);
  CHECK(turns[0]["status"] == "failed");
  // After a clean stop and start nothing runs it again either.
  CHECK(n.process().terminate() == 0);
  n.start();
  CHECK(n.view("hostile/c")["phase"] == "idle");
  CHECK(lines_in(runs) == 2);
}
