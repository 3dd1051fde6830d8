#include "actors/exec_sandbox.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <utility>

namespace keel::actors {

namespace {

using steady = std::chrono::steady_clock;

// The child's whole environment. PATH finds the usual tools (argv[0] itself
// is resolved before the fork); HOME points somewhere writable because many
// programs want one; LANG makes text tools agree on UTF-8. Nothing of the
// node's environment (API keys above all) reaches a tool.
constexpr const char* sandbox_env[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", nullptr};
constexpr const char* sandbox_path[] = {"/usr/bin", "/bin"};
// The child starts in HOME, not in the node's working directory (which is
// often its data directory).
constexpr const char* sandbox_cwd = "/tmp";

constexpr std::size_t stderr_cap = 64 << 10;
// After the tool exits and its group is killed, how long to keep reading
// pipes that something outside the group (a process that called setsid)
// may still hold open.
constexpr auto drain_grace = std::chrono::milliseconds(500);

// Exit codes of a child that never reached the program. 127/126 follow the
// shell ("not found" / "found but not executable"); 125 is set-up failure,
// which the parent learns about through the report pipe anyway.
constexpr int exit_not_found = 127;
constexpr int exit_not_executable = 126;
constexpr int exit_setup_failed = 125;

enum class child_step : int { unshare = 1, rlimit, redirect, exec };

// What probing found, including what sandbox_capabilities does not show.
struct probe_result {
  sandbox_capabilities caps;
  bool user_namespace = false;  // unshare(CLONE_NEWUSER) alone works
};

// What a child that failed before execve writes to the report pipe. The
// pipe is close-on-exec, so a successful execve reads as EOF.
struct child_report {
  int step = 0;
  int err = 0;
};

const char* step_name(int step) {
  switch (static_cast<child_step>(step)) {
    case child_step::unshare:
      return "unshare (new user/network namespace)";
    case child_step::rlimit:
      return "setrlimit";
    case child_step::redirect:
      return "redirecting stdin/stdout/stderr";
    case child_step::exec:
      return "execve";
  }
  return "set-up";
}

class fd_handle {
 public:
  fd_handle() = default;
  explicit fd_handle(int fd) : fd_(fd) {}
  fd_handle(fd_handle&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  fd_handle& operator=(fd_handle&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~fd_handle() { reset(); }

  int get() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct pipe_pair {
  fd_handle read;
  fd_handle write;
};

// Close-on-exec on both ends: a concurrent fork in another thread must not
// carry our pipes into its program (which would keep our reads from seeing
// EOF). The child dup2()s its ends onto 0-3, which clears the flag there.
result<pipe_pair> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    return error(code::io_error, std::string("exec sandbox: pipe: ") + std::strerror(errno));
  return pipe_pair{fd_handle(fds[0]), fd_handle(fds[1])};
}

void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// SIGPIPE: a tool that exits without reading all of stdin makes our next
// write raise SIGPIPE, whose default action would kill the node. Setting
// SIG_IGN process-wide would also work but changes every other thread's and
// library's behaviour behind its back; instead SIGPIPE is blocked in this
// thread while we talk to the child (write then fails with EPIPE), and a
// SIGPIPE this produced is consumed before the old mask is restored. The
// signal write() raises is thread-directed, so other threads never see it.
class sigpipe_guard {
 public:
  sigpipe_guard() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_mask_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~sigpipe_guard() {
    sigset_t pending;
    if (!was_pending_ && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      timespec zero{};
      ::sigtimedwait(&pipe_set_, nullptr, &zero);
    }
    ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;

 private:
  sigset_t pipe_set_;
  sigset_t old_mask_;
  bool was_pending_ = false;
};

struct limit_setting {
  int resource;
  rlimit value;
};

// Everything the child needs, prepared before fork(): between fork and
// execve a child of a multi-threaded process may only make
// async-signal-safe calls (another thread may have held the malloc lock at
// the fork), so no allocation, no strings, no locale.
struct child_plan {
  std::vector<std::string> candidates;  // paths to try execve on, in order
  std::vector<char*> argv;
  int unshare_flags = 0;  // CLONE_NEWUSER, maybe with CLONE_NEWNET, or 0
  limit_setting limits[5];
  int limit_count = 0;
  long max_fd = 1024;  // for the close() loop when close_range is missing
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1, report_fd = -1;
};

[[noreturn]] void child_fail(int report_fd, child_step step, int err, int exit_code) {
  child_report r{static_cast<int>(step), err};
  // A short write to a pipe is atomic; nothing to do if it fails.
  ssize_t n = ::write(report_fd, &r, sizeof r);
  (void)n;
  ::_exit(exit_code);
}

void close_from(int first, long max_fd) {
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0u, 0u) == 0) return;
#endif
  for (long fd = first; fd < max_fd; ++fd) ::close(static_cast<int>(fd));
}

// Runs in the forked child; async-signal-safe calls only.
[[noreturn]] void run_child(const child_plan& p) {
  int report = p.report_fd;

  // Own session and process group (pgid == pid), so the parent can kill the
  // tool and everything it started with one kill(-pid).
  ::setsid();

  // A fresh user namespace makes the network namespace possible without
  // privileges; the new network namespace has only a down loopback. Tools
  // allowed the network get the user namespace alone, for RLIMIT_NPROC:
  // the kernel counts processes per (user namespace, uid) and caps a new
  // namespace's total by its creator's limit at unshare time, so unsharing
  // before setrlimit makes max_processes count the sandbox's own processes.
  // Without it the count covers every process and thread of the node's
  // uid, the node's own threads included, and a tool might not fork at all.
  // No uid map is written: inside, the tool sees itself as uid 65534 and
  // has no capabilities on the host; the kernel still checks its file
  // access as the node's user.
  if (p.unshare_flags != 0 && ::unshare(p.unshare_flags) != 0)
    child_fail(report, child_step::unshare, errno, exit_setup_failed);

  // Dispositions set to "ignore" survive execve (a node that ignores
  // SIGPIPE would hand that to every tool, breaking `producer | head`), and
  // so does the signal mask (SIGPIPE is blocked in the parent thread).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  // Move all four ends above 3 first: if the node runs with 0-2 closed, a
  // pipe end may itself be 0, 1 or 2 and a direct dup2 would clobber it.
  int in = ::fcntl(p.stdin_fd, F_DUPFD, 4);
  int out = ::fcntl(p.stdout_fd, F_DUPFD, 4);
  int err = ::fcntl(p.stderr_fd, F_DUPFD, 4);
  int rep = ::fcntl(report, F_DUPFD, 4);
  if (in < 0 || out < 0 || err < 0 || rep < 0)
    child_fail(report, child_step::redirect, errno, exit_setup_failed);
  if (::dup2(rep, 3) < 0) child_fail(report, child_step::redirect, errno, exit_setup_failed);
  report = 3;
  if (::fcntl(3, F_SETFD, FD_CLOEXEC) != 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 ||
      ::dup2(err, 2) < 0)
    child_fail(report, child_step::redirect, errno, exit_setup_failed);
  close_from(4, p.max_fd);

  // After the redirection: with a low RLIMIT_NOFILE, moving the pipe ends
  // above 3 could fail.
  for (int i = 0; i < p.limit_count; ++i)
    if (::setrlimit(p.limits[i].resource, &p.limits[i].value) != 0)
      child_fail(report, child_step::rlimit, errno, exit_setup_failed);

  if (::chdir(sandbox_cwd) != 0) {
    // Staying in the node's directory is acceptable; the tool still runs.
  }

  // Like execvp: keep trying on "not here", remember a more telling error.
  int exec_err = ENOENT;
  for (const auto& path : p.candidates) {
    ::execve(path.c_str(), p.argv.data(), const_cast<char* const*>(sandbox_env));
    if (errno != ENOENT && errno != ENOTDIR) exec_err = errno;
  }
  child_fail(report, child_step::exec, exec_err,
             exec_err == ENOENT ? exit_not_found : exit_not_executable);
}

// The soft limit is `soft`, the hard limit `hard`, both clamped to the
// node's own hard limit (raising a hard limit needs privileges and would
// fail the whole call).
void add_limit(child_plan& p, int resource, rlim_t soft, rlim_t hard) {
  rlimit current{};
  if (::getrlimit(resource, &current) == 0 && current.rlim_max != RLIM_INFINITY) {
    soft = std::min(soft, current.rlim_max);
    hard = std::min(hard, current.rlim_max);
  }
  p.limits[p.limit_count++] = {resource, rlimit{soft, hard}};
}

child_plan make_plan(const std::vector<std::string>& argv, const config::exec_limits& limits,
                     int unshare_flags) {
  child_plan p;
  const std::string& program = argv[0];
  if (program.find('/') != std::string::npos) {
    p.candidates.push_back(program);
  } else {
    for (const char* dir : sandbox_path) p.candidates.push_back(std::string(dir) + "/" + program);
  }
  for (const auto& a : argv) p.argv.push_back(const_cast<char*>(a.c_str()));
  p.argv.push_back(nullptr);
  p.unshare_flags = unshare_flags;

  // CPU: SIGXCPU at the soft limit (a tool may catch it and print what it
  // has), SIGKILL a second later.
  if (limits.cpu_seconds > 0) add_limit(p, RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1);
  if (limits.memory_bytes > 0) add_limit(p, RLIMIT_AS, limits.memory_bytes, limits.memory_bytes);
  if (limits.max_open_files > 0)
    add_limit(p, RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files);
  if (limits.max_processes > 0)
    add_limit(p, RLIMIT_NPROC, limits.max_processes, limits.max_processes);
  // No core files from tools killed by SIGXCPU or crashing under RLIMIT_AS.
  add_limit(p, RLIMIT_CORE, 0, 0);

  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
    p.max_fd = static_cast<long>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  return p;
}

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// True when the child has exited; leaves it a zombie (WNOWAIT) so its pid,
// and with it the process group id, cannot be reused before we kill the
// group.
bool child_has_exited(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Keeps the last `cap` bytes: the end of stderr (the exception, the final
// error line) is what explains a failure.
void append_tail(std::string& s, const char* data, std::size_t n, std::size_t cap) {
  s.append(data, n);
  if (s.size() > 2 * cap) s.erase(0, s.size() - cap);
}

// Runs `flags` in a forked child: whether this kernel, configuration and
// security policy let an unprivileged process make those namespaces. 0 on
// success, else the errno.
int try_unshare(int flags) {
  pid_t pid = ::fork();
  if (pid < 0) return errno;
  if (pid == 0) ::_exit(::unshare(flags) == 0 ? 0 : (errno & 0xff));
  int status = wait_for(pid);
  if (!WIFEXITED(status)) return ECANCELED;
  return WEXITSTATUS(status);
}

probe_result run_probe() {
  probe_result probed;
  sandbox_capabilities& caps = probed.caps;
  caps.rlimits = true;  // lowering one's own limits needs no privilege
  std::vector<std::string> missing;
  if (int err = try_unshare(CLONE_NEWUSER | CLONE_NEWNET); err == 0) {
    caps.network_namespace = true;
    probed.user_namespace = true;
  } else {
    missing.push_back(
        std::string("network namespace: unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: ") +
        std::strerror(err) +
        " (unprivileged user namespaces disabled? see sysctls "
        "kernel.unprivileged_userns_clone, user.max_user_namespaces, "
        "kernel.apparmor_restrict_unprivileged_userns); tools get the node's network");
    probed.user_namespace = try_unshare(CLONE_NEWUSER) == 0;
  }
  if (::geteuid() == 0) {
    missing.push_back(
        "running as root: the kernel does not apply RLIMIT_NPROC (max_processes) to root");
  } else if (!probed.user_namespace) {
    missing.push_back(
        "max_processes: without a user namespace RLIMIT_NPROC counts every process and "
        "thread of the node's user, not just the tool's");
  }
  for (const auto& m : missing) caps.detail += (caps.detail.empty() ? "" : "; ") + m;
  return probed;
}

const probe_result& probed() {
  // A function-local static: initialized once, thread-safely (C++11).
  static const probe_result result = run_probe();
  return result;
}

}  // namespace

const sandbox_capabilities& probe_sandbox() {
  return probed().caps;
}

result<exec_outcome> run_sandboxed(const std::vector<std::string>& argv, const std::string& input,
                                   const config::exec_limits& limits, uint32_t timeout_ms) {
  if (argv.empty() || argv[0].empty())
    return error(code::invalid_argument, "exec sandbox: empty argv");
  const probe_result& found = probed();
  int unshare_flags = 0;
  if (!limits.allow_network && found.caps.network_namespace)
    unshare_flags = CLONE_NEWUSER | CLONE_NEWNET;
  else if (found.user_namespace)
    unshare_flags = CLONE_NEWUSER;
  child_plan plan = make_plan(argv, limits, unshare_flags);

  auto in = make_pipe();
  if (!in) return in.error();
  auto out = make_pipe();
  if (!out) return out.error();
  auto err = make_pipe();
  if (!err) return err.error();
  auto rep = make_pipe();
  if (!rep) return rep.error();
  plan.stdin_fd = in->read.get();
  plan.stdout_fd = out->write.get();
  plan.stderr_fd = err->write.get();
  plan.report_fd = rep->write.get();

  sigpipe_guard no_sigpipe;
  const auto deadline = steady::now() + std::chrono::milliseconds(timeout_ms);
  pid_t pid = ::fork();
  if (pid < 0)
    return error(code::io_error, std::string("exec sandbox: fork: ") + std::strerror(errno));
  if (pid == 0) run_child(plan);

  // The child's ends must close here, or we would never see EOF.
  in->read.reset();
  out->write.reset();
  err->write.reset();
  rep->write.reset();
  fd_handle to_child = std::move(in->write);
  fd_handle from_stdout = std::move(out->read);
  fd_handle from_stderr = std::move(err->read);
  fd_handle from_report = std::move(rep->read);
  set_nonblocking(to_child.get());
  set_nonblocking(from_stdout.get());
  set_nonblocking(from_stderr.get());
  set_nonblocking(from_report.get());
  if (input.empty()) to_child.reset();
  // Readable when the child exits. Without it (kernels before 5.3) the loop
  // polls the child's state every few milliseconds instead.
  fd_handle exit_fd(pidfd_open(pid));

  exec_outcome outcome;
  std::optional<int> wait_status;
  std::optional<child_report> report;
  std::optional<steady::time_point> drain_until;
  std::size_t written = 0;
  char buf[64 << 10];

  // Kills the tool's whole group. Called only while the child is not yet
  // reaped: its pid (a zombie at worst) keeps the group id from being
  // reused by an unrelated process.
  auto kill_group = [pid] { ::kill(-pid, SIGKILL); };

  for (;;) {
    if (!wait_status && child_has_exited(pid)) {
      // The tool is done: whatever it left running in its group goes too,
      // then the pipes drain (briefly, if an escapee still holds them).
      kill_group();
      wait_status = wait_for(pid);
      drain_until = std::min(deadline, steady::now() + drain_grace);
    }
    if (wait_status && !from_stdout.is_open() && !from_stderr.is_open() && !from_report.is_open())
      break;
    auto now = steady::now();
    if (now >= (drain_until ? *drain_until : deadline)) {
      if (!wait_status) {
        outcome.timed_out = true;
        kill_group();
        wait_status = wait_for(pid);
      }
      break;
    }
    auto wait_ms =
        std::chrono::ceil<std::chrono::milliseconds>((drain_until ? *drain_until : deadline) - now)
            .count();
    wait_ms = std::min<int64_t>(wait_ms, 1 << 30);
    if (!exit_fd.is_open() && !wait_status) wait_ms = std::min<int64_t>(wait_ms, 10);

    pollfd fds[5];
    int n = 0;
    auto watch = [&](const fd_handle& fd, short events) {
      if (!fd.is_open()) return -1;
      fds[n] = {fd.get(), events, 0};
      return n++;
    };
    int i_in = watch(to_child, POLLOUT);
    int i_out = watch(from_stdout, POLLIN);
    int i_err = watch(from_stderr, POLLIN);
    int i_rep = watch(from_report, POLLIN);
    if (!wait_status) watch(exit_fd, POLLIN);
    if (::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait_ms)) < 0 && errno != EINTR) {
      kill_group();
      if (!wait_status) wait_for(pid);
      return error(code::io_error, std::string("exec sandbox: poll: ") + std::strerror(errno));
    }
    auto ready = [&](int i) { return i >= 0 && fds[i].revents != 0; };

    if (ready(i_in)) {
      std::size_t chunk = std::min<std::size_t>(input.size() - written, sizeof buf);
      ssize_t w = ::write(to_child.get(), input.data() + written, chunk);
      if (w > 0) written += static_cast<std::size_t>(w);
      // EPIPE: the tool stopped reading; not our failure, its exit code
      // tells. Closing gives the child EOF once all input is in.
      if (written == input.size() || (w < 0 && errno != EAGAIN && errno != EINTR)) to_child.reset();
    }
    if (ready(i_out)) {
      ssize_t r = ::read(from_stdout.get(), buf, sizeof buf);
      if (r > 0) {
        auto got = static_cast<std::size_t>(r);
        std::size_t room =
            limits.max_output_bytes == 0
                ? got
                : static_cast<std::size_t>(limits.max_output_bytes) -
                      std::min<std::size_t>(outcome.stdout_text.size(), limits.max_output_bytes);
        // Past the cap we keep reading and dropping, so the tool never
        // blocks on a full pipe and still gets to exit on its own.
        if (got > room) outcome.output_truncated = true;
        outcome.stdout_text.append(buf, std::min(got, room));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        from_stdout.reset();
      }
    }
    if (ready(i_err)) {
      ssize_t r = ::read(from_stderr.get(), buf, sizeof buf);
      if (r > 0)
        append_tail(outcome.stderr_text, buf, static_cast<std::size_t>(r), stderr_cap);
      else if (r == 0 || (errno != EAGAIN && errno != EINTR))
        from_stderr.reset();
    }
    if (ready(i_rep)) {
      child_report r;
      ssize_t got = ::read(from_report.get(), &r, sizeof r);
      if (got == static_cast<ssize_t>(sizeof r)) report = r;
      if (got >= 0 || (errno != EAGAIN && errno != EINTR)) from_report.reset();
    }
  }

  int status = *wait_status;
  if (WIFEXITED(status)) {
    outcome.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    outcome.signal = WTERMSIG(status);
  }
  if (report && static_cast<child_step>(report->step) != child_step::exec)
    return error(code::io_error, std::string("exec sandbox: ") + step_name(report->step) +
                                     " failed in the child: " + std::strerror(report->err));
  if (report) {
    // The program never ran: say why where a failing tool's reason goes.
    outcome.stderr_text +=
        "exec sandbox: cannot execute " + argv[0] + ": " + std::strerror(report->err) + "\n";
  }
  if (outcome.stderr_text.size() > stderr_cap)
    outcome.stderr_text.erase(0, outcome.stderr_text.size() - stderr_cap);
  return outcome;
}

}  // namespace keel::actors
