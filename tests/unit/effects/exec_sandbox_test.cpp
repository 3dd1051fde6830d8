#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <filesystem>
#include <iterator>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "effects/exec_sandbox.hpp"
#include "support/process_scan.hpp"
#include "support/wait.hpp"

using keel::actors::exec_outcome;
using keel::actors::probe_sandbox;
using keel::actors::run_sandboxed;
using keel::config::exec_limits;
using keel::test::processes_with;

namespace {

constexpr uint32_t generous_ms = 20'000;

exec_outcome run(const std::vector<std::string>& argv, const std::string& input = "",
                 const exec_limits& limits = {}, uint32_t timeout_ms = generous_ms) {
  auto r = run_sandboxed(argv, input, limits, timeout_ms);
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return std::move(r).value();
}

exec_outcome shell(const std::string& script, const exec_limits& limits = {},
                   uint32_t timeout_ms = generous_ms) {
  return run({"/bin/sh", "-c", script}, "", limits, timeout_ms);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Interfaces of the network namespace the reader is in (the first column of
// /proc/net/dev after its two header lines).
std::set<std::string> interfaces_in(const std::string& proc_net_dev) {
  std::set<std::string> names;
  auto lines = lines_of(proc_net_dev);
  for (std::size_t i = 2; i < lines.size(); ++i) {
    auto colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    auto first = lines[i].find_first_not_of(' ');
    names.insert(lines[i].substr(first, colon - first));
  }
  return names;
}

}  // namespace

TEST_CASE("the sandbox probe says what it can enforce") {
  const auto& caps = probe_sandbox();
  std::string summary = std::string("exec sandbox: rlimits ") + (caps.rlimits ? "yes" : "no") +
                        ", network namespace " + (caps.network_namespace ? "yes" : "no") +
                        (caps.detail.empty() ? std::string() : " (" + caps.detail + ")");
  MESSAGE(summary);
  CHECK(caps.rlimits);
  CHECK(&probe_sandbox() == &caps);
  if (!caps.network_namespace) CHECK_FALSE(caps.detail.empty());
}

TEST_CASE("stdin reaches the program and its stdout comes back") {
  SUBCASE("a short input") {
    auto out = run({"/bin/cat"}, R"({"x": 1})");
    CHECK(out.exit_code == 0);
    CHECK(out.signal == 0);
    CHECK_FALSE(out.timed_out);
    CHECK(out.stdout_text == R"({"x": 1})");
  }
  SUBCASE("an input far larger than a pipe, echoed while it is still being written") {
    std::string big(3 << 20, 'x');
    for (std::size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
    exec_limits limits;
    limits.max_output_bytes = 0;  // no cap
    auto out = run({"/bin/cat"}, big, limits);
    CHECK(out.exit_code == 0);
    CHECK_FALSE(out.output_truncated);
    CHECK(out.stdout_text == big);
  }
  SUBCASE("the program sees end of input") {
    auto out = run({"/usr/bin/wc", "-c"}, std::string(200'000, 'z'));
    CHECK(out.stdout_text == "200000\n");
  }
}

TEST_CASE("a shell script producing JSON runs under /bin/sh -c") {
  auto out = shell(R"(printf '{"ok": true, "n": %d}\n' 42)");
  CHECK(out.exit_code == 0);
  CHECK(out.stdout_text == "{\"ok\": true, \"n\": 42}\n");
  CHECK(out.stderr_text.empty());
}

TEST_CASE("exit codes, signals and stderr come back as they are") {
  SUBCASE("a non-zero exit code") {
    auto out = shell("echo oops >&2; exit 3");
    CHECK(out.exit_code == 3);
    CHECK(out.signal == 0);
    CHECK(out.stderr_text == "oops\n");
  }
  SUBCASE("death by a signal") {
    auto out = shell("kill -TERM $$");
    CHECK(out.exit_code == -1);
    CHECK(out.signal == SIGTERM);
    CHECK_FALSE(out.timed_out);
  }
}

TEST_CASE("a program that cannot be executed exits with 127 or 126 and says why") {
  SUBCASE("missing") {
    auto out = run({"/nonexistent/tool", "--flag"});
    CHECK(out.exit_code == 127);
    CHECK(contains(out.stderr_text, "cannot execute /nonexistent/tool"));
  }
  SUBCASE("not on the sandbox's PATH") {
    auto out = run({"no-such-program-keel"});
    CHECK(out.exit_code == 127);
  }
  SUBCASE("not executable") {
    auto out = run({"/etc/hostname"});
    CHECK(out.exit_code == 126);
    CHECK(contains(out.stderr_text, "cannot execute /etc/hostname"));
  }
}

TEST_CASE("a bare program name is looked up on the sandbox's PATH") {
  auto out = run({"echo", "found"});
  CHECK(out.exit_code == 0);
  CHECK(out.stdout_text == "found\n");
}

TEST_CASE("an empty argv is refused") {
  auto r = run_sandboxed({}, "", {}, 1000);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == keel::code::invalid_argument);
}

TEST_CASE("the wall timeout kills the program") {
  auto out = run({"/bin/sleep", "30"}, "", {}, 300);
  CHECK(out.timed_out);
  CHECK(out.signal == SIGKILL);
  CHECK(out.exit_code == -1);
}

TEST_CASE("the wall timeout kills the program's whole process group") {
  // The grandchild holds stdout open. (Its pid means nothing here when the
  // call runs in a PID namespace: it is found by a token instead.)
  const std::string token = "keel-grandchild-" + std::to_string(::getpid());
  auto out = shell("sh -c 'sleep 30; echo " + token + "' & wait", {}, 500);
  CHECK(out.timed_out);
  CHECK(keel::test::eventually([&] { return processes_with(token) == 0; }));
}

TEST_CASE("an abort kills everything the call started at once, and says so") {
  // Two shells, each waiting on a sleep, both with the token in their
  // command lines: the call has started once both run.
  const std::string token = "keel-aborted-" + std::to_string(::getpid());
  keel::abort_signal abort;
  keel::test::future_value<keel::result<exec_outcome>> done;
  std::thread caller([&] {
    done.set(run_sandboxed(
        {"/bin/sh", "-c", "sh -c 'sleep 30; echo " + token + "' & sleep 30; echo " + token}, "", {},
        60'000, {}, &abort));
  });
  REQUIRE(keel::test::eventually([&] { return processes_with(token) >= 2; }));
  auto raised_at = std::chrono::steady_clock::now();
  CHECK(abort.raise());
  auto r = done.wait(std::chrono::seconds(20));
  auto took = std::chrono::steady_clock::now() - raised_at;
  caller.join();
  REQUIRE(r.has_value());
  REQUIRE_MESSAGE(r->is_ok(), r->error().to_string());
  const exec_outcome& out = r->value();
  MESSAGE("aborted sandbox call returned "
          << std::chrono::duration_cast<std::chrono::microseconds>(took).count() << " us after "
          << "the raise");
  CHECK(took < std::chrono::seconds(2));  // not the 30 s sleep nor the 60 s timeout
  CHECK(out.aborted);
  CHECK(out.started);
  CHECK_FALSE(out.timed_out);
  CHECK(out.signal == SIGKILL);
  // In a PID namespace nothing is left when the call returns; elsewhere the
  // group's SIGKILL lands within moments.
  if (probe_sandbox().pid_namespace) CHECK(processes_with(token) == 0);
  CHECK(
      keel::test::eventually([&] { return processes_with(token) == 0; }, std::chrono::seconds(5)));
}

TEST_CASE("a call whose abort was raised before it started runs nothing") {
  const std::string token = "keel-never-" + std::to_string(::getpid());
  keel::abort_signal abort;
  abort.raise();
  auto r = run_sandboxed({"/bin/sh", "-c", "sleep 30; echo " + token}, "", {}, 60'000, {}, &abort);
  REQUIRE(r.is_ok());
  CHECK(r->aborted);
  CHECK_FALSE(r->started);
  CHECK(processes_with(token) == 0);
}

TEST_CASE("what a finished program left running in its group is killed") {
  // The shell exits at once; the background sleep would keep stdout open
  // for 30 s. The call returns when the shell is done, not at the timeout.
  const std::string token = "keel-leftover-" + std::to_string(::getpid());
  auto out = shell("sh -c 'sleep 30; echo " + token + "' & echo started", {}, generous_ms);
  CHECK_FALSE(out.timed_out);
  CHECK(out.exit_code == 0);
  CHECK(out.stdout_text == "started\n");
  CHECK(keel::test::eventually([&] { return processes_with(token) == 0; }));
}

TEST_CASE("the limits are set in the program's process") {
  exec_limits limits;
  limits.cpu_seconds = 7;
  limits.memory_bytes = 256ull << 20;
  limits.max_open_files = 33;
  limits.max_processes = 12;
  // dash's ulimit: -t CPU seconds, -v address space in KiB, -n files,
  // -p processes, -c core size.
  auto out = shell("ulimit -t; ulimit -v; ulimit -n; ulimit -p; ulimit -c", limits);
  CHECK(out.exit_code == 0);
  CHECK(lines_of(out.stdout_text) ==
        std::vector<std::string>{"7", std::to_string(256 << 10), "33", "12", "0"});

  SUBCASE("0 leaves a limit as the node has it") {
    exec_limits none;
    none.cpu_seconds = 0;
    none.memory_bytes = 0;
    auto as_ulimit = [](int resource, rlim_t unit) {
      rlimit l{};
      REQUIRE(::getrlimit(resource, &l) == 0);
      return l.rlim_cur == RLIM_INFINITY ? std::string("unlimited")
                                         : std::to_string(l.rlim_cur / unit);
    };
    auto kept = shell("ulimit -t; ulimit -v", none);
    CHECK(lines_of(kept.stdout_text) ==
          std::vector<std::string>{as_ulimit(RLIMIT_CPU, 1), as_ulimit(RLIMIT_AS, 1024)});
  }
}

TEST_CASE("the address-space limit makes a large allocation fail") {
  // The shell must hold 24 MB in a variable; with a 16 MiB address space
  // it cannot (dash dies on the failed allocation).
  const std::string script = R"(x=$(head -c 24000000 /dev/zero | tr "\0" a); echo ok)";
  exec_limits small;
  small.memory_bytes = 16ull << 20;
  auto starved = shell(script, small);
  CHECK(starved.stdout_text.empty());
  CHECK((starved.exit_code != 0 || starved.signal != 0));

  exec_limits roomy;
  roomy.memory_bytes = 0;
  auto fed = shell(script, roomy);
  CHECK(fed.stdout_text == "ok\n");
}

TEST_CASE("the CPU limit stops a busy loop before the wall timeout") {
  exec_limits limits;
  limits.cpu_seconds = 1;
  auto out = shell("while :; do :; done", limits, 30'000);
  CHECK_FALSE(out.timed_out);
  CHECK((out.signal == SIGXCPU || out.signal == SIGKILL));
}

TEST_CASE("the open-files limit is enforced") {
  // 0-2 are taken; with 4 descriptors fd 3 opens and fd 4 does not.
  const std::string script = "exec 3</dev/null; exec 4</dev/null; echo opened";
  exec_limits limits;
  limits.max_open_files = 4;
  auto out = shell(script, limits);
  CHECK(out.stdout_text.empty());
  CHECK(out.exit_code != 0);
  CHECK(contains(out.stderr_text, "Too many open files"));

  limits.max_open_files = 5;
  CHECK(shell(script, limits).stdout_text == "opened\n");
}

TEST_CASE("the process limit is enforced on the tool's own processes") {
  if (::geteuid() == 0 && !probe_sandbox().separate_uid) {
    MESSAGE("running as root without a tool uid, which RLIMIT_NPROC does not apply to");
    return;
  }
  const std::string script = "for i in 1 2 3 4 5 6; do sleep 1 & done; wait; echo forked";
  exec_limits limits;
  limits.max_processes = 3;
  auto starved = shell(script, limits);
  CHECK(starved.stdout_text.empty());
  // Where user namespaces work, the count is the sandbox's alone, so this
  // passes however many processes and threads the test's user has.
  if (probe_sandbox().network_namespace) {
    limits.max_processes = 10;
    CHECK(shell(script, limits).stdout_text == "forked\n");
  }
}

TEST_CASE("the environment holds only the documented variables") {
  ::setenv("KEEL_SANDBOX_TEST_SECRET", "do-not-leak", 1);
  auto out = run({"/usr/bin/env"});
  ::unsetenv("KEEL_SANDBOX_TEST_SECRET");
  CHECK(out.exit_code == 0);
  auto vars = lines_of(out.stdout_text);
  CHECK(std::set<std::string>(vars.begin(), vars.end()) ==
        std::set<std::string>{"PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"});
}

TEST_CASE("a tool's env is added on top, HOME may change, PATH never does, the node's stays out") {
  ::setenv("KEEL_SANDBOX_TEST_SECRET", "do-not-leak", 1);
  keel::actors::sandbox_options opts;
  opts.env = {{"API_TOKEN", "tok en=1"}, {"HOME", "/tmp/tool-home"}, {"PATH", "/opt/evil"}};
  auto r = run_sandboxed({"/usr/bin/env"}, "", {}, generous_ms, opts);
  ::unsetenv("KEEL_SANDBOX_TEST_SECRET");
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK(r->exit_code == 0);
  auto vars = lines_of(r->stdout_text);
  CHECK(std::set<std::string>(vars.begin(), vars.end()) ==
        std::set<std::string>{"PATH=/usr/bin:/bin", "HOME=/tmp/tool-home", "LANG=C.UTF-8",
                              "API_TOKEN=tok en=1"});
}

TEST_CASE("the program inherits no file descriptors but 0, 1 and 2") {
  int leaky = ::open("/dev/null", O_RDONLY);  // deliberately not close-on-exec
  REQUIRE(leaky >= 0);
  auto out = run({"/bin/ls", "/proc/self/fd"});
  ::close(leaky);
  auto fds = lines_of(out.stdout_text);
  // ls itself holds the directory it lists open as fd 3.
  CHECK(std::set<std::string>(fds.begin(), fds.end()) == std::set<std::string>{"0", "1", "2", "3"});
}

TEST_CASE("the program leads its own session and process group, in /tmp") {
  // /proc/<pid>/stat: "pid (comm) state ppid pgrp session ...".
  auto stat = run({"/bin/cat", "/proc/self/stat"});
  std::istringstream fields(stat.stdout_text.substr(stat.stdout_text.rfind(')') + 2));
  std::string state, ppid, pgrp, session;
  fields >> state >> ppid >> pgrp >> session;
  std::string pid = stat.stdout_text.substr(0, stat.stdout_text.find(' '));
  CHECK(pgrp == pid);
  CHECK(session == pid);
  CHECK(run({"/bin/pwd"}).stdout_text == "/tmp\n");
}

TEST_CASE("without allow_network the program sees only loopback") {
  const auto& caps = probe_sandbox();
  if (!caps.network_namespace) {
    MESSAGE("network namespaces unavailable here, not checked: ", caps.detail);
    return;
  }
  auto isolated = run({"/bin/cat", "/proc/net/dev"});
  CHECK(interfaces_in(isolated.stdout_text) == std::set<std::string>{"lo"});

  exec_limits open;
  open.allow_network = true;
  auto shared = run({"/bin/cat", "/proc/net/dev"}, "", open);
  std::ifstream here("/proc/net/dev");
  std::stringstream ours;
  ours << here.rdbuf();
  CHECK(interfaces_in(shared.stdout_text) == interfaces_in(ours.str()));
}

TEST_CASE("stdout past max_output_bytes is cut and flagged, and the program still finishes") {
  exec_limits limits;
  limits.max_output_bytes = 1000;
  auto out = shell("head -c 300000 /dev/zero; echo done >&2", limits);
  CHECK(out.output_truncated);
  CHECK(out.stdout_text.size() == 1000);
  // Kept reading: the writer never saw a broken pipe.
  CHECK(out.exit_code == 0);
  CHECK(out.stderr_text == "done\n");

  auto exact = shell("head -c 1000 /dev/zero", limits);
  CHECK_FALSE(exact.output_truncated);
  CHECK(exact.stdout_text.size() == 1000);
}

TEST_CASE("stderr keeps its last 64 KiB") {
  auto out = shell("head -c 200000 /dev/zero | tr '\\0' e >&2; echo THE-END >&2");
  CHECK(out.stderr_text.size() == 64u << 10);
  CHECK(out.stderr_text.ends_with("eeeTHE-END\n"));
}

TEST_CASE("a program that ignores its input does not hurt the caller") {
  // Writing the rest of the input hits a closed pipe: EPIPE, not SIGPIPE.
  auto out = run({"/bin/true"}, std::string(4 << 20, 'i'));
  CHECK(out.exit_code == 0);
  auto partial = run({"/usr/bin/head", "-c", "5"}, std::string(4 << 20, 'p'));
  CHECK(partial.stdout_text == "ppppp");
}

TEST_CASE("concurrent calls keep their inputs and outputs apart") {
  std::vector<std::string> outputs(6);
  std::vector<std::string> failures(outputs.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    threads.emplace_back([i, &outputs, &failures] {
      std::string input(100'000 + i * 777, static_cast<char>('a' + i));
      auto r = run_sandboxed({"/bin/cat"}, input, {}, generous_ms);
      if (!r.is_ok()) {
        failures[i] = r.error().message();
      } else {
        outputs[i] = r->stdout_text;
        if (r->exit_code != 0 || r->timed_out)
          failures[i] = "exit " + std::to_string(r->exit_code) +
                        (r->timed_out ? " (timed out)" : "") + ", stderr: " + r->stderr_text;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    CAPTURE(i);
    CHECK_MESSAGE(failures[i].empty(), failures[i]);
    CHECK(outputs[i].size() == 100'000 + i * 777);
    // (Compared as a bool: doctest would print both 100 kB strings.)
    const bool same = outputs[i] == std::string(100'000 + i * 777, static_cast<char>('a' + i));
    CHECK(same);
  }
}

TEST_CASE("a tool cannot signal or see the process that runs it") {
  const auto& caps = probe_sandbox();
  if (!caps.pid_namespace) {
    MESSAGE("PID namespaces unavailable here, not checked: ", caps.detail);
    return;
  }
  const std::string me = std::to_string(::getpid());
  // Its parent is the namespace's init, which ignores it; the node's real
  // pid names no process it can reach; kill -1 reaches only its own.
  auto out = shell("kill -9 $PPID; kill -9 " + me +
                   " 2>&1 || echo no-such-process; kill -9 -1; echo alive");
  CHECK(contains(out.stdout_text, "no-such-process"));
  CHECK(contains(out.stdout_text, "alive"));
  if (caps.private_proc) {
    auto listed = shell("ls /proc | grep -c '^[0-9]'; cat /proc/" + me + "/cmdline || echo hidden");
    auto lines = lines_of(listed.stdout_text);
    REQUIRE_FALSE(lines.empty());
    CHECK(std::stoi(lines.front()) <= 4);  // the init, sh, ls, grep
    CHECK(contains(listed.stdout_text, "hidden"));
  }
}

TEST_CASE("processes a tool leaves behind, setsid ones included, end with the call") {
  const auto& caps = probe_sandbox();
  if (!caps.pid_namespace) {
    MESSAGE("PID namespaces unavailable here, not checked: ", caps.detail);
    return;
  }
  const std::string token = "keel-escapee-" + std::to_string(::getpid());
  auto out = shell("setsid sh -c 'sleep 60; echo " + token +
                   "' >/dev/null 2>&1 < /dev/null & "
                   "(sh -c 'sleep 60; echo " +
                   token + "' &) ; echo started");
  CHECK(out.exit_code == 0);
  CHECK(out.stdout_text == "started\n");
  // The init's exit ended its namespace before the call returned.
  CHECK(processes_with(token) == 0);

  // The same on a timeout: the whole namespace goes.
  auto slow = shell("setsid sh -c 'sleep 60; echo " + token + "' & sleep 60", {}, 300);
  CHECK(slow.timed_out);
  CHECK(processes_with(token) == 0);
}

TEST_CASE("a hidden path shows the tool an empty directory it cannot read or write") {
  const auto& caps = probe_sandbox();
  if (!caps.pid_namespace) {
    MESSAGE("PID namespaces unavailable here, not checked: ", caps.detail);
    return;
  }
  auto dir = std::filesystem::temp_directory_path() / ("keel-hidden-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "secret") << "the node's data"; }
  // Granted and hidden: hiding wins.
  keel::actors::sandbox_options opts;
  opts.hidden = {dir.string()};
  opts.write_paths = {dir.string()};
  auto r = run_sandboxed({"/bin/sh", "-c",
                          "cat " + (dir / "secret").string() + " || echo unreadable; touch " +
                              (dir / "mine").string() + " || echo unwritable"},
                         "", {}, generous_ms, opts);
  REQUIRE(r.is_ok());
  CHECK_FALSE(contains(r->stdout_text, "the node's data"));
  CHECK(contains(r->stdout_text, "unreadable"));
  CHECK(contains(r->stdout_text, "unwritable"));
  CHECK_FALSE(std::filesystem::exists(dir / "mine"));
  // Outside the sandbox nothing changed.
  std::ifstream in(dir / "secret");
  std::string still((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(still == "the node's data");
  std::filesystem::remove_all(dir);
}
