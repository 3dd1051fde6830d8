// The sandbox's children: the init of the namespace path and the tool
// itself (see exec_sandbox_child.hpp), and the start-up probe. Everything
// that runs after a fork is async-signal-safe.

#include "effects/exec_sandbox_child.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>
#include <utility>

namespace keel::actors::sandbox_detail {

namespace {

// The child's environment, before the tool's own env (sandbox_options::env)
// is added. PATH finds the usual tools (argv[0] itself is resolved before
// the fork); HOME points somewhere writable because many programs want one;
// LANG makes text tools agree on UTF-8. Nothing of the node's environment
// (API keys above all) reaches a tool.
constexpr std::pair<const char*, const char*> sandbox_env[] = {
    {"PATH", "/usr/bin:/bin"}, {"HOME", "/tmp"}, {"LANG", "C.UTF-8"}};
constexpr const char* sandbox_path[] = {"/usr/bin", "/bin"};
// The child starts in HOME, not in the node's working directory (which is
// often its data directory).
constexpr const char* sandbox_cwd = "/tmp";

[[noreturn]] void child_fail(int report_fd, child_step step, int err, int exit_code) {
  child_report r{static_cast<int>(step), err};
  // A short write to a pipe is atomic; nothing to do if it fails.
  ssize_t n = ::write(report_fd, &r, sizeof r);
  (void)n;
  ::_exit(exit_code);
}

void close_from_to(int first, int last, long max_fd) {
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), static_cast<unsigned>(last), 0u) ==
      0)
    return;
#endif
  for (long fd = first; fd <= last && fd < max_fd; ++fd) ::close(static_cast<int>(fd));
}

void close_from(int first, long max_fd) {
  close_from_to(first, ~0u >> 1, max_fd);
}

// Closes every descriptor but the `n` in `keep` (the node's files,
// sockets and other calls' pipes must not live on in the init).
void close_all_but(int* keep, int n, long max_fd) {
  std::sort(keep, keep + n);
  int from = 0;
  for (int i = 0; i < n; ++i) {
    if (keep[i] > from) close_from_to(from, keep[i] - 1, max_fd);
    from = keep[i] + 1;
  }
  close_from(from, max_fd);
}

// Writes `text` to `path` in one write; 0 on success, else the errno.
int write_file(const char* path, const char* text, std::size_t n) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t w = ::write(fd, text, n);
  int err = w == static_cast<ssize_t>(n) ? 0 : (w < 0 ? errno : EIO);
  ::close(fd);
  return err;
}

// In a new user namespace: maps the ids as `uid_map`/`gid_map` say (none
// when empty). 0 on success, else the errno.
int map_own_ids(const std::string& uid_map, const std::string& gid_map) {
  if (uid_map.empty()) return 0;
  constexpr char deny[] = "deny";
  int err = write_file("/proc/self/setgroups", deny, sizeof deny - 1);
  if (err == 0) err = write_file("/proc/self/uid_map", uid_map.data(), uid_map.size());
  if (err == 0) err = write_file("/proc/self/gid_map", gid_map.data(), gid_map.size());
  return err;
}

// "U U 1\n" for the node's own uid or gid.
std::string identity_map(unsigned id) {
  return std::to_string(id) + " " + std::to_string(id) + " 1\n";
}

// fork() without glibc's fork handlers: in a child of a multi-threaded
// process they would take locks another thread may have held at the fork.
pid_t raw_fork(int flags) {
  return static_cast<pid_t>(::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, 0));
}

