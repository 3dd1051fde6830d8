#pragma once
// The keel CLI (KEEL_CLI_PATH) as a child of the test: run to the end with
// its stdout and stderr captured, or left following (`keel ledger NAME -f`)
// while the test reads what it prints. Its environment is the test's minus
// KEEL_SERVER, KEEL_TOKEN, KEEL_CA, KEEL_CERT and KEEL_KEY, so only what a
// test passes decides where it goes and what it trusts; and it does not wait
// for a node that refuses connections (KEEL_CONNECT_WAIT_MS=0) unless the
// test passes KEEL_CONNECT_WAIT_MS itself. REQUIRES: KEEL_CLI_PATH is the keel
// executable. Uses doctest assertions: include it from test files only.

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "support/child_process.hpp"

namespace keel::test::cli {

struct cli_result {
  int exit_code = -1;  // -1: killed or timed out
  std::string out;
  std::string err;
};

using env_list = std::vector<std::pair<std::string, std::string>>;

inline std::string server_url(uint16_t port) {
  return "http://127.0.0.1:" + std::to_string(port);
}

// The environment of a keel child: this process's minus the variables the
// CLI reads for where to go, whom to trust and how long to wait, plus
// `extra` (and KEEL_CONNECT_WAIT_MS=0 unless `extra` sets it).
inline std::vector<std::string> keel_environment(const env_list& extra = {}) {
  std::vector<std::string> env;
  for (auto& kv : this_environment()) {
    bool dropped = false;
    for (const char* var : {"KEEL_SERVER=", "KEEL_TOKEN=", "KEEL_CA=", "KEEL_CERT=", "KEEL_KEY=",
                            "KEEL_CONNECT_WAIT_MS="})
      dropped = dropped || kv.rfind(var, 0) == 0;
    if (!dropped) env.push_back(std::move(kv));
  }
  bool waits = false;
  for (const auto& [k, v] : extra) {
    env.push_back(k + "=" + v);
    waits = waits || k == "KEEL_CONNECT_WAIT_MS";
  }
  // A test of a dead node must fail fast, not wait for it to start.
  if (!waits) env.emplace_back("KEEL_CONNECT_WAIT_MS=0");
  return env;
}

// Runs `keel args...` with keel_environment(env) to the end, `input` (if
// any) on its stdin, else /dev/null; kills it (by its pid) after `timeout`.
inline cli_result run_keel_fed(const std::vector<std::string>& args, const env_list& env,
                               std::chrono::milliseconds timeout,
                               const std::optional<std::string>& input) {
  std::vector<std::string> argv{KEEL_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const pipe_ends out_pipe = cloexec_pipe(), err_pipe = cloexec_pipe();
  pipe_ends in_pipe;
  if (input) {
    in_pipe = cloexec_pipe();
    // Small enough for the pipe's buffer: written whole before the child runs.
    REQUIRE(input->size() < 4096);
    REQUIRE(::write(in_pipe.write, input->data(), input->size()) ==
            static_cast<ssize_t>(input->size()));
    ::close(in_pipe.write);
  }
  const pid_t pid = start_child(std::move(argv), keel_environment(env), out_pipe.write,
                                err_pipe.write, in_pipe.read);
  ::close(out_pipe.write);
  ::close(err_pipe.write);
  if (input) ::close(in_pipe.read);

  cli_result res;
  pollfd fds[2] = {{out_pipe.read, POLLIN, 0}, {err_pipe.read, POLLIN, 0}};
  std::string* sinks[2] = {&res.out, &res.err};
  int open_fds = 2;
  auto until = std::chrono::steady_clock::now() + timeout;
  bool timed_out = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    until - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left)) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  if (timed_out) ::kill(pid, SIGKILL);
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int st = 0;
  ::waitpid(pid, &st, 0);
  res.exit_code = !timed_out && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return res;
}

inline cli_result run_keel(const std::vector<std::string>& args, const env_list& env = {},
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  return run_keel_fed(args, env, timeout, std::nullopt);
}

// Runs `keel --server URL args...` against the node listening on
// 127.0.0.1:`port`.
inline cli_result run_keel(uint16_t port, std::vector<std::string> args,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  args.insert(args.begin(), {"--server", server_url(port)});
  return run_keel(args, {}, timeout);
}

// The same with `input` on the CLI's stdin (keel secret set NAME).
inline cli_result run_keel_with_stdin(uint16_t port, std::vector<std::string> args,
                                      const std::string& input) {
  args.insert(args.begin(), {"--server", server_url(port)});
  return run_keel_fed(args, {}, std::chrono::seconds(30), input);
}

// Starts `keel --server URL args...` for a command that runs until stopped
// (`keel ledger NAME -f`): its stdout and stderr both go to output().
inline child_process start_keel(uint16_t port, const std::vector<std::string>& args) {
  std::vector<std::string> argv{KEEL_CLI_PATH, "--server", server_url(port)};
  argv.insert(argv.end(), args.begin(), args.end());
  return child_process(std::move(argv), keel_environment(), child_process::stderr_to::output);
}

// What a keel run said, for assertion messages.
inline std::string said(const cli_result& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

}  // namespace keel::test::cli
