#pragma once
// Internal to the exec sandbox (exec_sandbox.cpp, exec_sandbox_child.cpp):
// what runs in the child processes, prepared before they exist, and the
// probe of what this machine lets the sandbox do.
//
// With a PID namespace, a call is two processes in new namespaces (user,
// PID, mount and, unless the network is allowed, network): an init (PID 1
// of the namespace) that mounts a private /proc, covers hidden paths and
// starts the tool as PID 2, waits for it, reports its wait status through
// the report pipe and exits, taking every process left in the namespace
// with it (the kernel kills them all when PID 1 ends). Nothing in the
// namespace can name, let alone signal, a process outside it, and /proc
// shows only the namespace. Without one, the tool runs alone in its own
// process group, as before.

#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "effects/exec_sandbox.hpp"

namespace keel::actors::sandbox_detail {

// Exit codes of a child that never reached the program. 127/126 follow the
// shell ("not found" / "found but not executable"); 125 is set-up failure,
// which the parent learns about through the report pipe anyway.
constexpr int exit_not_found = 127;
constexpr int exit_not_executable = 126;
constexpr int exit_setup_failed = 125;

enum class child_step : int {
  unshare = 1,
  rlimit,
  redirect,
  exec,
  mount,
  spawn,
  view,      // building the file system view
  identity,  // becoming the tool's uid
  seccomp,   // no_new_privs or the seccomp filter
  // Not a failure: the init's report of how the tool ended (`err` holds
  // its wait status).
  tool_ended = 100,
};
const char* step_name(int step);

// What a child writes to the report pipe: a step that failed before the
// tool ran (the pipe is close-on-exec, so a successful execve writes
// nothing), or the init's tool_ended.
struct child_report {
  int step = 0;
  int err = 0;
};

// One host path shown in the view, at the same path.
struct view_mount {
  std::string path;
  bool writable = false;
};

// The tool's file system: a tmpfs root holding the mounts, symlinks
// (/bin -> usr/bin on merged-/usr systems), a minimal /dev and a private,
// writable /tmp. Directories to create come first, parents before
// children.
struct view_plan {
  bool enabled = false;
  std::vector<std::string> dirs;   // created in the new root
  std::vector<std::string> files;  // empty files created (file mount points)
  std::vector<view_mount> mounts;
  std::vector<std::pair<std::string, std::string>> links;  // path -> target
  std::vector<std::string> devices;                        // /dev/null, ... bound from the host
  uint64_t tmp_bytes = 0;                                  // size of the private /tmp
};

// Plans the view for a call: system directories that exist here, the
// granted paths, the devices. Parent side (allocates).
view_plan plan_view(const sandbox_options& opts);

// Builds the view, with a /proc of the caller's PID namespace, and enters
// it (pivot_root); in the init, after the mount namespace is private.
// Async-signal-safe. 0 on success, else the errno.
int enter_view(const view_plan& v);

// The seccomp filter as a BPF program, built once; null (and the reason in
// `why`) when it cannot be built.
const sock_fprog* tool_filter(std::string* why);

struct limit_setting {
  int resource;
  rlimit value;
};

// Everything the children need, prepared before the first fork: between
// fork and execve a child of a multi-threaded process may only make
// async-signal-safe calls (another thread may have held the malloc lock at
// the fork), so no allocation, no strings, no locale.
struct child_plan {
  std::vector<std::string> candidates;  // paths to try execve on, in order
  std::vector<char*> argv;
  // The tool's whole environment, "NAME=value" (env_strings own the bytes).
  std::vector<std::string> env_strings;
  std::vector<char*> envp;
  // Flags of the tool's own unshare (the process-group path only).
  int unshare_flags = 0;
  // The namespace path: clone flags of the init (0: process-group path).
  int clone_flags = 0;
  bool private_proc = false;  // mount a fresh /proc in the init
  // Covered in the view: directories with an empty read-only tmpfs, files
  // with an empty file.
  std::vector<std::string> hidden_dirs;
  std::vector<std::string> hidden_files;
  // The file system view (exec_sandbox_view.cpp); empty: the host's.
  view_plan view;
  // The tool's identity when the node is root (-1: unchanged).
  long uid = -1, gid = -1;
  // Loaded just before execve, after no_new_privs; null: none.
  const sock_fprog* filter = nullptr;
  // The node's argv and environment strings, which the init (a copy of
  // the node) blanks so /proc/1/cmdline and environ show nothing.
  char* wipe_from[2] = {nullptr, nullptr};
  char* wipe_to[2] = {nullptr, nullptr};
  // With a new user namespace (a node not running as root): the init maps
  // the node's own uid and gid to themselves ("U U 1"), which an
  // unprivileged process may do for itself; without a map nothing can be
  // created on the view's tmpfs. Empty: no map written.
  std::string uid_map, gid_map;
  limit_setting limits[5];
  int limit_count = 0;
  long max_fd = 1024;  // for the close() loop when close_range is missing
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1, report_fd = -1;
};

child_plan make_plan(const std::vector<std::string>& argv, const config::exec_limits& limits,
                     const sandbox_options& opts);

// Starts the call's first child (the init on the namespace path, else the
// tool itself); returns its pid in the parent, -1 with errno on failure.
pid_t start_children(const child_plan& p);

}  // namespace keel::actors::sandbox_detail