// The tool, after the fork (and, on the namespace path, inside them).
[[noreturn]] void run_tool(const child_plan& p) {
  int report = p.report_fd;

  // Own session and process group (pgid == pid), so the parent can kill the
  // tool and everything it started with one kill(-pid) on the process-group
  // path; harmless inside a PID namespace.
  ::setsid();
  // On the process-group path the tool ends when the node does (inside a
  // namespace, its init's end does that).
  if (p.clone_flags == 0) ::prctl(PR_SET_PDEATHSIG, SIGKILL);

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
  // access as the node's user. (The namespace path made them all already.)
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

  // A node running as root hands its tools an unprivileged identity: no
  // capabilities, root's files out of reach, and max_processes applies
  // (the kernel exempts root from RLIMIT_NPROC).
  if (p.uid >= 0) {
    const auto gid = static_cast<gid_t>(p.gid);
    const auto uid = static_cast<uid_t>(p.uid);
    // The pipes were made by root (mode 0600): the tool must be able to
    // reopen them (/dev/stdin is /proc/self/fd/0).
    for (int fd = 0; fd <= 2; ++fd)
      if (::fchown(fd, uid, gid) != 0)
        child_fail(report, child_step::identity, errno, exit_setup_failed);
    // Raw system calls, not glibc's wrappers: in a multi-threaded process
    // those make every thread change identity (a signal to each, under a
    // lock of glibc's thread list), and a child forked while another
    // thread held that lock would wait on it forever.
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, gid, gid, gid) != 0 ||
        ::syscall(SYS_setresuid, uid, uid, uid) != 0)
      child_fail(report, child_step::identity, errno, exit_setup_failed);
  }
  // Nothing the tool runs gains privileges (setuid binaries, file
  // capabilities); the filter needs it too.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    child_fail(report, child_step::seccomp, errno, exit_setup_failed);
  if (p.filter && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p.filter) != 0)
    child_fail(report, child_step::seccomp, errno, exit_setup_failed);

  // Like execvp: keep trying on "not here", remember a more telling error.
  int exec_err = ENOENT;
  for (const auto& path : p.candidates) {
    ::execve(path.c_str(), p.argv.data(), p.envp.data());
    if (errno != ENOENT && errno != ENOTDIR) exec_err = errno;
  }
  child_fail(report, child_step::exec, exec_err,
             exec_err == ENOENT ? exit_not_found : exit_not_executable);
}

// PID 1 of the call's namespaces: sets up the view, starts the tool as
// PID 2, reports how it ended, and exits, which ends the namespace.
[[noreturn]] void run_init(const child_plan& p) {
  const int report = p.report_fd;
  // A node that dies takes its calls with it: the kernel kills the init
  // (and so the namespace) when the thread that started it goes. (From
  // inside the namespace there is no way to see whether that happened
  // before this line; a node killed in that instant leaves the call to run
  // out on its own.)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The init is a copy of the node: its /proc/1/cmdline and environ would
  // show the node's (a --token among them). Blank both, and let nothing
  // attach to it or read its memory.
  for (int i = 0; i < 2; ++i)
    if (p.wipe_from[i] && p.wipe_to[i] > p.wipe_from[i])
      std::memset(p.wipe_from[i], 0, static_cast<std::size_t>(p.wipe_to[i] - p.wipe_from[i]));
  // The node's ids map to themselves: files it creates in the view get an
  // owner, and the tool still runs as the node's (unprivileged) uid. (While
  // the init is still dumpable: /proc/self is then its own to write.)
  if (int err = map_own_ids(p.uid_map, p.gid_map); err != 0)
    child_fail(report, child_step::view, err, exit_setup_failed);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  int keep[] = {p.stdin_fd, p.stdout_fd, p.stderr_fd, report};
  close_all_but(keep, 4, p.max_fd);
  if (p.clone_flags & CLONE_NEWNS) {
    // Nothing mounted here may reach the node's view.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      child_fail(report, child_step::mount, errno, exit_setup_failed);
    if (p.view.enabled) {
      if (int err = enter_view(p.view); err != 0)
        child_fail(report, child_step::view, err, exit_setup_failed);
    }
    if (p.private_proc && !p.view.enabled &&
        ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
      child_fail(report, child_step::mount, errno, exit_setup_failed);
    for (const auto& path : p.hidden_dirs)
      if (::mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                  "size=4k,mode=000") != 0 &&
          errno != ENOENT)
        child_fail(report, child_step::mount, errno, exit_setup_failed);
    for (const auto& path : p.hidden_files)
      if (::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr) != 0 && errno != ENOENT)
        child_fail(report, child_step::mount, errno, exit_setup_failed);
  }
  const pid_t tool = raw_fork(0);
  if (tool < 0) child_fail(report, child_step::spawn, errno, exit_setup_failed);
  if (tool == 0) run_tool(p);
  // The tool's pipes must end when the tool (and what it started) does:
  // the init keeps only the report pipe.
  ::close(p.stdin_fd);
  ::close(p.stdout_fd);
  ::close(p.stderr_fd);
  for (;;) {
    int st = 0;
    const pid_t done = ::waitpid(-1, &st, __WALL);
    if (done == tool) {
      child_report r{static_cast<int>(child_step::tool_ended), st};
      ssize_t n = ::write(report, &r, sizeof r);
      (void)n;
      ::_exit(0);  // and with PID 1, everything left in the namespace
    }
    if (done < 0 && errno != EINTR) ::_exit(exit_setup_failed);
  }
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

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Whether a child made with `flags` (and, with mount_proc, mounting a
// fresh /proc in it; with a view, entering that first) works here. 0 on
// success, else the errno.
int try_namespaces(int flags, bool mount_proc, const view_plan* view = nullptr) {
  const bool own_user = (flags & CLONE_NEWUSER) != 0;
  const std::string uid_map = own_user ? identity_map(::geteuid()) : std::string();
  const std::string gid_map = own_user ? identity_map(::getegid()) : std::string();
  pid_t pid = raw_fork(flags);
  if (pid < 0) return errno;
  if (pid == 0) {
    if (int err = map_own_ids(uid_map, gid_map); err != 0) ::_exit(err & 0xff);
    if (mount_proc) {
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(errno & 0xff);
      if (view) {
        if (int err = enter_view(*view); err != 0) ::_exit(err & 0xff);
      } else if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
        ::_exit(errno & 0xff);
      }
    }
    ::_exit(0);
  }
  int status = wait_for(pid);
  if (!WIFEXITED(status)) return ECANCELED;
  return WEXITSTATUS(status);
}

}  // namespace

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
    case child_step::mount:
      return "mounting the sandbox's /proc or covering a hidden path";
    case child_step::spawn:
      return "starting the tool inside the namespace";
    case child_step::view:
      return "building the tool's file system view";
    case child_step::identity:
      return "switching to the tool's uid";
    case child_step::seccomp:
      return "no_new_privs or the seccomp filter";
    case child_step::tool_ended:
      return "tool ended";
  }
  return "set-up";
}

