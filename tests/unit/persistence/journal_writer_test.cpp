#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "persistence/journal_sink.hpp"
#include "persistence/journal_writer.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/store.hpp"
#include "support/faulty_sink.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using keel::code;
namespace p = keel::persistence;

namespace {

std::unique_ptr<p::store> open_store(const keel::test::temp_dir& dir) {
  auto r = p::store::open({dir.str(), 8 << 20, true});
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return std::move(r).value();
}

// Keys are ledger entries (agent = thread + 1, seq = i) so they can be read
// back through store::read_ledger.
std::string value_for(uint64_t agent, uint64_t seq, const std::string& version = "v1") {
  return p::encode_record(
      {1, 0, std::to_string(agent) + "/" + std::to_string(seq) + "/" + version});
}

p::write_set put(uint64_t agent, uint64_t seq, const std::string& version = "v1") {
  return {{p::family::ledger, false, p::agent_seq_key(agent, seq), value_for(agent, seq, version)}};
}

// The payload stored under (agent, seq), or "" when the key is absent.
std::string read_payload(p::store& db, uint64_t agent, uint64_t seq) {
  auto r = db.read_ledger(agent, seq, 1, "test");
  REQUIRE(r.is_ok());
  if (r->empty() || r->front().first != seq) return "";
  return r->front().second.payload;
}

}  // namespace

TEST_CASE("group commit: concurrent submits are each durable and called back exactly once") {
  constexpr int threads = 8;
  constexpr int per_thread = 500;
  constexpr int total = threads * per_thread;
  keel::test::temp_dir dir("keel-journal");
  auto db = open_store(dir);

  std::vector<std::atomic<int>> calls(total);
  std::vector<std::atomic<int>> ok_calls(total);
  std::atomic<int> visible_in_callback{0};
  std::vector<int> last_seen_per_thread(threads, -1);  // touched only by the writer thread
  std::atomic<int> out_of_order{0};

  {
    p::journal_writer jw(*db, /*sync=*/true);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          const auto agent = static_cast<uint64_t>(t + 1);
          const auto seq = static_cast<uint64_t>(i);
          const int slot = t * per_thread + i;
          jw.submit(put(agent, seq), [&, t, i, slot, agent, seq](const keel::status& s) {
            calls[static_cast<std::size_t>(slot)].fetch_add(1);
            if (s.is_ok()) ok_calls[static_cast<std::size_t>(slot)].fetch_add(1);
            // The callback runs only once the write is applied.
            auto r = db->read_ledger(agent, seq, 1, "cb");
            if (r.is_ok() && r->size() == 1 && r->front().first == seq) visible_in_callback++;
            // One submitter's writes complete in its submission order.
            auto& last = last_seen_per_thread[static_cast<std::size_t>(t)];
            if (i <= last) out_of_order++;
            last = i;
          });
        }
      });
    for (auto& th : ts) th.join();
    jw.stop();

    CHECK(jw.stats().submits.load() == total);
    CHECK(jw.stats().ops.load() == total);
    CHECK(jw.stats().failures.load() == 0);
    CHECK(jw.stats().batches.load() >= 1);
    CHECK(jw.stats().batches.load() <= total);
    CHECK(jw.stats().batch_submits.sum() == total);
    CHECK(jw.stats().commit_ns.count() == total);
    MESSAGE("batches for ", total, " submits: ", jw.stats().batches.load());
  }

  int not_once = 0, not_ok = 0;
  for (int i = 0; i < total; ++i) {
    if (calls[static_cast<std::size_t>(i)].load() != 1) ++not_once;
    if (ok_calls[static_cast<std::size_t>(i)].load() != 1) ++not_ok;
  }
  CHECK(not_once == 0);
  CHECK(not_ok == 0);
  CHECK(visible_in_callback.load() == total);
  CHECK(out_of_order.load() == 0);

  auto check_all_readable = [&](p::store& s) {
    for (int t = 0; t < threads; ++t) {
      auto agent = static_cast<uint64_t>(t + 1);
      auto r = s.read_ledger(agent, 0, per_thread + 10, "check");
      REQUIRE(r.is_ok());
      REQUIRE(r->size() == per_thread);
      for (int i = 0; i < per_thread; ++i) {
        const auto& [seq, rec] = (*r)[static_cast<std::size_t>(i)];
        if (seq != static_cast<uint64_t>(i) ||
            rec.payload != std::to_string(agent) + "/" + std::to_string(i) + "/v1") {
          CAPTURE(agent);
          CAPTURE(i);
          FAIL("a submitted key is missing or wrong");
        }
      }
    }
  };
  SUBCASE("readable after stop") {
    check_all_readable(*db);
  }
  SUBCASE("readable after reopen") {
    db.reset();
    auto reopened = open_store(dir);
    check_all_readable(*reopened);
  }
}

TEST_CASE("a submit after stop() is called back at once with unavailable") {
  keel::test::temp_dir dir("keel-journal");
  auto db = open_store(dir);
  p::journal_writer jw(*db, /*sync=*/false);
  jw.stop();
  int called = 0;
  keel::status got;
  jw.submit(put(1, 1), [&](const keel::status& s) {
    ++called;
    got = s;
  });
  CHECK(called == 1);  // synchronously, on the submitting thread
  CHECK(got.error_code() == code::unavailable);
  CHECK(read_payload(*db, 1, 1).empty());  // nothing was written
  CHECK(jw.stats().submits.load() == 0);

  SUBCASE("stop is idempotent") {
    jw.stop();
    jw.submit(put(1, 2), [&](const keel::status& s) {
      ++called;
      got = s;
    });
    CHECK(called == 2);
    CHECK(got.error_code() == code::unavailable);
  }
}

