// The seccomp filter every exec tool runs under (exec_sandbox_child.hpp):
// built once with libseccomp, exported as a BPF program, and loaded by the
// tool's process just before execve with a bare prctl (no allocation after
// the fork).
//
// The filter allows by default and refuses, with EPERM, the calls a tool
// never needs and that reach past its sandbox: tracing and reading other
// processes, mounting and changing roots, kernel modules and kexec,
// keyrings, bpf and perf, userfaultfd and io_uring (which bypass
// filtering), new namespaces, clocks, swap, reboot and the like. clone3 is
// refused with ENOSYS, so the C library falls back to clone, whose flags a
// filter can see (clone3 passes them in memory).

#include "effects/exec_sandbox_child.hpp"

#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace keel::actors::sandbox_detail {

namespace {

constexpr const char* refused_calls[] = {
    // Other processes' memory and state.
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    // The file system's shape.
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    // The kernel itself.
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "lookup_dcookie", "fanotify_init", "iopl", "ioperm", "syslog", "acct",
    "quotactl", "quotactl_fd", "nfsservctl", "vhangup", "reboot", "swapon", "swapoff",
    "sethostname", "setdomainname",
    // Keyrings: shared across the host's processes of a user.
    "add_key", "request_key", "keyctl",
    // Calls that bypass or weaken filtering.
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    // Namespaces.
    "unshare", "setns",
    // Clocks.
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex"};

constexpr int namespace_flags[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
                                   CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};

struct ctx_deleter {
  void operator()(scmp_filter_ctx c) const { seccomp_release(c); }
};

struct built_filter {
  std::vector<sock_filter> code;
  sock_fprog prog{};
  std::string why;  // empty when built
};

built_filter build() {
  built_filter f;
  std::unique_ptr<void, ctx_deleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) {
    f.why = "seccomp_init failed";
    return f;
  }
  // A call made through another architecture's ABI (32-bit int 0x80 on
  // x86-64) would dodge the rules: such a process is killed.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  auto refuse = [&](const char* name, uint32_t action) {
    int nr = seccomp_syscall_resolve_name(name);
    // A call this architecture does not have needs no rule.
    if (nr == __NR_SCMP_ERROR) return 0;
    return seccomp_rule_add(ctx.get(), action, nr, 0);
  };
  for (const char* name : refused_calls)
    if (int rc = refuse(name, SCMP_ACT_ERRNO(EPERM)); rc != 0) {
      f.why = std::string("seccomp rule for ") + name + ": " + std::strerror(-rc);
      return f;
    }
  if (int rc = refuse("clone3", SCMP_ACT_ERRNO(ENOSYS)); rc != 0) {
    f.why = std::string("seccomp rule for clone3: ") + std::strerror(-rc);
    return f;
  }
  for (int flag : namespace_flags) {
    auto mask = static_cast<scmp_datum_t>(flag);
    if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, mask, mask));
        rc != 0) {
      f.why = std::string("seccomp rule for clone flags: ") + std::strerror(-rc);
      return f;
    }
  }
  // libseccomp 2.5 exports to a descriptor only: an anonymous memory file,
  // read back as the program.
  int fd = ::memfd_create("keel-seccomp", MFD_CLOEXEC);
  if (fd < 0) {
    f.why = std::string("memfd_create: ") + std::strerror(errno);
    return f;
  }
  if (int rc = seccomp_export_bpf(ctx.get(), fd); rc != 0) {
    ::close(fd);
    f.why = std::string("seccomp_export_bpf: ") + std::strerror(-rc);
    return f;
  }
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0) {
    ::close(fd);
    f.why = "seccomp_export_bpf wrote no program";
    return f;
  }
  f.code.resize(static_cast<std::size_t>(size) / sizeof(sock_filter));
  ssize_t got = ::pread(fd, f.code.data(), static_cast<std::size_t>(size), 0);
  ::close(fd);
  if (got != size) {
    f.code.clear();
    f.why = "reading the exported seccomp program failed";
    return f;
  }
  f.prog.len = static_cast<unsigned short>(f.code.size());
  f.prog.filter = f.code.data();
  return f;
}

}  // namespace

const sock_fprog* tool_filter(std::string* why) {
  static const built_filter filter = build();
  if (!filter.why.empty()) {
    if (why) *why = filter.why;
    return nullptr;
  }
  return &filter.prog;
}

}  // namespace keel::actors::sandbox_detail
