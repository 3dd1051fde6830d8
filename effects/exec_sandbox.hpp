#pragma once
// Runs one exec tool call in a sandbox: a child process with a clean
// environment, rlimits on CPU time, address space, open files and
// processes, a wall-clock timeout, and (unless allowed) no network through
// a new network namespace. Where the kernel allows a PID namespace (root,
// or unprivileged user namespaces), the tool runs as PID 2 of its own PID
// and mount namespaces: it cannot see or signal the node or any process
// outside (a private /proc), and when the tool ends or times out every
// process it started ends with it, those that called setsid() included.
// Its file system is a view built for the call: the system's directories
// (/usr, /etc, ...) read-only, a private /tmp that is its work directory
// and vanishes with the call, a minimal /dev, and only the host paths the
// tool's spec grants; the node's data directory, config and keys are never
// in it. The tool runs with no new privileges, under a seccomp filter that
// refuses what a tool never needs (ptrace, mount, modules, keyrings, bpf,
// new namespaces...), and, when the node runs as root, as an unprivileged
// uid of its own (tool_uid). Elsewhere the tool gets its own process
// group, which a timeout kills. The arguments go to stdin as JSON; the
// tool answers with one JSON document on stdout. An abort signal, when
// raised, kills the call the way the timeout does, at once (the wait loop
// wakes through a pipe the signal's hook writes to, no polling).
//
// Blocking: call from an effect thread, never a scheduler thread.
// Thread-safe: concurrent calls are independent.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/abort_signal.hpp"
#include "base/status.hpp"
#include "config/agent_spec.hpp"

namespace keel::actors {

// What the sandbox can enforce on this machine, probed once at start-up and
// logged by keeld ("exec sandbox: rlimits yes, network namespace no (...)").
struct sandbox_capabilities {
  bool rlimits = true;
  bool network_namespace = false;
  // The tool runs in PID and mount namespaces of its own (see above).
  bool pid_namespace = false;
  // ... with a /proc that shows only its namespace.
  bool private_proc = false;
  // ... and a file system view of its own (read-only system, private /tmp).
  bool system_view = false;
  // A seccomp filter and no_new_privs (needs a kernel with seccomp).
  bool seccomp = false;
  // The node runs as root: tools run as an unprivileged uid instead.
  bool separate_uid = false;
  std::string detail;  // why a protection is missing, for the log
};
const sandbox_capabilities& probe_sandbox();

struct sandbox_options {
  // Absolute paths the tool must not see even where the view would show
  // them (the node's data directory, its config, token and key files): a
  // directory is covered with an empty, read-only one, a file with an empty
  // one. Needs the PID namespace path; ignored without it.
  std::vector<std::string> hidden;
  // Host paths the tool's spec grants, shown at the same path in the view:
  // read-only, or writable. Each must exist (a missing one fails the call).
  std::vector<std::string> read_paths;
  std::vector<std::string> write_paths;
  // The uid and gid tools run as when the node runs as root.
  uint32_t tool_uid = 65534;
  uint32_t tool_gid = 65534;
  // Variables set on top of the fixed environment (PATH=/usr/bin:/bin,
  // HOME=/tmp, LANG=C.UTF-8): the tool's env, its secrets expanded. HOME
  // and LANG may be replaced; PATH is always the sandbox's (a PATH entry
  // here is ignored). Nothing of the node's own environment is added.
  std::map<std::string, std::string> env;
};

struct exec_outcome {
  int exit_code = -1;      // -1 when killed by a signal
  int signal = 0;          // the killing signal, 0 when it exited
  bool timed_out = false;  // killed by the wall timeout
  bool started = true;     // false: the program was never executed (not found, ...)
  bool output_truncated = false;
  // Killed because `abort` was raised; with started false, raised before
  // anything was started (nothing ran).
  bool aborted = false;
  std::string stdout_text;  // at most limits.max_output_bytes
  std::string stderr_text;  // at most 64 KiB
};

// Runs argv with `input` (serialized JSON) on stdin. When `abort` (may be
// null) is raised, everything the call started is killed, as at the
// timeout, and the call returns at once with `aborted`. Errors:
// invalid_argument (empty argv), io_error (fork/exec/pipe failed; a missing
// program is a child exit code 127 instead).
result<exec_outcome> run_sandboxed(const std::vector<std::string>& argv, const std::string& input,
                                   const config::exec_limits& limits, uint32_t timeout_ms,
                                   const sandbox_options& opts = {},
                                   const abort_signal* abort = nullptr);

}  // namespace keel::actors
