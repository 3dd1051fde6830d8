// The group state machine under libraft's deterministic in-memory cluster
// (raft/fixture.h): three servers, each with its own store in a temp dir.
#include "net/raft/group_fsm.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.hpp"
#include "net/raft/entry.hpp"
#include "support/faulty_sink.hpp"
#include "support/temp_dir.hpp"

extern "C" {
#include <raft/fixture.h>
}

using keel::code;
namespace p = keel::persistence;
namespace kr = keel::raft;

namespace {

constexpr kr::group_id group = 5;
constexpr unsigned max_ms = 20'000;

// A server's disk: outlives one fixture, so a second fixture can reopen it.
struct disk {
  keel::test::temp_dir dir{"keel-fsm"};
  std::unique_ptr<p::store> db;
  disk() {
    auto r = p::store::open({dir.str(), 8 << 20, true});
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    db = std::move(r).value();
  }
};

// What a proposer learned from its raft_apply callback.
struct proposed {
  std::optional<int> status;
  std::optional<kr::apply_report> report;
};

void on_applied(struct raft_apply* req, int status, void* result) {
  auto* out = static_cast<proposed*>(req->data);
  out->status = status;
  if (status == 0) out->report = kr::group_fsm::report_of(req, result);
  delete req;
}

struct cluster {
  std::vector<disk>& disks;
  raft_fixture f{};
  std::vector<std::unique_ptr<keel::test::faulty_sink>> sinks;
  std::vector<std::unique_ptr<kr::group_fsm>> fsms;
  std::vector<std::unique_ptr<proposed>> outcomes;

  explicit cluster(std::vector<disk>& d, unsigned snapshot_threshold = 0) : disks(d) {
    REQUIRE(raft_fixture_initialize(&f) == 0);
    for (auto& dk : disks) {
      sinks.push_back(
          std::make_unique<keel::test::faulty_sink>(std::make_unique<p::store_sink>(*dk.db)));
      auto fsm = kr::group_fsm::open(*dk.db, group, sinks.back().get());
      REQUIRE_MESSAGE(fsm.is_ok(), fsm.error().to_string());
      fsms.push_back(std::move(fsm).value());
      REQUIRE(raft_fixture_grow(&f, fsms.back()->fsm()) == 0);
      struct raft* r = raft_fixture_get(&f, static_cast<unsigned>(fsms.size() - 1));
      fsms.back()->attach(r);
      if (snapshot_threshold > 0) {
        raft_set_snapshot_threshold(r, snapshot_threshold);
        raft_set_snapshot_trailing(r, 1);
      }
    }
    raft_configuration conf;
    REQUIRE(raft_fixture_configuration(&f, static_cast<unsigned>(disks.size()), &conf) == 0);
    REQUIRE(raft_fixture_bootstrap(&f, &conf) == 0);
    raft_configuration_close(&conf);
    REQUIRE(raft_fixture_start(&f) == 0);
    REQUIRE(raft_fixture_step_until_has_leader(&f, max_ms));
  }
  ~cluster() { raft_fixture_close(&f); }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  unsigned leader() { return raft_fixture_leader_index(&f); }
  struct raft* server(unsigned i) {
    return raft_fixture_get(&f, i);
  }
  raft_term term() { return raft_fixture_get(&f, leader())->current_term; }

