#include "net/raft/raft_c.hpp"

namespace keel::raft {

std::string error_text(int rv) {
  return std::string(raft_strerror(rv)) + " (raft " + std::to_string(rv) + ")";
}

}  // namespace keel::raft