TEST_CASE("stop() drains every write queued before it") {
  keel::test::temp_dir dir("keel-journal");
  auto db = open_store(dir);
  std::atomic<int> done{0};
  {
    p::journal_writer jw(*db, /*sync=*/false);
    for (uint64_t i = 0; i < 1000; ++i)
      jw.submit(put(9, i), [&](const keel::status& s) {
        if (s.is_ok()) done++;
      });
    jw.stop();
    CHECK(done.load() == 1000);
  }
  CHECK(*db->last_ledger_seq(9) == 999);
}

TEST_CASE("later submits of the same key from one thread win") {
  keel::test::temp_dir dir("keel-journal");
  auto db = open_store(dir);
  constexpr uint64_t keys = 300;
  {
    p::journal_writer jw(*db, /*sync=*/false);
    auto ignore = [](const keel::status&) {};
    // Alternating keys: some pairs land in one batch, some straddle two.
    for (uint64_t k = 0; k < keys; ++k) {
      jw.submit(put(5, k, "old"), ignore);
      jw.submit(put(5, k, "new"), ignore);
    }
    // A put followed by an erase leaves nothing behind.
    jw.submit(put(6, 1, "old"), ignore);
    jw.submit({{p::family::ledger, true, p::agent_seq_key(6, 1), ""}}, ignore);
    // An erase followed by a put leaves the put.
    jw.submit({{p::family::ledger, true, p::agent_seq_key(6, 2), ""}}, ignore);
    jw.submit(put(6, 2, "new"), ignore);
    // Within one write_set too.
    jw.submit({put(6, 3, "old")[0], put(6, 3, "new")[0]}, ignore);
    jw.stop();
  }
  for (uint64_t k = 0; k < keys; ++k) {
    if (read_payload(*db, 5, k) != "5/" + std::to_string(k) + "/new") {
      CAPTURE(k);
      FAIL("an earlier write overwrote a later one");
    }
  }
  CHECK(read_payload(*db, 6, 1).empty());
  CHECK(read_payload(*db, 6, 2) == "6/2/new");
  CHECK(read_payload(*db, 6, 3) == "6/3/new");
}

TEST_CASE("a lone submit is called back without waiting for stop() and sees its write") {
  keel::test::temp_dir dir("keel-journal");
  auto db = open_store(dir);
  p::journal_writer jw(*db, /*sync=*/true);
  keel::test::future_value<std::pair<bool, std::string>> seen;
  jw.submit(put(2, 7), [&](const keel::status& s) {
    auto r = db->read_ledger(2, 7, 1, "cb");
    std::string payload = r.is_ok() && r->size() == 1 ? r->front().second.payload : "";
    seen.set({s.is_ok(), payload});
  });
  auto v = seen.wait();
  REQUIRE(v.has_value());
  CHECK(v->first);
  CHECK(v->second == "2/7/v1");
  CHECK(jw.stats().batches.load() == 1);
  jw.stop();
}

TEST_CASE("a failed write fails its own batch only: later writes succeed, never merged with it") {
  using fault = keel::test::faulty_sink::fault;
  keel::test::temp_dir dir("keel-journal");
  auto db = open_store(dir);
  fault kind = fault::no_space;
  code expected = code::no_space;
  SUBCASE("a write that finds the disk full (ENOSPC)") {}
  SUBCASE("an fsync that fails") {
    kind = fault::fsync_failed;
    expected = code::unavailable;
  }
  CAPTURE(static_cast<int>(kind));
  auto owned = std::make_unique<keel::test::faulty_sink>(std::make_unique<p::store_sink>(*db));
  keel::test::faulty_sink& sink = *owned;
  p::journal_writer jw(std::move(owned), /*sync=*/true);
  using keel::test::future_value;
  future_value<keel::status> first, a, b, c;

  // The first write blocks in the sink, so that A and B queue behind it
  // and go to the sink together, as one batch; that batch fails.
  sink.hold();
  jw.submit(put(1, 1), [&](const keel::status& s) { first.set(s); });
  REQUIRE(sink.wait_held());
  jw.submit(put(2, 1), [&](const keel::status& s) { a.set(s); });
  jw.submit(put(2, 2), [&](const keel::status& s) { b.set(s); });
  sink.fail_when(kind, [](const p::write_set& ops) {
    return !ops.empty() && ops.front().key == p::agent_seq_key(2, 1);
  });
  sink.release();
  auto fs = first.wait(), as = a.wait(), bs = b.wait();
  REQUIRE(fs);
  REQUIRE(as);
  REQUIRE(bs);
  CHECK(fs->is_ok());
  REQUIRE_FALSE(as->is_ok());
  REQUIRE_FALSE(bs->is_ok());
  CHECK(as->error_code() == expected);
  CHECK(bs->error_code() == expected);

  // The next write is a batch of its own, and succeeds.
  jw.submit(put(3, 1), [&](const keel::status& s) { c.set(s); });
  auto cs = c.wait();
  REQUIRE(cs);
  CHECK_MESSAGE(cs->is_ok(), cs->to_string());
  CHECK(sink.written() == std::vector<std::size_t>{1, 1});
  CHECK(sink.failed() == std::vector<std::size_t>{2});
  CHECK(read_payload(*db, 1, 1) == "1/1/v1");
  CHECK(read_payload(*db, 3, 1) == "3/1/v1");
  if (kind == fault::no_space) {
    // Nothing of the refused batch was applied.
    CHECK(read_payload(*db, 2, 1).empty());
    CHECK(read_payload(*db, 2, 2).empty());
  }
  CHECK(jw.stats().failures.load() == 1);
}