  // Proposes on the current leader; returns the entry's index.
  std::pair<raft_index, proposed*> propose(const kr::entry& e) {
    auto b = kr::encode_for_raft(e);
    REQUIRE(b.is_ok());
    outcomes.push_back(std::make_unique<proposed>());
    auto* req = new kr::apply_request{};
    req->data = outcomes.back().get();
    int rv = raft_apply(server(leader()), req, &*b, 1, on_applied);
    if (rv != 0) {
      raft_free(b->base);
      delete req;
      FAIL("raft_apply: " << kr::error_text(rv));
    }
    return {req->index, outcomes.back().get()};
  }
  // Proposes and steps until servers `on` (all when empty) applied it.
  proposed* commit(const kr::entry& e, std::vector<unsigned> on = {}) {
    auto [index, out] = propose(e);
    if (on.empty())
      for (unsigned i = 0; i < disks.size(); ++i) on.push_back(i);
    for (unsigned i : on) REQUIRE(raft_fixture_step_until_applied(&f, i, index, max_ms));
    return out;
  }
};

kr::entry begin(uint64_t term) {
  return {kr::entry_kind::leader_begin, term, {}, 0};
}

kr::entry writes(uint64_t term, uint64_t id, const std::string& tag) {
  kr::entry e{kr::entry_kind::writes, term, {}, 0};
  e.proposals.push_back({id,
                         {{p::family::ledger, false, "l/" + tag, "event " + tag},
                          {p::family::agents, false, "a/" + tag, "meta " + tag}}});
  e.proposals.push_back({id + 1, {{p::family::inbox, true, "i/" + tag, ""}}});
  return e;
}

using pairs = std::vector<std::pair<std::string, std::string>>;

pairs scan(p::store& db, p::family f, std::string_view prefix = {}) {
  auto r = db.scan(f, prefix, prefix, 1000);
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

// Every key of every family but raft, and the group's state machine keys.
pairs everything(p::store& db) {
  pairs out;
  for (int i = 0; i < p::family_count; ++i) {
    if (static_cast<p::family>(i) == p::family::raft) continue;
    for (auto& kv : scan(db, static_cast<p::family>(i)))
      out.emplace_back(std::to_string(i) + ":" + kv.first, kv.second);
  }
  for (auto& kv : scan(db, p::family::raft, kr::applied_key(group).substr(0, 5)))
    out.emplace_back("raft:" + kv.first, kv.second);
  return out;
}

uint64_t stored_applied(p::store& db) {
  auto v = db.get(p::family::raft, kr::applied_key(group));
  REQUIRE(v.is_ok());
  REQUIRE(v->has_value());
  return keel::get_u64_be((*v)->data());
}

}  // namespace

TEST_CASE("a write set proposed on the leader is applied on all three stores, byte for byte") {
  std::vector<disk> disks(3);
  cluster c(disks);
  const uint64_t t = c.term();
  CHECK(c.commit(begin(t))->report->outcome == kr::apply_outcome::applied);
  for (auto& fsm : c.fsms) CHECK(fsm->term_of_record() == t);

  auto [index, out] = c.propose(writes(t, 100, "x"));
  for (unsigned i = 0; i < 3; ++i) REQUIRE(raft_fixture_step_until_applied(&c.f, i, index, max_ms));
  REQUIRE(out->status == 0);
  REQUIRE(out->report.has_value());
  CHECK(out->report->index == index);
  CHECK(out->report->outcome == kr::apply_outcome::applied);

  const pairs ledger{{"l/x", "event x"}};
  for (unsigned i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(scan(*disks[i].db, p::family::ledger) == ledger);
    CHECK(everything(*disks[i].db) == everything(*disks[0].db));
    CHECK(c.fsms[i]->applied_index() == index);
    CHECK(stored_applied(*disks[i].db) == index);
    // The proposals' three ops and the applied index went in one batch.
    CHECK(c.sinks[i]->written() == std::vector<std::size_t>{2, 4});
  }
}

TEST_CASE("writes stamped with a term the group has moved on from are fenced on every replica") {
  std::vector<disk> disks(3);
  cluster c(disks);
  const uint64_t t1 = c.term();
  c.commit(begin(t1));
  c.commit(writes(t1, 1, "old"));

  raft_fixture_depose(&c.f);
  REQUIRE(raft_fixture_step_until_has_leader(&c.f, max_ms));
  const uint64_t t2 = c.term();
  REQUIRE(t2 > t1);
  c.commit(begin(t2));

  proposed* stale = c.commit(writes(t1, 3, "stale"));
  REQUIRE(stale->status == 0);
  REQUIRE(stale->report.has_value());
  CHECK(stale->report->outcome == kr::apply_outcome::fenced);
  proposed* fresh = c.commit(writes(t2, 5, "fresh"));
  CHECK(fresh->report->outcome == kr::apply_outcome::applied);

  const pairs ledger{{"l/fresh", "event fresh"}, {"l/old", "event old"}};
  for (unsigned i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(scan(*disks[i].db, p::family::ledger) == ledger);
    CHECK(c.fsms[i]->term_of_record() == t2);
    CHECK(c.fsms[i]->applied_index() == fresh->report->index);
    // The fenced entry still advanced the applied index, alone.
    CHECK(c.sinks[i]->written() == std::vector<std::size_t>{2, 4, 2, 1, 4});
  }
}

TEST_CASE("a follower killed and revived applies each entry once and catches up") {
  std::vector<disk> disks(3);
  cluster c(disks);
  const uint64_t t = c.term();
  c.commit(begin(t));
  c.commit(writes(t, 1, "before"));
  const unsigned leader = c.leader();
  const unsigned down = (leader + 1) % 3, up = (leader + 2) % 3;
  const uint64_t applied_before = c.fsms[down]->applied_index();

  raft_fixture_kill(&c.f, down);
  proposed* later = c.commit(writes(t, 3, "after"), {leader, up});
  CHECK(c.fsms[down]->applied_index() == applied_before);

  raft_fixture_revive(&c.f, down);
  REQUIRE(raft_fixture_step_until_applied(&c.f, down, later->report->index, max_ms));
  CHECK(c.fsms[down]->applied_index() == later->report->index);
  CHECK(everything(*disks[down].db) == everything(*disks[leader].db));
  CHECK(c.sinks[down]->written() == c.sinks[leader]->written());
  CHECK(c.sinks[down]->written().size() == 3);
}

TEST_CASE(
    "a state machine reopened over its store skips entries up to the applied index it stored") {
  std::vector<disk> disks(3);
  uint64_t stored = 0;
  {
    cluster c(disks);
    c.commit(begin(c.term()));
    stored = c.commit(writes(c.term(), 1, "first"))->report->index;
  }
  // A new cluster over the same stores: its log starts again at index 1,
  // as libraft re-applying from an older snapshot after a restart would.
  cluster c(disks);
  for (auto& fsm : c.fsms) CHECK(fsm->applied_index() == stored);
  std::vector<proposed*> outs;
  raft_index last = 0;
  for (int i = 0; last <= stored + 1 && i < 10; ++i) {
    outs.push_back(
        c.commit(i == 0 ? begin(c.term()) : writes(c.term(), 10 + i, std::to_string(i))));
    last = outs.back()->report->index;
  }
  REQUIRE(last > stored);
  for (proposed* o : outs) {
    CAPTURE(o->report->index);
    CHECK((o->report->index <= stored) ==
          (o->report->outcome == kr::apply_outcome::already_applied));
  }
  for (unsigned i = 0; i < 3; ++i) {
    CHECK(c.fsms[i]->applied_index() == last);
    // Only the entries past the stored index were written.
    CHECK(c.sinks[i]->written().size() == static_cast<std::size_t>(last - stored));
    CHECK(everything(*disks[i].db) == everything(*disks[0].db));
  }
}

TEST_CASE("a deposed leader's pending proposals fail and the new leader's leader_begin applies") {
  std::vector<disk> disks(3);
  cluster c(disks);
  const uint64_t t1 = c.term();
  c.commit(begin(t1));
  const unsigned old = c.leader();
  auto [lost_index, lost] = c.propose(writes(t1, 7, "lost"));
  // Saturated links drop messages silently; the fixture then no longer
  // counts the old leader when it looks for a stable new one.
  for (unsigned i = 0; i < 3; ++i)
    if (i != old) {
      raft_fixture_saturate(&c.f, old, i);
      raft_fixture_saturate(&c.f, i, old);
    }
  REQUIRE(raft_fixture_step_until_state_is(&c.f, old, RAFT_FOLLOWER, max_ms));
  REQUIRE(lost->status.has_value());
  CHECK(*lost->status == RAFT_LEADERSHIPLOST);
  CHECK_FALSE(lost->report.has_value());

  REQUIRE(raft_fixture_step_until_has_leader(&c.f, max_ms));
  const unsigned next = c.leader();
  REQUIRE(next != old);
  const uint64_t t2 = c.term();
  CHECK(t2 > t1);
  const unsigned other = 3 - old - next;
  c.commit(begin(t2), {next, other});
  CHECK(c.fsms[next]->term_of_record() == t2);
  CHECK(c.fsms[other]->term_of_record() == t2);
  CHECK(c.fsms[old]->term_of_record() == t1);

  for (unsigned i = 0; i < 3; ++i)
    if (i != old) {
      raft_fixture_desaturate(&c.f, old, i);
      raft_fixture_desaturate(&c.f, i, old);
    }
  REQUIRE(raft_fixture_step_until_applied(&c.f, old, c.fsms[next]->applied_index(), max_ms));
  for (unsigned i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(c.fsms[i]->term_of_record() == t2);
    CHECK(scan(*disks[i].db, p::family::ledger).empty());
  }
  (void)lost_index;
}

TEST_CASE("a write the store refuses leaves nothing behind, and the leader applies it on a retry") {
  std::vector<disk> disks(3);
  cluster c(disks);
  const uint64_t t = c.term();
  c.commit(begin(t));
  const unsigned leader = c.leader();
  const unsigned follower = (leader + 1) % 3;

  SUBCASE("on the leader, libraft tries the entry again and then calls the proposer back") {
    c.sinks[leader]->fail(keel::test::faulty_sink::fault::no_space);
    proposed* out = c.commit(writes(t, 1, "one"));
    CHECK(c.sinks[leader]->failed() == std::vector<std::size_t>{4});
    REQUIRE(out->status == 0);
    CHECK(out->report->outcome == kr::apply_outcome::applied);
    CHECK(c.fsms[leader]->last_error().is_ok());
    for (unsigned i = 0; i < 3; ++i) {
      CAPTURE(i);
      CHECK(c.sinks[i]->written() == std::vector<std::size_t>{2, 4});
      CHECK(everything(*disks[i].db) == everything(*disks[leader].db));
    }
  }
  SUBCASE("on a follower, nothing of the entry is written") {
    const uint64_t before = c.fsms[follower]->applied_index();
    c.sinks[follower]->fail(keel::test::faulty_sink::fault::no_space);
    c.propose(writes(t, 1, "one"));
    for (int i = 0; i < 1000 && c.sinks[follower]->failed().empty(); ++i) raft_fixture_step(&c.f);
    REQUIRE(c.sinks[follower]->failed().size() == 1);
    CHECK(c.fsms[follower]->applied_index() == before);
    CHECK(stored_applied(*disks[follower].db) == before);
    CHECK(scan(*disks[follower].db, p::family::ledger).empty());
    CHECK(c.fsms[follower]->last_error().error_code() == code::no_space);
    // libraft 0.15 met the failure while handling the leader's AppendEntries
    // and stopped this server's instance: the node has to close the group
    // and start it again once the store takes writes.
    CHECK(raft_state(c.server(follower)) == RAFT_UNAVAILABLE);
  }
}

TEST_CASE("the snapshot marker names the group, its applied index and its term of record") {
  const kr::snapshot_marker m{group, 42, 7};
  const std::string bytes = kr::encode_marker(m);
  CHECK(bytes.size() == 21);
  auto d = kr::decode_marker(bytes);
  REQUIRE(d.is_ok());
  CHECK(d->group == group);
  CHECK(d->applied == 42);
  CHECK(d->term_of_record == 7);
  CHECK(kr::decode_marker(bytes.substr(1)).error().error_code() == code::corruption);
  std::string other = bytes;
  other[0] = 2;
  CHECK(kr::decode_marker(other).error().error_code() == code::corruption);

  disk dk;
  auto fsm = kr::group_fsm::open(*dk.db, group);
  REQUIRE(fsm.is_ok());
  raft_fsm* f = (*fsm)->fsm();
  raft_buffer* bufs = nullptr;
  unsigned n = 0;
  REQUIRE(f->snapshot(f, &bufs, &n) == 0);
  REQUIRE(n == 1);
  auto taken = kr::decode_marker({static_cast<const char*>(bufs[0].base), bufs[0].len});
  REQUIRE(taken.is_ok());
  CHECK(taken->group == group);
  CHECK(taken->applied == 0);
  REQUIRE(f->snapshot_finalize(f, &bufs, &n) == 0);
  CHECK(bufs == nullptr);

  SUBCASE("a marker of another group is refused") {
    raft_buffer b{raft_malloc(21), 21};
    std::memcpy(b.base, kr::encode_marker({group + 1, 0, 0}).data(), 21);
    CHECK(f->restore(f, &b) == RAFT_CORRUPT);
    raft_free(b.base);  // a failed restore leaves the buffer to libraft
  }
}

namespace {

// Copies every key but the raft log and io state: what streaming the
// group's ranges does before a snapshot is installed.
void stream(p::store& from, p::store& to) {
  p::write_set ops;
  for (int i = 0; i < p::family_count; ++i) {
    const auto f = static_cast<p::family>(i);
    if (f == p::family::raft) continue;
    for (auto& kv : scan(from, f)) ops.push_back({f, false, kv.first, kv.second});
  }
  for (auto& kv : scan(from, p::family::raft, kr::applied_key(group).substr(0, 5)))
    ops.push_back({p::family::raft, false, kv.first, kv.second});
  REQUIRE(to.write(ops, false).is_ok());
}

}  // namespace

TEST_CASE("a follower behind the leader's log gets the snapshot marker and checks its store") {
  std::vector<disk> disks(3);
  cluster c(disks, /*snapshot_threshold=*/4);
  const uint64_t t = c.term();
  c.commit(begin(t));
  const unsigned leader = c.leader();
  const unsigned behind = (leader + 1) % 3, other = (leader + 2) % 3;
  for (unsigned i = 0; i < 3; ++i)
    if (i != behind) {
      raft_fixture_saturate(&c.f, behind, i);
      raft_fixture_saturate(&c.f, i, behind);
    }
  proposed* last = nullptr;
  for (int i = 0; i < 10; ++i)
    last = c.commit(writes(t, 10 * static_cast<uint64_t>(i), std::to_string(i)), {leader, other});
  // The leader's log no longer holds what the follower misses.
  REQUIRE(c.server(leader)->log.snapshot.last_index > c.fsms[behind]->applied_index() + 1);
  const std::size_t writes_before = c.sinks[behind]->written().size();

  auto reconnect = [&] {
    for (unsigned i = 0; i < 3; ++i)
      if (i != behind) {
        raft_fixture_desaturate(&c.f, behind, i);
        raft_fixture_desaturate(&c.f, i, behind);
      }
  };

  SUBCASE("without the group's data streamed in, restore refuses the marker") {
    // Called directly: libraft 0.15 loses the one-element buffer array of an
    // InstallSnapshot whose restore fails, which a leak check would report.
    const std::string m = kr::encode_marker({group, last->report->index, t});
    raft_buffer b{raft_malloc(m.size()), m.size()};
    std::memcpy(b.base, m.data(), m.size());
    raft_fsm* f = c.fsms[behind]->fsm();
    CHECK(f->restore(f, &b) == RAFT_INVALID);
    raft_free(b.base);  // a failed restore leaves the buffer to its caller
    CHECK(c.fsms[behind]->last_error().error_code() == code::conflict);
    CHECK(c.fsms[behind]->last_error().message().find("streamed") != std::string::npos);
    CHECK(c.sinks[behind]->written().size() == writes_before);
    reconnect();
  }
  SUBCASE("with the group's data streamed in, restore accepts it and later entries apply") {
    stream(*disks[leader].db, *disks[behind].db);
    reconnect();
    REQUIRE(raft_fixture_step_until_applied(&c.f, behind, last->report->index, max_ms));
    CHECK(c.fsms[behind]->last_error().is_ok());
    // Caught up through the snapshot, not by applying the missed entries.
    CHECK(c.sinks[behind]->written().size() == writes_before);
    proposed* after = c.commit(writes(t, 1000, "after"));
    CHECK(c.fsms[behind]->applied_index() == after->report->index);
    CHECK(everything(*disks[behind].db) == everything(*disks[leader].db));
  }
}
