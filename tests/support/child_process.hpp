#pragma once
// Helper programs started by a test (a worker, the keel CLI): stdin from
// /dev/null, stdout read by the test, stopped with SIGKILL by their PID
// (never by name). The kernel also kills a child when the test thread that
// started it dies (PR_SET_PDEATHSIG), so a failed test leaves nothing
// behind. Uses doctest assertions: include it from test files only.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

extern char** environ;

namespace keel::test {

// This process's environment, as NAME=value strings.
inline std::vector<std::string> this_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  return env;
}

// A pipe whose two ends are closed on exec: a child keeps only the copies
// it takes with dup2, so its output ends when it exits.
struct pipe_ends {
  int read = -1;
  int write = -1;
};
inline pipe_ends cloexec_pipe() {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  return {fds[0], fds[1]};
}

// Forks and execs argv[0] (an absolute path) with the environment `env`,
// stdin from `in_fd` (-1: /dev/null), stdout to `out_fd` and stderr to
// `err_fd` (-1: the test's own). Returns its PID; the caller closes its
// copies of the fds.
inline pid_t start_child(std::vector<std::string> argv, std::vector<std::string> env, int out_fd,
                         int err_fd, int in_fd = -1) {
  // Built before fork: the child only calls async-signal-safe functions.
  std::vector<char*> args, envp;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(in_fd >= 0 ? in_fd : ::open("/dev/null", O_RDONLY | O_CLOEXEC), STDIN_FILENO);
    if (out_fd >= 0) ::dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0) ::dup2(err_fd, STDERR_FILENO);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

class child_process {
 public:
  // Where the child's stderr goes: the test's own, or into output().
  enum class stderr_to { test, output };

  // Starts argv[0] (an absolute path) with these arguments and environment.
  explicit child_process(std::vector<std::string> argv,
                         std::vector<std::string> env = this_environment(),
                         stderr_to err = stderr_to::test) {
    const pipe_ends out = cloexec_pipe();
    pid_ = start_child(std::move(argv), std::move(env), out.write,
                       err == stderr_to::output ? out.write : -1);
    ::close(out.write);
    out_fd_ = out.read;
  }
  ~child_process() {
    kill9();
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  // What the child printed so far, as far as the waits below have read.
  const std::string& output() const { return out_; }

  // Reads what the child prints until `pred(output())` holds or `timeout`
  // passes (or the child closed its output); returns whether it held.
  bool wait_output(const std::function<bool(const std::string&)>& pred,
                   std::chrono::milliseconds timeout) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (!pred(out_)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      until - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0 || out_fd_ < 0) return false;
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char chunk[4096];
      ssize_t n = ::read(out_fd_, chunk, sizeof chunk);
      if (n <= 0) {
        ::close(out_fd_);
        out_fd_ = -1;
        return pred(out_);
      }
      out_.append(chunk, static_cast<std::size_t>(n));
    }
    return true;
  }

  // The first line the child printed, or nullopt when none came within
  // `timeout` (or it exited without one).
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const bool got = wait_output(
        [](const std::string& out) { return out.find('\n') != std::string::npos; }, timeout);
    if (!got) return std::nullopt;
    return out_.substr(0, out_.find('\n'));
  }

  // Reads the child's output to its end and reaps it: its exit code, or
  // nullopt when it had not ended within `timeout` (it then runs on) or a
  // signal ended it.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    wait_output([](const std::string&) { return false; }, timeout);
    if (out_fd_ >= 0 || pid_ <= 0) return std::nullopt;
    int st = 0;
    if (::waitpid(pid_, &st, 0) != pid_) return std::nullopt;
    pid_ = -1;
    if (!WIFEXITED(st)) return std::nullopt;
    return WEXITSTATUS(st);
  }

  // SIGKILL and reap; returns whether the child was still running. A no-op
  // once done.
  bool kill9() {
    if (pid_ <= 0) return false;
    int st = 0;
    const bool running = ::waitpid(pid_, &st, WNOHANG) == 0;
    if (running) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
    }
    pid_ = -1;
    return running;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string out_;
};

}  // namespace keel::test
