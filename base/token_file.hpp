#pragma once
// Bearer tokens read from a file (keeld --token-file, keel --token-file):
// a token given on the command line is readable by every local user in
// /proc, a file can be readable by its owner only.

#include <string>

#include "base/status.hpp"

namespace keel {

// The first line of `path` without surrounding spaces. When the file may
// be read by its group or others, `warning` (if given) says so; the token
// is still returned. Errors: invalid_argument (unreadable or empty file).
result<std::string> read_token_file(const std::string& path, std::string* warning = nullptr);

}  // namespace keel
