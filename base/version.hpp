#pragma once
// This build's version: the project version from CMake and the git commit
// the build was configured from ("unknown" when the sources were not a git
// checkout then). Fixed at configure time; nothing is looked up at run time.

#include <string>
#include <string_view>

namespace keel {

// "0.1.0"
const char* version();
// "abc1234" (7 hex digits), or "unknown".
const char* build_commit();
// "keeld 0.1.0 (abc1234)": what `PROGRAM --version` prints.
std::string version_line(std::string_view program);

}  // namespace keel
