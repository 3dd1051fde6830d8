// What a hostile exec tool tries, from inside the sandbox (the escape_probe
// program, granted to the call read-only): each attempt is refused, and
// each check names the layer that refuses it, skipping where this machine
// lacks that layer (the probe says why).

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "effects/exec_sandbox.hpp"

using keel::actors::probe_sandbox;
using keel::actors::run_sandboxed;
using keel::actors::sandbox_options;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr uint32_t generous_ms = 20'000;
const std::string probe_path = KEEL_ESCAPE_PROBE_PATH;

// Runs the escape probe with `attempts` and returns its report.
json attempt(const std::vector<std::string>& attempts, sandbox_options opts = {},
             keel::config::exec_limits limits = {}) {
  opts.read_paths.push_back(probe_path);
  std::vector<std::string> argv{probe_path};
  argv.insert(argv.end(), attempts.begin(), attempts.end());
  auto r = run_sandboxed(argv, "{}", limits, generous_ms, opts);
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  REQUIRE_MESSAGE(r->exit_code == 0, r->stderr_text);
  json report = json::parse(r->stdout_text, nullptr, false);
  REQUIRE_MESSAGE(report.is_object(), r->stdout_text);
  return report;
}

bool refused(const json& report, const std::string& what) {
  INFO(what, ": ", report[what].dump());
  return report.contains(what) && report[what]["ok"] == false;
}

// A directory under the host's /tmp with a file in it, as the node's data
// directory or another agent's files would be.
struct host_dir {
  fs::path path;
  explicit host_dir(const std::string& name)
      : path(fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()))) {
    fs::create_directories(path);
    std::ofstream(path / "file") << "host data";
  }
  ~host_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool have_view() {
  const auto& caps = probe_sandbox();
  if (!caps.system_view) MESSAGE("no file system view here, not checked: ", caps.detail);
  return caps.system_view;
}

}  // namespace

TEST_CASE("a tool sees the system read-only and nothing of the host's other files") {
  if (!have_view()) return;
  host_dir other("keel-other-agent");
  auto report = attempt({"list:/", "read:" + (other.path / "file").string(), "list:/root",
                         "list:/home", "write:/etc/keel-escaped", "write:/usr/keel-escaped",
                         "write:/keel-escaped", "write:/tmp/mine", "read:/etc/hostname"});
  // The root holds the system's directories and the sandbox's own.
  for (const char* name : {"usr", "etc", "tmp", "proc", "dev"})
    CHECK(report["list:/"]["detail"].get<std::string>().find(name) != std::string::npos);
  CHECK(refused(report, "read:" + (other.path / "file").string()));
  CHECK(refused(report, "list:/root"));
  CHECK(refused(report, "list:/home"));
  CHECK(refused(report, "write:/etc/keel-escaped"));
  CHECK(refused(report, "write:/usr/keel-escaped"));
  CHECK(refused(report, "write:/keel-escaped"));
  CHECK_FALSE(fs::exists("/etc/keel-escaped"));
  // Its own work directory takes writes.
  CHECK(report["write:/tmp/mine"]["ok"] == true);
  // A private one: nothing it wrote is on the host.
  CHECK_FALSE(fs::exists("/tmp/mine"));
}

TEST_CASE("a granted path is shown at its own path, read-only unless granted writable") {
  if (!have_view()) return;
  host_dir ro("keel-granted-ro");
  host_dir rw("keel-granted-rw");
  fs::permissions(rw.path, fs::perms::all);  // writable by the tool's uid under root
  sandbox_options opts;
  opts.read_paths = {ro.path.string()};
  opts.write_paths = {rw.path.string()};
  auto report = attempt({"read:" + (ro.path / "file").string(), "write:" + (ro.path / "x").string(),
                         "write:" + (rw.path / "x").string()},
                        opts);
  CHECK(report["read:" + (ro.path / "file").string()]["detail"] == "host data");
  CHECK(refused(report, "write:" + (ro.path / "x").string()));
  CHECK(report["write:" + (rw.path / "x").string()]["ok"] == true);
  CHECK(fs::exists(rw.path / "x"));
}

