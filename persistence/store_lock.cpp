// Who holds a store's directory: RocksDB locks DIR/LOCK with an fcntl
// write lock for as long as a process has the database open.

#include <fcntl.h>
#include <unistd.h>

#include "persistence/store.hpp"

namespace keel::persistence {

std::optional<int> lock_holder(const std::string& dir) {
  const std::string path = dir + "/LOCK";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_start = 0;
  probe.l_len = 0;  // the whole file
  const int r = ::fcntl(fd, F_GETLK, &probe);
  ::close(fd);
  if (r != 0 || probe.l_type == F_UNLCK) return std::nullopt;
  return static_cast<int>(probe.l_pid);
}

}  // namespace keel::persistence
