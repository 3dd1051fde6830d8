#pragma once
// Small files written whole and durably (archives, reports, the node's
// admin token), and bytes from the kernel's random source.

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "base/status.hpp"

namespace keel {

// Writes `text` to `path` through a temporary file renamed over it, then
// fsyncs the file and its directory: a crash leaves the old file or the
// new one, never part of one. The file gets `mode`. Errors: io_error.
status write_durably(const std::string& path, const std::string& text, mode_t mode = 0640);

// `n` bytes from getrandom(2). Errors: io_error.
result<std::string> random_bytes(std::size_t n);

}  // namespace keel
