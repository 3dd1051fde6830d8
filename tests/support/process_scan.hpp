#pragma once
// Which host processes run: for tests that what an exec tool started ends
// with its call. A tool in a PID namespace has pids of its own, so tests
// find its processes by a token in their command lines instead.

#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace keel::test {

// Alive = exists and is not a zombie. A killed orphan is a zombie until
// init reaps it, which counts as dead here.
inline bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

// Host processes alive whose command line holds `token`.
inline int processes_with(const std::string& token) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(token) != std::string::npos && process_alive(std::stoi(name))) ++n;
  }
  return n;
}

}  // namespace keel::test
