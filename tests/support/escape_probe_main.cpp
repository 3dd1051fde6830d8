// escape_probe: what a hostile exec tool would try, one attempt per
// argument, each answered in one JSON object on stdout:
//   {"<attempt>": {"ok": true|false, "detail": "<what it got or errno>"}}
// Attempts:
//   read:PATH        read a file (detail: its first 200 bytes)
//   list:PATH        list a directory (detail: the names)
//   write:PATH       create and write a file
//   ptrace           PTRACE_ATTACH to PID 1 (the sandbox's init)
//   ptrace_self      PTRACE_TRACEME
//   mount            mount a tmpfs on /tmp
//   unshare          a new user namespace
//   clone_newuser    clone() into a new user namespace
//   keyctl           read the user keyring's id
//   bpf              a BPF map
//   uid              the uid it runs as (always ok)
//   forks:N          start N children that wait; ok when all started
//   post:PORT/PATH   POST {} to http://127.0.0.1:PORT/PATH without a token
//                    (detail: the status line; ok when 2xx)
// The exec sandbox tests run it as a tool (stdin is read and ignored).

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

using json = nlohmann::json;

json outcome(bool ok, std::string detail) {
  return {{"ok", ok}, {"detail", std::move(detail)}};
}

json from_rc(long rc) {
  return rc < 0 ? outcome(false, std::strerror(errno))
                : outcome(true, "returned " + std::to_string(rc));
}

json try_read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return outcome(false, std::strerror(errno));
  char buf[200];
  ssize_t n = ::read(fd, buf, sizeof buf);
  int err = errno;
  ::close(fd);
  if (n < 0) return outcome(false, std::strerror(err));
  std::string text(buf, static_cast<std::size_t>(n));
  for (char& c : text)
    if (c == '\0') c = ' ';
  return outcome(true, text);
}

json try_list(const std::string& path) {
  std::error_code ec;
  std::string names;
  for (const auto& e : std::filesystem::directory_iterator(path, ec))
    names += e.path().filename().string() + " ";
  if (ec) return outcome(false, ec.message());
  return outcome(true, names);
}

json try_write(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return outcome(false, std::strerror(errno));
  ssize_t n = ::write(fd, "escaped\n", 8);
  int err = errno;
  ::close(fd);
  return n == 8 ? outcome(true, "written") : outcome(false, std::strerror(err));
}

json try_forks(int n) {
  std::vector<pid_t> kids;
  int failed_errno = 0;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::pause();
      ::_exit(0);
    }
    if (pid < 0) {
      failed_errno = errno;
      break;
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) ::kill(k, SIGKILL);
  for (pid_t k : kids) ::waitpid(k, nullptr, 0);
  if (failed_errno != 0)
    return outcome(
        false, "started " + std::to_string(kids.size()) + ", then " + std::strerror(failed_errno));
  return outcome(true, "started " + std::to_string(kids.size()));
}

json try_post(const std::string& where) {
  auto slash = where.find('/');
  const int port = std::stoi(where.substr(0, slash));
  const std::string path = slash == std::string::npos ? "/" : where.substr(slash);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return outcome(false, std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return outcome(false, std::strerror(err));
  }
  const std::string req = "POST " + path +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    int err = errno;
    ::close(fd);
    return outcome(false, std::strerror(err));
  }
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    answer.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  const std::string status_line = answer.substr(0, answer.find("\r\n"));
  const bool ok = status_line.size() > 9 && status_line[9] == '2';
  return outcome(ok, status_line);
}

json attempt(const std::string& what) {
  auto arg = [&](std::string_view prefix) { return what.substr(prefix.size()); };
  if (what.rfind("read:", 0) == 0) return try_read(arg("read:"));
  if (what.rfind("list:", 0) == 0) return try_list(arg("list:"));
  if (what.rfind("write:", 0) == 0) return try_write(arg("write:"));
  if (what.rfind("forks:", 0) == 0) return try_forks(std::stoi(arg("forks:")));
  if (what.rfind("post:", 0) == 0) return try_post(arg("post:"));
  if (what == "ptrace") return from_rc(::ptrace(PTRACE_ATTACH, 1, nullptr, nullptr));
  if (what == "ptrace_self") return from_rc(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr));
  if (what == "mount") return from_rc(::mount("tmpfs", "/tmp", "tmpfs", 0, nullptr));
  if (what == "unshare") return from_rc(::unshare(CLONE_NEWUSER));
  if (what == "clone_newuser") {
    long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0);
    if (pid == 0) ::_exit(0);
    if (pid > 0) ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return from_rc(pid);
  }
  if (what == "keyctl")
    return from_rc(::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
  if (what == "bpf") {
    bpf_attr attr{};
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    return from_rc(::syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  }
  if (what == "uid") return outcome(true, std::to_string(::getuid()));
  return outcome(false, "unknown attempt");
}

}  // namespace

int main(int argc, char** argv) {
  // The sandbox hands the call's input on stdin; it is not needed here.
  std::string ignored((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  json report = json::object();
  for (int i = 1; i < argc; ++i) report[argv[i]] = attempt(argv[i]);
  std::cout << report.dump() << "\n";
  return 0;
}
