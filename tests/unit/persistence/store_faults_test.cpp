// The store under faults of its environment, in process: writes that fail
// stop further writes at once with a clear error, reads go on, and writes
// resume by themselves once the cause is gone, with nothing acknowledged
// lost.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

namespace p = keel::persistence;
using keel::code;

namespace {

p::write_op big_op(uint64_t seq) {
  return {p::family::ledger, false, p::agent_seq_key(1, seq),
          p::encode_record({7, static_cast<int64_t>(seq), std::string(100'000, 'a' + seq % 26)})};
}

// Takes every free descriptor below the soft limit (lowered to `limit`);
// gives them and the limit back on destruction.
class descriptor_hog {
 public:
  explicit descriptor_hog(rlim_t limit) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit low{limit, saved_.rlim_max};
    ::setrlimit(RLIMIT_NOFILE, &low);
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      held_.push_back(fd);
    }
  }
  ~descriptor_hog() { release(); }
  void release() {
    for (int fd : held_) ::close(fd);
    held_.clear();
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  std::size_t held() const { return held_.size(); }

 private:
  rlimit saved_{};
  std::vector<int> held_;
};

// The sanitizers' runtimes open files of their own (to check a vptr they
// read the process's maps): with every descriptor taken they report
// errors of their own, so under them this case is skipped.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

}  // namespace

TEST_CASE(
    "a store out of file descriptors stops writes with an error, and resumes once it has them" *
    doctest::skip(sanitized)) {
  keel::test::temp_dir dir("keel-emfile");
  p::store_options opts{dir.str(), 8 << 20, true};
  opts.write_buffer_bytes = 1 << 20;  // a flush, and a new file, every few writes
  opts.recovery_interval_ms = 50;
  auto db = p::store::open(opts);
  REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
  auto& s = **db;

  uint64_t seq = 0;
  std::vector<uint64_t> acked;
  keel::status failed;
  {
    descriptor_hog hog(256);
    REQUIRE(hog.held() > 0);
    // Bounded: a new table file is due within a few megabytes.
    for (int i = 0; i < 400 && failed.is_ok(); ++i) {
      failed = s.write({big_op(++seq)}, true);
      if (failed.is_ok()) acked.push_back(seq);
    }
    REQUIRE_FALSE(failed.is_ok());
    CHECK((failed.error_code() == code::unavailable || failed.error_code() == code::io_error));
    // Writes are refused now, with the reason, until the recovery thread
    // reopens the store; it may already have, since closing the old
    // handles frees descriptors even while the hog holds the rest.
    auto again = s.write({big_op(++seq)}, true);
    if (again.is_ok()) {
      CHECK(s.health().recoveries >= 1);
      acked.push_back(seq);
    } else {
      CHECK((again.error_code() == code::unavailable || again.error_code() == code::io_error));
    }
    auto r = s.read_ledger(1, acked.front(), 1, "agent 1");
    CHECK(r.is_ok());
  }
  // The descriptors are back: the store reopens by itself and writes again.
  CHECK(keel::test::eventually([&] { return s.write({big_op(++seq)}, true).is_ok(); },
                               std::chrono::seconds(20)));
  CHECK(s.health().writable);
  CHECK(s.health().recoveries >= 1);
  for (uint64_t a : acked) {
    auto r = s.read_ledger(1, a, 1, "agent 1");
    REQUIRE(r.is_ok());
    REQUIRE(r->size() == 1);
    CHECK(r->front().first == a);
  }
}
