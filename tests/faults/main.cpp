// The fault tests' main: before any thread starts, the process moves into
// a mount namespace of its own (when it may: root, or a kernel that lets
// it), so that the small tmpfs disks the tests fill up are invisible to the
// rest of the machine and go away with the process. keeld children inherit
// it. Tests that need a disk of their own skip, saying why, where it
// cannot be had (fault_support.hpp, tmpfs_disk).

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <sched.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "faults/fault_support.hpp"

namespace keel::test {

std::string& mount_namespace_problem() {
  static std::string problem = "not set up";
  return problem;
}

}  // namespace keel::test

int main(int argc, char** argv) {
  auto& problem = keel::test::mount_namespace_problem();
  if (::unshare(CLONE_NEWNS) != 0)
    problem = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
  else if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    problem = std::string("making mounts private: ") + std::strerror(errno);
  else
    problem.clear();
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
