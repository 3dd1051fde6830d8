// Processed message ids past their expiry leave the dedupe family as it is
// compacted; ids not yet processed, and ids still within their window,
// stay; and no older version of a trimmed id comes back.

#include <doctest/doctest.h>

#include <climits>
#include <string>

#include "base/clock.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "persistence/values.hpp"
#include "support/temp_dir.hpp"

namespace p = keel::persistence;
using keel::wall_ms;

namespace {

constexpr int64_t window = 60'000;

p::write_op entry(const std::string& id, bool processed, int64_t expires, int64_t written) {
  return {p::family::dedupe, false, p::dedupe_key(7, id),
          p::encode(p::dedupe_entry{1, processed, {{"ok", true}}, expires}, written)};
}

bool has(p::store& s, const std::string& id) {
  auto r = s.find_message(7, id, "agent 7");
  REQUIRE(r.is_ok());
  return r->has_value();
}

}  // namespace

TEST_CASE("expired message ids are trimmed as the dedupe family compacts, and only those") {
  keel::test::temp_dir dir("keel-dedupe-trim");
  p::store_options opts{dir.str(), 8 << 20, true};
  opts.dedupe_default_window_ms = window;
  auto db = p::store::open(opts);
  REQUIRE(db.is_ok());
  auto& s = **db;
  const int64_t now = wall_ms();
  // An id first accepted, then (in a later table) processed and expired.
  REQUIRE(s.write({entry("older-version", false, 0, now - 3 * window)}, true).is_ok());
  REQUIRE(s.compact(p::family::dedupe).is_ok());
  REQUIRE(s.write({entry("expired", true, now - 1, now - window),
                   entry("live", true, now + window, now),
                   entry("unprocessed", false, 0, now - 10 * window),
                   entry("old-format-stale", true, 0, now - 2 * window),
                   entry("old-format-fresh", true, 0, now),
                   entry("forever", true, INT64_MAX, now - 10 * window),
                   entry("older-version", true, now - 1, now - window)},
                  true)
              .is_ok());
  for (const char* id : {"expired", "live", "unprocessed", "old-format-stale", "older-version"})
    CHECK_MESSAGE(has(s, id), id);
  // An entry written before expiry existed answers with the default window
  // counted from when it was written.
  auto stale = s.find_message(7, "old-format-stale", "agent 7");
  REQUIRE(stale.is_ok());
  REQUIRE(stale->has_value());
  CHECK((*stale)->expires_ms > 0);
  CHECK_FALSE((*stale)->live(now));
  auto fresh = s.find_message(7, "old-format-fresh", "agent 7");
  REQUIRE(fresh.is_ok());
  CHECK((*fresh)->live(now));

  REQUIRE(s.compact(p::family::dedupe).is_ok());
  CHECK_FALSE(has(s, "expired"));
  CHECK_FALSE(has(s, "old-format-stale"));  // written before expiry existed: the default window
  CHECK_FALSE(has(s, "older-version"));     // its first version does not come back
  CHECK(has(s, "live"));
  CHECK(has(s, "unprocessed"));  // its message still waits in the inbox
  CHECK(has(s, "old-format-fresh"));
  CHECK(has(s, "forever"));
}

TEST_CASE("a processed id answers retries until it expires") {
  const int64_t now = wall_ms();
  CHECK(p::dedupe_entry{1, true, nullptr, now + 10}.live(now));
  CHECK_FALSE(p::dedupe_entry{1, true, nullptr, now}.live(now));
  CHECK(p::dedupe_entry{1, false, nullptr, now - 10}.live(now));  // not processed yet
  CHECK(p::dedupe_entry{1, true, nullptr, 0}.live(now));          // written before expiry
  auto round =
      p::decode_dedupe_entry(p::encode(p::dedupe_entry{3, true, {{"a", 1}}, 42}, now), "x");
  REQUIRE(round.is_ok());
  CHECK(round->expires_ms == 42);
  CHECK(round->reply == nlohmann::json{{"a", 1}});
}
