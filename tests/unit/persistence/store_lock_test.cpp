// A store directory another process has open: RocksDB's fcntl lock on
// DIR/LOCK names the holder, and opening is refused as a conflict naming it.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using keel::code;
namespace p = keel::persistence;

namespace {

// A child process holding an fcntl write lock on `path`, as RocksDB takes
// it, until destroyed (SIGKILL by its pid).
class lock_holding_child {
 public:
  explicit lock_holding_child(const std::string& path) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Only async-signal-safe calls in the child of a threaded process.
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
      struct flock l {};
      l.l_type = F_WRLCK;
      l.l_whence = SEEK_SET;
      const char ok = fd >= 0 && ::fcntl(fd, F_SETLK, &l) == 0 ? 'y' : 'n';
      if (::write(ready[1], &ok, 1) != 1) ::_exit(1);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char ok = 0;
    REQUIRE(::read(ready[0], &ok, 1) == 1);
    ::close(ready[0]);
    REQUIRE(ok == 'y');
  }
  ~lock_holding_child() {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
  lock_holding_child(const lock_holding_child&) = delete;
  lock_holding_child& operator=(const lock_holding_child&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("a store another process holds open is refused as a conflict naming that process") {
  keel::test::temp_dir dir("keel-lock");
  CHECK_FALSE(p::lock_holder(dir.str()));  // no LOCK file yet
  {
    // Made and closed again: a LOCK file nobody holds.
    auto db = p::store::open({dir.str(), 8 << 20, true});
    REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
  }
  CHECK_FALSE(p::lock_holder(dir.str()));

  lock_holding_child other(dir.str() + "/LOCK");
  CHECK(p::lock_holder(dir.str()) == static_cast<int>(other.pid()));
  auto refused = p::store::open({dir.str(), 8 << 20, true});
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.error().error_code() == code::conflict);
  CAPTURE(refused.error().message());
  CHECK(refused.error().message().find("(pid " + std::to_string(other.pid()) + ")") !=
        std::string::npos);
  CHECK(refused.error().message().find(dir.str()) != std::string::npos);
}
