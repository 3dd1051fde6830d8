// The tool's file system view (exec_sandbox_child.hpp): planned in the
// node, built by the call's init inside its mount namespace. Everything
// after the fork is async-signal-safe: raw system calls on fixed buffers.

#include "effects/exec_sandbox_child.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

namespace keel::actors::sandbox_detail {

namespace {

// System directories shown read-only when they exist (a symlink, as /bin
// is on merged-/usr systems, is recreated as one).
constexpr const char* system_dirs[] = {"/usr",   "/bin",    "/sbin", "/lib", "/lib32",
                                       "/lib64", "/libx32", "/etc",  "/opt"};
// Devices a program may expect; bound from the host's /dev.
constexpr const char* devices[] = {"/dev/null",   "/dev/zero",    "/dev/full",
                                   "/dev/random", "/dev/urandom", "/dev/tty"};
// The private /tmp, the tool's work directory: tmpfs pages count as the
// call's memory, and this bounds them.
constexpr uint64_t tmp_bytes = 64ull << 20;
// Where the new root is assembled before pivot_root. Mounting over it
// hides the host's /tmp from this namespace only; granted paths below it
// are opened before that and bound from their descriptors.
constexpr const char* staging = "/tmp";
// Mounts one call can hold (the system's, the granted paths, devices).
constexpr std::size_t max_mounts = 64;

// An absolute path under the staging root, in a fixed buffer.
class staged_path {
 public:
  explicit staged_path(const std::string& path) { set(path.c_str()); }
  explicit staged_path(const char* path) { set(path); }
  const char* c_str() const { return buf_; }
  bool ok() const { return ok_; }

 private:
  void set(const char* path) {
    std::size_t a = std::strlen(staging), b = std::strlen(path);
    ok_ = a + b < sizeof buf_;
    if (!ok_) return;
    std::memcpy(buf_, staging, a);
    std::memcpy(buf_ + a, path, b + 1);
  }
  char buf_[4096];
  bool ok_ = false;
};

// Writes `n` in decimal and a NUL at `out` (room for 21 bytes).
void put_decimal(char* out, uint64_t n) {
  char digits[20];
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n > 0);
  while (count > 0) *out++ = digits[--count];
  *out = '\0';
}

// "/proc/self/fd/N" for a descriptor, in `out` (at least 40 bytes).
void fd_path(int fd, char* out) {
  constexpr const char prefix[] = "/proc/self/fd/";
  std::memcpy(out, prefix, sizeof prefix - 1);
  put_decimal(out + sizeof prefix - 1, static_cast<uint64_t>(fd));
}

// `attrs` (MOUNT_ATTR_*) on a bind mount and everything under it; kernels
// without mount_setattr (before 5.12) leave the mount as it is.
int restrict_mount(const char* path, uint64_t attrs) {
#ifdef SYS_mount_setattr
  mount_attr attr{};
  attr.attr_set = attrs;
  if (::syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) == 0 ||
      errno == ENOSYS)
    return 0;
  return errno;
#else
  (void)path;
  (void)attrs;
  return 0;
#endif
}

// Read-only (and nosuid) for a bind mount and everything under it.
int make_readonly(const char* path) {
#ifdef SYS_mount_setattr
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
  if (::syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) == 0) return 0;
  if (errno != ENOSYS) return errno;
#endif
  // Older kernels: a remount of the top mount only, keeping the flags a
  // user namespace may not clear.
  struct statfs st {};
  if (::statfs(path, &st) != 0) return errno;
  unsigned long keep = 0;
  if (st.f_flags & ST_NODEV) keep |= MS_NODEV;
  if (st.f_flags & ST_NOEXEC) keep |= MS_NOEXEC;
  if (st.f_flags & ST_NOATIME) keep |= MS_NOATIME;
  if (st.f_flags & ST_NODIRATIME) keep |= MS_NODIRATIME;
  if (st.f_flags & ST_RELATIME) keep |= MS_RELATIME;
  if (::mount(nullptr, path, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep,
              nullptr) != 0)
    return errno;
  return 0;
}

// An O_PATH descriptor of `path`, refusing symlinks anywhere in it (the
// kernel's openat2 RESOLVE_NO_SYMLINKS; before 5.6, in its last part only):
// a tool that can write near a granted path cannot swap a link in.
int open_exact(const char* path) {
#ifdef SYS_openat2
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how));
  if (fd >= 0 || errno != ENOSYS) return fd;
#endif
  return ::open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
}

