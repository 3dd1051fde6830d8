#include "support/keeld_process.hpp"

#include <cerrno>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string_view>

extern char** environ;

namespace keel::test {

keeld_process::keeld_process(std::string binary, std::string data_dir,
                             std::vector<std::string> extra_args)
    : binary_(std::move(binary)), data_dir_(std::move(data_dir)), extra_(std::move(extra_args)) {}

keeld_process::~keeld_process() {
  kill9();
}

bool keeld_process::spawn(const std::vector<std::string>& args_in) {
  kill9();  // a child still running from an earlier start, and its drain
  int fds[2];
  if (::pipe(fds) != 0) return false;
  std::vector<std::string> args = args_in;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Built before fork: this process's environment with env_ on top.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    const bool replaced = std::any_of(env_.begin(), env_.end(), [&](const auto& v) {
      return kv.size() > v.first.size() && kv.starts_with(v.first) && kv[v.first.size()] == '=';
    });
    if (!replaced) env_strings.emplace_back(kv);
  }
  for (const auto& [k, v] : env_) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::optional<uint64_t> nofile = nofile_;
  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    if (nofile) {
      rlimit lim{static_cast<rlim_t>(*nofile), static_cast<rlim_t>(*nofile)};
      if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) std::_Exit(126);
    }
    ::execve(binary_.c_str(), argv.data(), envp.data());
    std::_Exit(127);
  }
  ::close(fds[1]);
  pid_ = pid;
  out_fd_ = fds[0];
  output_.clear();
  port_ = 0;
  return true;
}

void keeld_process::reap_exit() {
  int st = 0;
  if (pid_ > 0 && ::waitpid(pid_, &st, 0) == pid_) {
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    pid_ = -1;
  }
}

int keeld_process::run_to_exit(const std::vector<std::string>& args,
                               std::chrono::milliseconds timeout) {
  std::vector<std::string> full = {binary_};
  full.insert(full.end(), args.begin(), args.end());
  if (!spawn(full)) return -1;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      reap_exit();
      reap_output();
      return exit_code_.value_or(-1);
    }
    std::lock_guard lk(out_mu_);
    output_.append(buf, static_cast<std::size_t>(n));
  }
  kill9();
  return -1;
}

bool keeld_process::start(std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {binary_, "--data", data_dir_, "--http", "127.0.0.1:0"};
  args.insert(args.end(), extra_.begin(), extra_.end());
  // Tests drive the whole API without tokens, unless they set up
  // authentication themselves (or ask for the shipped default).
  auto given = [&](std::string_view flag) {
    return std::find(extra_.begin(), extra_.end(), flag) != extra_.end();
  };
  if (open_api_ && !given("--token") && !given("--token-file") && !given("--anonymous")) {
    args.emplace_back("--anonymous");
    args.emplace_back("admin");
  }
  if (!spawn(args)) return false;
  static const std::regex listening(R"(listening on https?://[^:]+:(\d+))");
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out_fd_, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n <= 0) {  // the child exited
      reap_exit();
      break;
    }
    std::lock_guard lk(out_mu_);
    output_.append(buf, static_cast<std::size_t>(n));
    std::smatch m;
    const std::string seen = output_;
    if (std::regex_search(seen, m, listening)) {
      port_ = static_cast<uint16_t>(std::stoi(m[1]));
      drain_ = std::thread([this, fd = out_fd_] {
        char chunk[4096];
        for (;;) {
          ssize_t got = ::read(fd, chunk, sizeof chunk);
          if (got > 0) {
            std::lock_guard lk(out_mu_);
            output_.append(chunk, static_cast<std::size_t>(got));
          } else if (got < 0 && errno == EINTR) {
            continue;
          } else {
            return;  // the child exited (EOF)
          }
        }
      });
      return true;
    }
  }
  kill9();
  return false;
}

bool keeld_process::alive() {
  if (pid_ <= 0) return false;
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) != pid_) return true;
  exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  pid_ = -1;
  reap_output();
  return false;
}

void keeld_process::kill9() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }
  reap_output();
}

void keeld_process::reap_output() {
  if (drain_.joinable()) drain_.join();
  if (out_fd_ >= 0) {
    ::close(out_fd_);
    out_fd_ = -1;
  }
}

int keeld_process::terminate(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int st = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      reap_output();
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling a child's exit
  }
  kill9();
  return -1;
}

}  // namespace keel::test
