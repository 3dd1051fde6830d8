#include "cluster/private_network.hpp"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <doctest/doctest.h>

namespace keel::test::cluster {

namespace {

constexpr const char* table = "inet keel_partition";

// The calling thread's network namespace, as a descriptor.
int own_namespace() {
  return ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
}

struct outcome {
  bool ok = false;
  std::string output;
};

// Runs a shell command in the calling thread's namespace (the child
// inherits it), bounded by `timeout`, with its output and errors.
outcome run(const std::string& command) {
  outcome out;
  std::string line = "timeout 10 " + command + " 2>&1";
  FILE* p = ::popen(line.c_str(), "r");
  if (!p) {
    out.output = "popen: " + std::string(std::strerror(errno));
    return out;
  }
  char buf[512];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.output.append(buf, n);
  int st = ::pclose(p);
  out.ok = st == 0;
  return out;
}

// Runs the commands in order; the first failure's command and output, or "".
std::string run_all(const std::vector<std::string>& commands) {
  for (const auto& c : commands) {
    auto o = run(c);
    if (!o.ok) return "`" + c + "` failed: " + o.output;
  }
  return {};
}

}  // namespace

private_network::entered::entered(int ns_fd) : saved_(own_namespace()) {
  REQUIRE_MESSAGE(saved_ >= 0, "cannot open this thread's network namespace");
  if (::setns(ns_fd, CLONE_NEWNET) != 0) {
    int e = errno;
    ::close(saved_);
    FAIL("setns: " << std::strerror(e));
  }
}

private_network::entered::~entered() {
  // Staying in another member's namespace would make every later call of
  // this thread wrong: nothing sensible can go on then.
  if (::setns(saved_, CLONE_NEWNET) != 0) std::abort();
  ::close(saved_);
}

std::unique_ptr<private_network> private_network::make(const std::vector<std::string>& ids,
                                                       std::string& why_not) {
  std::unique_ptr<private_network> net(new private_network());
  net->origin_fd_ = own_namespace();
  if (net->origin_fd_ < 0) {
    why_not = "cannot open /proc/thread-self/ns/net: " + std::string(std::strerror(errno));
    return nullptr;
  }
  if (::unshare(CLONE_NEWNET) != 0) {
    why_not = "network namespaces are not permitted here (unshare(CLONE_NEWNET): " +
              std::string(std::strerror(errno)) + ")";
    return nullptr;
  }
  net->hub_fd_ = own_namespace();
  if (net->hub_fd_ < 0) {
    why_not = "cannot open the hub namespace";
    return nullptr;
  }
  why_not = run_all({"ip link set lo up", "ip link add kpbr type bridge", "ip link set kpbr up"});
  if (!why_not.empty()) return nullptr;
  const std::string hub_path =
      "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(net->hub_fd_);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string address = "10.99.0." + std::to_string(i + 1);
    const std::string link = "kp" + std::to_string(i + 1);
    if (::unshare(CLONE_NEWNET) != 0) {
      why_not = "unshare(CLONE_NEWNET) for " + ids[i] + ": " + std::strerror(errno);
      return nullptr;
    }
    int fd = own_namespace();
    // Back in the hub whatever happens below: the descriptor keeps the
    // member's namespace alive.
    bool back = ::setns(net->hub_fd_, CLONE_NEWNET) == 0;
    if (fd < 0 || !back) {
      if (fd >= 0) ::close(fd);
      why_not = "cannot keep the namespace of " + ids[i];
      return nullptr;
    }
    net->members_[ids[i]] = {fd, address};
    why_not = net->in(ids[i], [&] {
      return run_all({"ip link set lo up",
                      "ip link add eth0 type veth peer name " + link + " netns " + hub_path,
                      "ip addr add " + address + "/24 dev eth0", "ip link set eth0 up",
                      std::string("nft 'add table ") + table + "; add set " + table +
                          " deaf { type ipv4_addr; }; add chain " + table +
                          " input { type filter hook input priority 0; policy accept; }; "
                          "add rule " +
                          table + " input ip saddr @deaf drop'"});
    });
    if (!why_not.empty()) return nullptr;
    why_not = run_all({"ip link set " + link + " master kpbr", "ip link set " + link + " up"});
    if (!why_not.empty()) return nullptr;
  }
  return net;
}

private_network::~private_network() {
  if (hub_fd_ >= 0 && ::setns(origin_fd_, CLONE_NEWNET) != 0) std::abort();
  for (auto& [id, m] : members_) ::close(m.first);
  if (hub_fd_ >= 0) ::close(hub_fd_);
  if (origin_fd_ >= 0) ::close(origin_fd_);
}

const std::string& private_network::address(const std::string& id) const {
  auto it = members_.find(id);
  REQUIRE_MESSAGE(it != members_.end(), "no member " << id << " in the private network");
  return it->second.second;
}

int private_network::ns_fd(const std::string& id) const {
  auto it = members_.find(id);
  REQUIRE_MESSAGE(it != members_.end(), "no member " << id << " in the private network");
  return it->second.first;
}

void private_network::deafen(const std::string& listener, const std::string& speaker) {
  if (!deaf_to_[listener].insert(speaker).second) return;
  auto o = in(listener, [&] {
    return run(std::string("nft add element ") + table + " deaf '{ " + address(speaker) + " }'");
  });
  REQUIRE_MESSAGE(o.ok, listener << " did not stop hearing " << speaker << ": " << o.output);
}

void private_network::hear(const std::string& listener, const std::string& speaker) {
  if (deaf_to_[listener].erase(speaker) == 0) return;
  auto o = in(listener, [&] {
    return run(std::string("nft delete element ") + table + " deaf '{ " + address(speaker) + " }'");
  });
  REQUIRE_MESSAGE(o.ok, listener << " does not hear " << speaker << " again: " << o.output);
}

void private_network::cut(const std::string& a, const std::string& b) {
  deafen(a, b);
  deafen(b, a);
}

void private_network::join(const std::string& a, const std::string& b) {
  hear(a, b);
  hear(b, a);
}

void private_network::heal_all() {
  for (auto& [listener, speakers] : deaf_to_) {
    std::set<std::string> all = speakers;
    for (const auto& s : all) hear(listener, s);
  }
}

}  // namespace keel::test::cluster
