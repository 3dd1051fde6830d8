#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "net/raft/keys.hpp"

namespace r = keel::raft;

TEST_CASE("raft keys: a group's keys are one range, its entries in index order") {
  const r::group_id g = 7;
  std::vector<std::string> keys = {r::entry_key(g, 1),       r::entry_key(g, 2),
                                   r::entry_key(g, 256),     r::entry_key(g, 1ull << 40),
                                   r::term_key(g),           r::vote_key(g),
                                   r::snapshot_key(g),       r::applied_key(g),
                                   r::term_of_record_key(g), r::reserved_ids_key(g)};
  for (const auto& k : keys) {
    CAPTURE(k);
    CHECK(k >= r::group_begin(g));
    CHECK(k < r::group_end(g));
    CHECK((k < r::group_begin(g + 1)));
    CHECK(k >= r::group_end(g - 1));
  }
  CHECK(r::entry_key(g, 2) < r::entry_key(g, 256));
  CHECK(r::entry_key(g, 256) < r::entry_key(g, 1ull << 40));
  CHECK(r::entry_key(g, UINT64_MAX) < r::entry_end(g));
  CHECK(r::entry_end(g) <= r::term_key(g));  // entries first, then the rest
  // The meta group is last and its range closes too.
  CHECK(r::applied_key(r::meta_group) < r::group_end(r::meta_group));
  CHECK(r::group_end(r::meta_group - 1) == r::group_begin(r::meta_group));
}

TEST_CASE("raft keys: entry_index reads back only an entry key of its own group") {
  CHECK(r::entry_index(3, r::entry_key(3, 42)) == 42u);
  CHECK_FALSE(r::entry_index(4, r::entry_key(3, 42)));
  CHECK_FALSE(r::entry_index(3, r::term_key(3)));
  CHECK_FALSE(r::entry_index(3, r::entry_key(3, 42).substr(0, 12)));
}
