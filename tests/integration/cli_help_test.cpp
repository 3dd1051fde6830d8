// The keel CLI explaining itself: the overview and each command's help,
// suggestions for a misspelt command, the bash completion, and waiting for
// a node that is not up yet (keel wait, and every command's short wait).

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/child_process.hpp"
#include "support/cli_runner.hpp"
#include "support/keeld_process.hpp"
#include "support/refused_port.hpp"
#include "support/temp_dir.hpp"

using nlohmann::json;
using namespace keel;
using namespace keel::test::cli;

namespace {

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// The command words the overview lists: the first word of each line under
// a group heading.
std::vector<std::string> listed_commands(const std::string& overview) {
  std::vector<std::string> out;
  static const std::regex line(R"(\n  ([a-z][a-z-]*)( [a-z-]+)?  )");
  for (auto it = std::sregex_iterator(overview.begin(), overview.end(), line);
       it != std::sregex_iterator(); ++it) {
    const std::string w = (*it)[1];
    if (std::find(out.begin(), out.end(), w) == out.end()) out.push_back(w);
  }
  return out;
}

// What `keel completion bash` offers for the words typed so far (the last
// one being completed), run through bash itself.
std::string complete(const std::vector<std::string>& words) {
  std::string array;
  for (const auto& w : words) array += " '" + w + "'";
  const std::string script = "source <(\"" + std::string(KEEL_CLI_PATH) +
                             "\" completion bash) && COMP_WORDS=(" + array +
                             ") && COMP_CWORD=" + std::to_string(words.size() - 1) +
                             " && _keel && echo \"${COMPREPLY[*]}\"";
  test::child_process bash({"/bin/bash", "-c", script});
  bash.wait_exit(std::chrono::seconds(10));
  return bash.output();
}

}  // namespace

TEST_CASE("keel -h, --help and help print the overview: every command, grouped, one line each") {
  auto help = run_keel({"help"});
  REQUIRE(help.exit_code == 0);
  CHECK(run_keel({"-h"}).out == help.out);
  CHECK(run_keel({"--help"}).out == help.out);
  CHECK(has(help.out, "usage: keel"));
  CHECK(has(help.out, "KEEL_SERVER"));
  CHECK(has(help.out, "\nAgents:\n  spawn "));
  CHECK(has(help.out, "\nLedger, replay and history:\n"));
  const auto commands = listed_commands(help.out);
  for (const char* c :
       {"spawn", "send", "signal", "show", "ls", "ledger", "replay", "fork", "types", "tasks",
        "token", "secret", "health", "wait", "cluster", "retry", "help", "completion"})
    CHECK_MESSAGE(std::find(commands.begin(), commands.end(), c) != commands.end(), c);
}

TEST_CASE("keel help CMD, keel CMD --help and keel CMD -h print that command's help alone") {
  auto help = run_keel({"help", "spawn"});
  REQUIRE(help.exit_code == 0);
  CHECK(run_keel({"spawn", "--help"}).out == help.out);
  CHECK(run_keel({"spawn", "-h"}).out == help.out);
  CHECK(help.out.rfind("usage: keel spawn TYPE NAME [--input JSON]\n", 0) == 0);
  CHECK(has(help.out, "\nflags:\n  --input JSON  "));
  CHECK(has(help.out, "\nexamples:\n  keel spawn counter acct/alice\n"));
  CHECK_FALSE(has(help.out, "Agents:"));  // not the whole overview
  // A subcommand's help, and a command's with all its subcommands.
  auto show = run_keel({"types", "show", "--help"});
  CHECK(show.out.rfind("usage: keel types show TYPE [VERSION]\n", 0) == 0);
  auto types = run_keel({"help", "types"});
  for (const char* s : {"types [ls]", "types versions TYPE", "types show TYPE", "types put"})
    CHECK_MESSAGE(has(types.out, std::string("usage: keel ") + s), s);
  // send says what its exit codes with --wait mean; ledger has its -f.
  CHECK(has(run_keel({"help", "send"}).out, "3 it is\nparked"));
  CHECK(has(run_keel({"help", "ledger"}).out, "-f, --follow"));
  // A usage error points to the command's own help.
  auto wrong = run_keel({"spawn", "counter"});
  CHECK(wrong.exit_code == 2);
  CHECK(has(wrong.err, "usage: keel spawn TYPE NAME [--input JSON]"));
  CHECK(has(wrong.err, "run keel spawn --help"));
}

