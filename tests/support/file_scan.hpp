#pragma once
// Whether a value is anywhere on disk: for tests that a secret is stored
// only sealed (a data directory's table files, write-ahead log, archives
// and whatever else lies in it).

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace keel::test {

// Whether any regular file under `dir` holds `needle` byte for byte.
inline bool any_file_holds(const std::filesystem::path& dir, std::string_view needle) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace keel::test
