#pragma once
// A real keeld child process for integration tests: started with
// --http 127.0.0.1:0, its port read from the line it prints once it
// listens; stopped with SIGKILL or SIGTERM by PID (never by name).

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace keel::test {

class keeld_process {
 public:
  // REQUIRES: binary is the keeld executable.
  keeld_process(std::string binary, std::string data_dir, std::vector<std::string> extra_args = {});
  ~keeld_process();  // SIGKILLs a child still running
  keeld_process(const keeld_process&) = delete;
  keeld_process& operator=(const keeld_process&) = delete;

  // The child's RLIMIT_NOFILE (soft and hard), set before it starts.
  void set_open_files_limit(uint64_t n) { nofile_ = n; }
  // start() lets requests without a token do everything (--anonymous
  // admin) unless the extra arguments configure authentication; after
  // use_default_auth() it starts keeld with its shipped defaults instead.
  void use_default_auth() { open_api_ = false; }
  // A variable added to (or replaced in) the environment the child gets
  // from this process, for its next start.
  void set_env(std::string name, std::string value) {
    env_.emplace_back(std::move(name), std::move(value));
  }

  // Starts the child and waits (up to `timeout`) for its "listening" line.
  // Returns false if it exited or did not listen in time; output() says why
  // and exit_code() how it ended.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Runs the child with `args` in place of the usual arguments (--data and
  // --http are not added) until it exits; returns its exit code (-1 when
  // killed or past `timeout`). For one-shot modes such as --salvage.
  int run_to_exit(const std::vector<std::string>& args,
                  std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // How the last child that ended by itself ended: its exit code, or -1
  // when a signal ended it; nullopt while none has.
  std::optional<int> exit_code() const { return exit_code_; }
  // SIGKILL and reap.
  void kill9();
  // SIGTERM and wait up to `timeout`; returns the exit status (-1 on timeout
  // or signal death).
  int terminate(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  bool running() const { return pid_ > 0; }
  // Whether the child is still there (not exited, not killed); reaps it
  // and records its exit code when it is gone.
  bool alive();
  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  // Everything the child printed so far (stdout and stderr).
  std::string output() const {
    std::lock_guard lk(out_mu_);
    return output_;
  }

 private:
  std::string binary_;
  bool open_api_ = true;
  std::string data_dir_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  std::optional<uint64_t> nofile_;
  std::vector<std::pair<std::string, std::string>> env_;
  std::optional<int> exit_code_;
  // Forks and execs binary_ with `args`, output to a pipe; false on failure.
  bool spawn(const std::vector<std::string>& args);
  void reap_output();  // after the child is gone: join the drain, close the pipe
  void reap_exit();    // waits for a child that is exiting and records how it ended

  int out_fd_ = -1;
  uint16_t port_ = 0;
  // Once the child listens, a thread reads its output until it exits, so a
  // chatty child never blocks on a full pipe.
  std::thread drain_;
  mutable std::mutex out_mu_;
  std::string output_;
};

}  // namespace keel::test
