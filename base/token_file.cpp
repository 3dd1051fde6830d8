#include "base/token_file.hpp"

#include <filesystem>
#include <fstream>

namespace keel {

result<std::string> read_token_file(const std::string& path, std::string* warning) {
  std::ifstream in(path);
  if (!in) return error(code::invalid_argument, "cannot read the token file " + path);
  std::string token;
  std::getline(in, token);
  const auto first = token.find_first_not_of(" \t\r");
  const auto last = token.find_last_not_of(" \t\r");
  token = first == std::string::npos ? "" : token.substr(first, last - first + 1);
  if (token.empty()) return error(code::invalid_argument, "the token file " + path + " is empty");
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::perms mode = fs::status(path, ec).permissions();
  if (warning && !ec &&
      (mode & (fs::perms::group_read | fs::perms::others_read)) != fs::perms::none)
    *warning = "the token file " + path + " is readable by others (chmod 600 it)";
  return token;
}

}  // namespace keel