TEST_CASE("a hidden path stays hidden inside a granted one, files and directories alike") {
  if (!have_view()) return;
  host_dir granted("keel-granted");
  fs::create_directories(granted.path / "data");
  std::ofstream(granted.path / "data" / "store") << "the node's store";
  std::ofstream(granted.path / "keeld.json") << "the node's config";
  sandbox_options opts;
  opts.read_paths = {granted.path.string()};
  opts.hidden = {(granted.path / "data").string(), (granted.path / "keeld.json").string()};
  const std::string store = (granted.path / "data" / "store").string();
  const std::string config = (granted.path / "keeld.json").string();
  auto report = attempt({"read:" + store, "read:" + config}, opts);
  CHECK(refused(report, "read:" + store));
  // A hidden file reads as empty.
  CHECK(report["read:" + config]["detail"] == "");
}

TEST_CASE("the node's command line and environment are not readable from the sandbox") {
  const auto& caps = probe_sandbox();
  if (!caps.private_proc) {
    MESSAGE("no private /proc here, not checked: ", caps.detail);
    return;
  }
  auto report = attempt({"read:/proc/1/cmdline", "read:/proc/1/environ", "list:/proc"});
  // PID 1 is the call's init, a copy of this process: its argv and
  // environment are blanked.
  const std::string cmdline = report["read:/proc/1/cmdline"]["detail"];
  CHECK(cmdline.find("keel_unit_tests") == std::string::npos);
  const json& environ = report["read:/proc/1/environ"];
  CHECK((environ["ok"] == false ||
         environ["detail"].get<std::string>().find("PATH=") == std::string::npos));
  // And this process is not there at all.
  CHECK(report["list:/proc"]["detail"].get<std::string>().find(" " + std::to_string(::getpid()) +
                                                               " ") == std::string::npos);
}

TEST_CASE("/etc/shadow is unreadable, also when the node runs as root") {
  const auto& caps = probe_sandbox();
  if (::geteuid() == 0 && !caps.separate_uid) {
    MESSAGE("running as root without a separate tool uid: not checked");
    return;
  }
  auto report = attempt({"read:/etc/shadow", "uid"});
  CHECK(refused(report, "read:/etc/shadow"));
  if (::geteuid() == 0) CHECK(report["uid"]["detail"] == "65534");
}

TEST_CASE("the seccomp filter refuses ptrace, mount, namespaces, keyrings and bpf") {
  const auto& caps = probe_sandbox();
  if (!caps.seccomp) {
    MESSAGE("no seccomp here, not checked: ", caps.detail);
    return;
  }
  auto report = attempt(
      {"ptrace", "ptrace_self", "mount", "unshare", "clone_newuser", "keyctl", "bpf", "forks:2"});
  for (const char* call :
       {"ptrace", "ptrace_self", "mount", "unshare", "clone_newuser", "keyctl", "bpf"}) {
    CHECK(refused(report, call));
    CHECK(report[call]["detail"] == "Operation not permitted");
  }
  // Ordinary process creation (clone without namespace flags) still works.
  CHECK(report["forks:2"]["ok"] == true);
}

TEST_CASE("a fork bomb stops at max_processes, also when the node runs as root") {
  const auto& caps = probe_sandbox();
  if (::geteuid() == 0 && !caps.separate_uid) {
    MESSAGE("running as root without a separate tool uid: not checked");
    return;
  }
  keel::config::exec_limits limits;
  limits.max_processes = 8;
  auto report = attempt({"forks:200"}, {}, limits);
  CHECK(refused(report, "forks:200"));
  CHECK(report["forks:200"]["detail"].get<std::string>().find("Resource temporarily unavailable") !=
        std::string::npos);
}

TEST_CASE("a tool can reopen its own stdin, stdout and stderr, also as the tool uid") {
  auto r = run_sandboxed(
      {"/bin/sh", "-c", "cat /dev/stdin; echo out > /dev/stdout; echo err > /dev/stderr"}, "hello ",
      {}, generous_ms);
  REQUIRE(r.is_ok());
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_text == "hello out\n");
  CHECK(r->stderr_text == "err\n");
}