pid_t start_children(const child_plan& p) {
  if (p.clone_flags == 0) {
    pid_t pid = ::fork();
    if (pid == 0) run_tool(p);
    return pid;
  }
  pid_t pid = raw_fork(p.clone_flags);
  if (pid == 0) run_init(p);
  return pid;
}

}  // namespace keel::actors::sandbox_detail

namespace keel::actors {

using namespace sandbox_detail;

namespace {

// What probing found, including what sandbox_capabilities does not show.
struct probe_result {
  sandbox_capabilities caps;
  bool user_namespace = false;  // a new user namespace works
  int namespace_flags = 0;      // the init's clone flags, without the network one
  const sock_fprog* filter = nullptr;
  // The node's argv and environment strings (from /proc/self/stat).
  char* wipe_from[2] = {nullptr, nullptr};
  char* wipe_to[2] = {nullptr, nullptr};
};

// Whether a child can set no_new_privs and load the filter.
int try_filter(const sock_fprog* filter) {
  pid_t pid = raw_fork(0);
  if (pid < 0) return errno;
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(errno & 0xff);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, filter) != 0) ::_exit(errno & 0xff);
    ::_exit(0);
  }
  int status = wait_for(pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : ECANCELED;
}

// Fields 48-51 of /proc/self/stat: where the kernel reads cmdline and
// environ from.
void find_args(probe_result& probed) {
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream fields(text.substr(close + 2));
  std::vector<std::string> f;
  for (std::string x; fields >> x;) f.push_back(x);
  // f[0] is field 3 (state); field n is f[n - 3].
  if (f.size() < 49) return;
  auto addr = [&](int field) {
    return reinterpret_cast<char*>(static_cast<uintptr_t>(std::stoull(f[field - 3])));
  };
  probed.wipe_from[0] = addr(48);
  probed.wipe_to[0] = addr(49);
  probed.wipe_from[1] = addr(50);
  probed.wipe_to[1] = addr(51);
}

