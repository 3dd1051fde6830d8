// exec_sandbox_cost: what the exec sandbox costs one tool call.
//
// Runs /bin/true --calls times through actors::run_sandboxed, one call at a
// time, with the sandbox this machine supports (keeld's: namespaces, the
// file system view, seccomp, a separate uid under root; the probe's line is
// printed), and, for comparison, the same program started with a plain
// fork + execve + waitpid. The difference is what isolation adds to every
// exec tool call: making the namespaces, building and entering the view
// (about twenty mounts), loading the filter. A tool's own run time comes on
// top of both.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "bench/bench_util.hpp"
#include "effects/exec_sandbox.hpp"

namespace keel::bench {

int run(int argc, char** argv) {
  options o("exec_sandbox_cost", "latency of one exec tool call through the sandbox");
  o.add("calls", "300", "calls of each kind");
  o.parse(argc, argv);
  const uint64_t calls = o.u64("calls");

  const auto& caps = actors::probe_sandbox();
  std::printf(
      "sandbox: pid namespace %s, network namespace %s, file system view %s, seccomp %s, "
      "separate uid %s\n",
      caps.pid_namespace ? "yes" : "no", caps.network_namespace ? "yes" : "no",
      caps.system_view ? "yes" : "no", caps.seccomp ? "yes" : "no",
      caps.separate_uid ? "yes" : "no");

  std::vector<int64_t> sandboxed, plain;
  config::exec_limits limits;  // the defaults a tool gets; no network
  for (uint64_t i = 0; i < calls; ++i) {
    int64_t t0 = now_ns();
    auto r = actors::run_sandboxed({"/bin/true"}, "{}", limits, 10'000);
    int64_t t1 = now_ns();
    if (!r || r->exit_code != 0) die("a sandboxed /bin/true failed");
    sandboxed.push_back(t1 - t0);
  }
  for (uint64_t i = 0; i < calls; ++i) {
    int64_t t0 = now_ns();
    pid_t pid = ::fork();
    if (pid == 0) {
      char* const args[] = {const_cast<char*>("/bin/true"), nullptr};
      ::execv("/bin/true", args);
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    plain.push_back(now_ns() - t0);
  }

  report rep("exec_sandbox_cost");
  rep.params() = o.params();
  rep.metric("pid_namespace", caps.pid_namespace);
  rep.metric("system_view", caps.system_view);
  rep.metric("seccomp", caps.seccomp);
  rep.metric("separate_uid", caps.separate_uid);
  auto s = summarize(sandboxed);
  auto p = summarize(plain);
  rep.latency_metrics("sandboxed_call", s);
  rep.latency_metrics("plain_fork_exec", p);
  rep.metric("overhead_p50_us", round2(s.p50_us - p.p50_us));
  rep.metric("rss_bytes", rss_bytes());
  rep.note("sandboxed_call: run_sandboxed(/bin/true) with keeld's sandbox, one at a time");
  rep.note("plain_fork_exec: fork + execve + waitpid of /bin/true, no isolation");
  rep.finish(o.str("json"));
  return 0;
}

}  // namespace keel::bench