TEST_CASE("a misspelt command is answered with the nearest one, and exit 2") {
  auto r = run_keel({"spwan", "counter", "a"});
  CHECK(r.exit_code == 2);
  CHECK(has(r.err, "unknown command 'spwan'; did you mean 'spawn'?"));
  CHECK(r.out.empty());
  auto sub = run_keel({"types", "shwo", "x"});
  CHECK(sub.exit_code == 2);
  CHECK(has(sub.err, "unknown types command 'shwo'; did you mean 'show'?"));
  auto help = run_keel({"help", "legder"});
  CHECK(help.exit_code == 2);
  CHECK(has(help.err, "did you mean 'ledger'?"));
  // Nothing close: no guess.
  auto far = run_keel({"frobnicate"});
  CHECK(far.exit_code == 2);
  CHECK(has(far.err, "unknown command 'frobnicate'"));
  CHECK_FALSE(has(far.err, "did you mean"));
}

TEST_CASE("keel completion bash prints a script bash accepts, which completes from the commands") {
  auto script = run_keel({"completion", "bash"});
  REQUIRE(script.exit_code == 0);
  // Every command the overview lists has its arm in the script.
  for (const auto& c : listed_commands(run_keel({"help"}).out))
    CHECK_MESSAGE(has(script.out, "\n    " + c + ")\n"), c);
  test::temp_dir dir("keel-completion");
  const std::string file = dir.str() + "/keel.bash";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    REQUIRE(f);
    std::fputs(script.out.c_str(), f);
    std::fclose(f);
  }
  test::child_process syntax({"/bin/bash", "-n", file}, test::this_environment(),
                             test::child_process::stderr_to::output);
  CHECK_MESSAGE(syntax.wait_exit(std::chrono::seconds(10)) == 0, syntax.output());

  CHECK(complete({"keel", "sp"}) == "spawn\n");
  CHECK(complete({"keel", "types", ""}) == "ls versions show put\n");
  CHECK(complete({"keel", "send", "a", "{}", "--w"}) == "--wait\n");
  CHECK(complete({"keel", "ledger", "a", "--f"}) == "--from --follow\n");
  CHECK(complete({"keel", "--server", "http://x", "hea"}) == "health\n");
  CHECK(complete({"keel", "completion", ""}) == "bash\n");
  auto other = run_keel({"completion", "zsh"});
  CHECK(other.exit_code == 2);
  CHECK(has(other.err, "bash only"));
}

TEST_CASE(
    "a command waits briefly for a node that refuses connections, then says how to start one") {
  test::refused_port closed;
  const std::string url = server_url(closed.port());
  const auto started = std::chrono::steady_clock::now();
  auto r = run_keel({"--server", url, "ls"}, {{"KEEL_CONNECT_WAIT_MS", "1500"}});
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(r.exit_code == 1);
  CHECK(has(r.err, "keel: waiting for keeld at " + url + " ...\n"));
  CHECK(has(r.err, "keel: no keeld answers at " + url +
                       " (connection refused); start one with ./build/keeld --data DIR, or pass "
                       "--server\n"));
  // It gave up after its budget, not before and not much later.
  CHECK(took >= std::chrono::milliseconds(1500));
  CHECK(took < std::chrono::seconds(10));
  // 0: no wait at all, and nothing said about waiting.
  auto now = run_keel({"--server", url, "ls"}, {{"KEEL_CONNECT_WAIT_MS", "0"}});
  CHECK(now.exit_code == 1);
  CHECK_FALSE(has(now.err, "waiting"));
  auto bad = run_keel({"--server", url, "ls"}, {{"KEEL_CONNECT_WAIT_MS", "soon"}});
  CHECK(bad.exit_code == 2);
  CHECK(has(bad.err, "KEEL_CONNECT_WAIT_MS must be a number of milliseconds"));
}

TEST_CASE("keel wait returns 0 once a keeld started after it answers") {
  // The port is chosen (and freed) first: keel wait goes there before
  // anything listens.
  test::refused_port reserved;
  const uint16_t port = reserved.port();
  reserved.release();
  test::child_process waiter(
      {KEEL_CLI_PATH, "--server", server_url(port), "wait", "--timeout", "60000"},
      keel_environment(), test::child_process::stderr_to::output);
  test::temp_dir dir("keel-wait");
  test::keeld_process keeld(KEEL_KEELD_PATH, dir.str(),
                            {"--http", "127.0.0.1:" + std::to_string(port)});
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  REQUIRE(keeld.port() == port);
  const auto code = waiter.wait_exit(std::chrono::seconds(60));
  CHECK_MESSAGE(code == 0, waiter.output());
  CHECK(has(waiter.output(), "keeld at " + server_url(port) + " is up ("));
}

TEST_CASE("keel wait gives up after its timeout with exit 1 and says what to do") {
  test::refused_port closed;
  auto r = run_keel({"--server", server_url(closed.port()), "wait", "--timeout", "300"});
  CHECK(r.exit_code == 1);
  CHECK(has(r.err, "no keeld answers at " + server_url(closed.port()) + " (connection refused)"));
  CHECK(has(r.err, "(waited 300 ms)"));
  auto usage = run_keel({"wait", "--timeout", "soon"});
  CHECK(usage.exit_code == 2);
}