probe_result run_probe() {
  probe_result probed;
  sandbox_capabilities& caps = probed.caps;
  caps.rlimits = true;  // lowering one's own limits needs no privilege
  const bool root = ::geteuid() == 0;
  caps.separate_uid = root;
  std::vector<std::string> missing;
  probed.user_namespace = try_namespaces(CLONE_NEWUSER, false) == 0;
  // Root makes namespaces without a user namespace, and must: a uid
  // switch inside an unmapped user namespace is impossible.
  const int user = probed.user_namespace && !root ? CLONE_NEWUSER : 0;
  if (int err = try_namespaces(user | CLONE_NEWNET, false); err == 0) {
    caps.network_namespace = true;
  } else {
    missing.push_back(
        std::string("network namespace: a new one failed: ") + std::strerror(err) +
        " (unprivileged user namespaces disabled? see sysctls "
        "kernel.unprivileged_userns_clone, user.max_user_namespaces, "
        "kernel.apparmor_restrict_unprivileged_userns); tools get the node's network");
  }
  const int ns = user | CLONE_NEWPID | CLONE_NEWNS;
  if (int err = try_namespaces(ns, false); err == 0) {
    caps.pid_namespace = true;
    probed.namespace_flags = ns;
    if (int perr = try_namespaces(ns, true); perr == 0)
      caps.private_proc = true;
    else
      missing.push_back(std::string("private /proc: mounting one failed: ") + std::strerror(perr) +
                        "; tools see every process's /proc entry");
    const view_plan view = plan_view({});
    if (int verr = try_namespaces(ns, caps.private_proc, &view); verr == 0 && caps.private_proc)
      caps.system_view = true;
    else
      missing.push_back(std::string("file system view: building one failed: ") +
                        std::strerror(verr) +
                        "; tools see the host's files, but for the node's data directory");
  } else {
    missing.push_back(std::string("PID namespace: a new one failed: ") + std::strerror(err) +
                      "; tools run in a process group of their own, can signal the node's "
                      "user's processes, and a process that leaves the group outlives the call");
  }
  std::string why;
  probed.filter = tool_filter(&why);
  if (probed.filter) {
    if (int err = try_filter(probed.filter); err == 0)
      caps.seccomp = true;
    else
      why = std::string("loading it failed: ") + std::strerror(err);
  }
  if (!caps.seccomp) {
    probed.filter = nullptr;
    missing.push_back("seccomp filter: " + why + "; tools may call ptrace, mount, bpf, ...");
  }
  if (!root && !probed.user_namespace)
    missing.push_back(
        "max_processes: without a user namespace RLIMIT_NPROC counts every process and "
        "thread of the node's user, not just the tool's");
  missing.push_back(
      "cgroups: not used; a tool's memory, CPU time and processes are bounded by rlimits");
  find_args(probed);
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

namespace sandbox_detail {

child_plan make_plan(const std::vector<std::string>& argv, const config::exec_limits& limits,
                     const sandbox_options& opts) {
  const probe_result& found = probed();
  child_plan p;
  const std::string& program = argv[0];
  if (program.find('/') != std::string::npos) {
    p.candidates.push_back(program);
  } else {
    for (const char* dir : sandbox_path) p.candidates.push_back(std::string(dir) + "/" + program);
  }
  for (const auto& a : argv) p.argv.push_back(const_cast<char*>(a.c_str()));
  p.argv.push_back(nullptr);
  for (const auto& [name, value] : sandbox_env) {
    auto own = opts.env.find(name);
    const bool replace = own != opts.env.end() && std::string_view(name) != "PATH";
    p.env_strings.push_back(std::string(name) + "=" + (replace ? own->second : value));
  }
  for (const auto& [name, value] : opts.env) {
    const bool fixed = std::any_of(std::begin(sandbox_env), std::end(sandbox_env),
                                   [&](const auto& kv) { return name == kv.first; });
    if (!fixed) p.env_strings.push_back(name + "=" + value);
  }
  // After every push_back: the strings no longer move.
  for (auto& e : p.env_strings) p.envp.push_back(e.data());
  p.envp.push_back(nullptr);
  const bool cut_network = !limits.allow_network && found.caps.network_namespace;
  const bool root = found.caps.separate_uid;
  if (found.caps.pid_namespace) {
    p.clone_flags = found.namespace_flags | (cut_network ? CLONE_NEWNET : 0);
    p.private_proc = found.caps.private_proc;
    std::error_code ec;
    for (const auto& path : opts.hidden)
      (std::filesystem::is_directory(path, ec) ? p.hidden_dirs : p.hidden_files).push_back(path);
    if (found.caps.system_view) p.view = plan_view(opts);
  } else if (cut_network) {
    p.unshare_flags = (root ? 0 : CLONE_NEWUSER) | CLONE_NEWNET;
  } else if (found.user_namespace && !root) {
    p.unshare_flags = CLONE_NEWUSER;
  }
  if (root) {
    p.uid = opts.tool_uid;
    p.gid = opts.tool_gid;
  }
  if (p.clone_flags & CLONE_NEWUSER) {
    p.uid_map = identity_map(::geteuid());
    p.gid_map = identity_map(::getegid());
  }
  p.filter = found.filter;
  for (int i = 0; i < 2; ++i) {
    p.wipe_from[i] = found.wipe_from[i];
    p.wipe_to[i] = found.wipe_to[i];
  }

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

}  // namespace sandbox_detail

}  // namespace keel::actors
