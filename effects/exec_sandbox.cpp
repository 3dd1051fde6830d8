#include "effects/exec_sandbox.hpp"
#include "effects/exec_sandbox_child.hpp"

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

using namespace sandbox_detail;

constexpr std::size_t stderr_cap = 64 << 10;
// After the tool exits and its group is killed, how long to keep reading
// pipes that something outside the group (a process that called setsid)
// may still hold open. (In a PID namespace nothing outlives the call.)
constexpr auto drain_grace = std::chrono::milliseconds(500);

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

}  // namespace

result<exec_outcome> run_sandboxed(const std::vector<std::string>& argv, const std::string& input,
                                   const config::exec_limits& limits, uint32_t timeout_ms,
                                   const sandbox_options& opts, const abort_signal* abort) {
  if (argv.empty() || argv[0].empty())
    return error(code::invalid_argument, "exec sandbox: empty argv");
  // An abort wakes the wait loop's poll() through this pipe, at once; the
  // hook is destroyed (below, in reverse order) before the pipe closes.
  fd_handle wake_read, wake_write;
  abort_signal::hook wake_on_abort;
  if (abort != nullptr) {
    auto wake = make_pipe();
    if (!wake) return wake.error();
    wake_read = std::move(wake->read);
    wake_write = std::move(wake->write);
    set_nonblocking(wake_read.get());
    set_nonblocking(wake_write.get());
    wake_on_abort = abort->on_raise([fd = wake_write.get()] {
      const char byte = 1;
      // A full pipe already holds a wake-up: nothing is lost.
      [[maybe_unused]] ssize_t n = ::write(fd, &byte, 1);
    });
  }
  auto aborted = [abort] { return abort != nullptr && abort->raised(); };
  if (aborted()) {
    exec_outcome never;
    never.aborted = true;
    never.started = false;
    return never;
  }
  child_plan plan = make_plan(argv, limits, opts);
  // In a PID namespace, ending its init ends every process of the call.
  const bool in_namespace = plan.clone_flags != 0;

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
  pid_t pid = start_children(plan);
  if (pid < 0)
    return error(code::io_error, std::string("exec sandbox: fork: ") + std::strerror(errno));

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
  std::optional<child_report> report;  // a set-up failure, if any
  std::optional<int> tool_status;      // the init's report of how the tool ended
  std::optional<steady::time_point> drain_until;
  std::size_t written = 0;
  char buf[64 << 10];

  // Kills everything the call started: the init, and with it its PID
  // namespace; or the tool's whole group. Called only while the child is
  // not yet reaped: its pid (a zombie at worst) cannot be reused by an
  // unrelated process meanwhile.
  auto kill_group = [pid, in_namespace] { ::kill(in_namespace ? pid : -pid, SIGKILL); };

  for (;;) {
    if (aborted()) {
      // Whatever the tool got done may stand; what it is still doing ends
      // now. Even a tool that already exited and whose pipes still drain
      // counts as aborted: its output may be cut.
      outcome.aborted = true;
      if (!wait_status) {
        kill_group();
        wait_status = wait_for(pid);
      }
      break;
    }
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

    pollfd fds[6];
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
    watch(wake_read, POLLIN);  // the loop's first check sees the abort
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
      // Reports are written whole (a pipe write this small is atomic): a
      // set-up failure, and on the namespace path the init's tool_ended.
      child_report r;
      ssize_t got = ::read(from_report.get(), &r, sizeof r);
      if (got == static_cast<ssize_t>(sizeof r)) {
        if (static_cast<child_step>(r.step) == child_step::tool_ended)
          tool_status = r.err;
        else if (!report)
          report = r;
      } else if (got >= 0 || (errno != EAGAIN && errno != EINTR)) {
        from_report.reset();
      }
    }
  }

  // On the namespace path the init exits 0 once the tool has ended: the
  // tool's own end is what it reported.
  int status = tool_status && !outcome.timed_out ? *tool_status : *wait_status;
  if (WIFEXITED(status)) {
    outcome.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    outcome.signal = WTERMSIG(status);
  }
  if (report && static_cast<child_step>(report->step) != child_step::exec)
    return error(code::io_error, std::string("exec sandbox: ") + step_name(report->step) +
                                     " failed in the child: " + std::strerror(report->err));
  if (report) {
    outcome.started = false;
    // The program never ran: say why where a failing tool's reason goes.
    outcome.stderr_text +=
        "exec sandbox: cannot execute " + argv[0] + ": " + std::strerror(report->err) + "\n";
  }
  if (outcome.stderr_text.size() > stderr_cap)
    outcome.stderr_text.erase(0, outcome.stderr_text.size() - stderr_cap);
  return outcome;
}

}  // namespace keel::actors