int make_file(const char* path) {
  int fd = ::open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

enum class bind_kind { read_only, writable, device };

int bind_from(int fd, const char* target, bind_kind kind) {
  char source[40];
  fd_path(fd, source);
  if (::mount(source, target, nullptr, MS_BIND | MS_REC, nullptr) != 0) return errno;
  switch (kind) {
    case bind_kind::read_only:
      return make_readonly(target);
    case bind_kind::writable:
      // A tool must not leave setuid programs or device nodes behind.
      return restrict_mount(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    case bind_kind::device:
      return 0;
  }
  return 0;
}

// Parents of `path` (not itself), outermost first: "/a/b/c" -> /a, /a/b.
void add_parents(const std::string& path, std::vector<std::string>& dirs,
                 std::set<std::string>& seen) {
  for (std::size_t at = path.find('/', 1); at != std::string::npos; at = path.find('/', at + 1)) {
    std::string dir = path.substr(0, at);
    if (seen.insert(dir).second) dirs.push_back(dir);
  }
}

// The part of every call's view that depends only on this machine: the
// system's directories (or links) and the devices. Looked up once.
const view_plan& system_part() {
  static const view_plan base = [] {
    namespace fs = std::filesystem;
    view_plan v;
    v.enabled = true;
    v.tmp_bytes = tmp_bytes;
    v.dirs = {"/dev", "/proc", "/tmp"};
    std::error_code ec;
    for (const char* dir : system_dirs) {
      auto st = fs::symlink_status(dir, ec);
      if (ec || !fs::exists(st)) continue;
      if (fs::is_symlink(st)) {
        v.links.emplace_back(dir, fs::read_symlink(dir, ec).string());
      } else if (fs::is_directory(st)) {
        v.dirs.push_back(dir);
        v.mounts.push_back({dir, false});
      }
    }
    for (const char* d : devices)
      if (fs::exists(d, ec)) v.devices.emplace_back(d);
    return v;
  }();
  return base;
}

}  // namespace

view_plan plan_view(const sandbox_options& opts) {
  view_plan v = system_part();
  if (opts.read_paths.empty() && opts.write_paths.empty()) return v;
  std::set<std::string> seen(v.dirs.begin(), v.dirs.end());
  // Granted paths come after the system's so they can sit inside them.
  auto grant = [&](const std::string& path, bool writable) {
    std::error_code ec;
    const bool dir = std::filesystem::is_directory(path, ec);
    add_parents(path, v.dirs, seen);
    if (dir && seen.insert(path).second) v.dirs.push_back(path);
    if (!dir) v.files.push_back(path);
    v.mounts.push_back({path, writable});
  };
  for (const auto& p : opts.read_paths) grant(p, false);
  for (const auto& p : opts.write_paths) grant(p, true);
  return v;
}

int enter_view(const view_plan& v) {
  if (v.mounts.size() + v.devices.size() > max_mounts) return E2BIG;
  // Opened before the staging root covers anything: a granted path may
  // live under /tmp itself.
  int fds[max_mounts];
  std::size_t opened = 0;
  auto close_all = [&] {
    for (std::size_t i = 0; i < opened; ++i) ::close(fds[i]);
  };
  auto fail = [&](int err) {
    close_all();
    return err;
  };
  for (const auto& m : v.mounts) {
    int fd = open_exact(m.path.c_str());
    if (fd < 0) return fail(errno);
    fds[opened++] = fd;
  }
  for (const auto& d : v.devices) {
    int fd = open_exact(d.c_str());
    if (fd < 0) return fail(errno);
    fds[opened++] = fd;
  }

  if (::mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0)
    return fail(errno);
  // The work directory, writable by whichever uid the tool runs as; first,
  // as granted paths may lie below it.
  staged_path tmp("/tmp");
  if (::mkdir(tmp.c_str(), 0755) != 0) return fail(errno);
  char tmp_opts[64] = "mode=1777,size=";
  put_decimal(tmp_opts + std::strlen(tmp_opts), v.tmp_bytes);
  if (::mount("tmpfs", tmp.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts) != 0)
    return fail(errno);

  for (const auto& d : v.dirs) {
    staged_path p(d);
    if (!p.ok()) return fail(ENAMETOOLONG);
    if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return fail(errno);
  }
  for (const auto& f : v.files) {
    staged_path p(f);
    if (!p.ok()) return fail(ENAMETOOLONG);
    if (int err = make_file(p.c_str()); err != 0) return fail(err);
  }
  for (std::size_t i = 0; i < v.mounts.size(); ++i) {
    staged_path p(v.mounts[i].path);
    const bind_kind kind = v.mounts[i].writable ? bind_kind::writable : bind_kind::read_only;
    if (int err = bind_from(fds[i], p.c_str(), kind); err != 0) return fail(err);
  }
  for (const auto& [path, target] : v.links) {
    staged_path p(path);
    if (::symlink(target.c_str(), p.c_str()) != 0) return fail(errno);
  }

  // /dev: the devices, a /dev/shm, and the links programs expect.
  staged_path dev("/dev");
  if (::mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0)
    return fail(errno);
  for (std::size_t i = 0; i < v.devices.size(); ++i) {
    staged_path p(v.devices[i]);
    if (int err = make_file(p.c_str()); err != 0) return fail(err);
    if (int err = bind_from(fds[v.mounts.size() + i], p.c_str(), bind_kind::device); err != 0)
      return fail(err);
  }
  staged_path shm("/dev/shm");
  if (::mkdir(shm.c_str(), 01777) != 0 ||
      ::mount("tmpfs", shm.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=1777,size=16m") != 0)
    return fail(errno);
  constexpr const char* dev_links[][2] = {{"/dev/fd", "/proc/self/fd"},
                                          {"/dev/stdin", "/proc/self/fd/0"},
                                          {"/dev/stdout", "/proc/self/fd/1"},
                                          {"/dev/stderr", "/proc/self/fd/2"}};
  for (const auto& link : dev_links) {
    staged_path p(link[0]);
    if (::symlink(link[1], p.c_str()) != 0) return fail(errno);
  }
  close_all();
  opened = 0;

  // A /proc of the call's PID namespace, mounted while the host's is still
  // in view: in a user namespace the kernel mounts a proc only where one
  // is already fully visible.
  staged_path proc("/proc");
  if (::mount("proc", proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return errno;

  // Enter it: the old root goes away entirely (pivot_root(".", ".") stacks
  // it under the new one, and the detach unmounts it).
  if (::chdir(staging) != 0) return errno;
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return errno;
  if (::umount2(".", MNT_DETACH) != 0) return errno;
  if (::chdir("/") != 0) return errno;
  // Nothing outside /tmp (and granted writable paths) takes a write.
  // (A bind remount: it changes this mount only, never a superblock.)
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
              nullptr) != 0)
    return errno;
  return 0;
}

}  // namespace keel::actors::sandbox_detail
