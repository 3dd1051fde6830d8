// Followers that cannot catch up from the log (net/raft/io.hpp, "Catching
// up"): three nodes' groups in one process (groups_harness.hpp), whose
// switchboard also carries state fetches, with a small snapshot threshold
// so the leader's log soon starts past what a stopped follower holds.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.hpp"
#include "groups_harness.hpp"
#include "net/raft/identity.hpp"
#include "net/raft/keys.hpp"
#include "persistence/keys.hpp"

namespace {

constexpr raft::group_id catch_up_groups = 2;
using kvs = std::vector<std::pair<std::string, std::string>>;

// Agent names "g<digit>-..." are in group <digit>.
raft::group_id group_of_name(std::string_view name) {
  return name.size() > 1 ? static_cast<raft::group_id>(name[1] - '0') : 0;
}

// Nodes with two groups, a small log and many small state pages; the
// leader resends a snapshot after `install_snapshot_timeout_ms`.
cluster catch_up_cluster(uint32_t install_snapshot_timeout_ms = 2000) {
  return cluster([install_snapshot_timeout_ms](node& x) {
    x.group_total = catch_up_groups;
    x.tune = [install_snapshot_timeout_ms](raft::groups_options& o) {
      o.snapshot_threshold = 32;
      o.snapshot_trailing = 8;
      o.install_snapshot_timeout_ms = install_snapshot_timeout_ms;
      o.group_of = group_of_name;
      o.fetch_page_bytes = 2048;  // many pages
      o.fetch_page_timeout_ms = 5000;
    };
  });
}

// Node x's keys of group g, family by family, as its store holds them now.
std::map<std::string, kvs> state_of(node& x, raft::group_id g) {
  std::map<std::string, kvs> out;
  std::string tag;
  put_u64_be(tag, uint64_t{g + 1} << 48);
  tag.resize(2);  // the group tag: the agent id's top 16 bits
  for (family f : {family::ledger, family::inbox, family::timers, family::agents}) {
    auto all = x.db->scan(f, "", "", 100000);
    REQUIRE(all.is_ok());
    kvs mine;
    for (auto& kv : *all) {
      const std::string& k = kv.first;
      bool in = f == family::agents   ? group_of_name(k) == g
                : f == family::timers ? k.substr(8, 2) == tag
                                      : k.substr(0, 2) == tag;
      if (in) mine.push_back(kv);
    }
    out[persistence::family_name(f)] = std::move(mine);
  }
  for (const auto& key : {raft::applied_key(g), raft::term_of_record_key(g),
                          raft::reserved_ids_key(g), raft::fetching_key(g)}) {
    auto v = x.db->get(family::raft, key);
    REQUIRE(v.is_ok());
    out["raft"].push_back({key, v->value_or("<none>")});
  }
  return out;
}

// Writes `count` entries of agent data to group g through its leader: a
// ledger event, an inbox entry, a timer, an agent record and a blob each.
void write_entries(cluster& c, raft::group_id g, int from, int count) {
  for (int i = from; i < from + count; ++i) {
    node* l = c.leader(g);
    const uint64_t agent = (uint64_t{g + 1} << 48) | static_cast<uint64_t>(i % 7 + 1);
    std::string seq_key;
    put_u64_be(seq_key, agent);
    put_u64_be(seq_key, static_cast<uint64_t>(i));
    const std::string n = std::to_string(i);
    persistence::write_set ops{
        {family::ledger, false, seq_key, "event " + n + std::string(200, 'e')},
        {family::inbox, false, seq_key, "message " + n},
        {family::timers, false, persistence::timer_key(1000 + i, agent, 1), "timer " + n},
        {family::agents, false, "g" + std::to_string(g) + "-agent-" + n, "meta " + n},
        {family::blobs, false, "blob-" + std::to_string(g) + "-" + n, "content " + n}};
    // A consumed inbox entry: erased by a later entry, so a copy that
    // missed the erase would show.
    if (i % 5 == 4) ops.push_back({family::inbox, true, seq_key, ""});
    auto got = std::make_shared<test::future_value<status>>();
    l->gs->propose(g, *l->gs->leading(g), std::move(ops), [got](const status& s) { got->set(s); });
    auto s = got->wait(10s);
    REQUIRE_MESSAGE(s.has_value(), "a proposal did not end in time");
    if (!s->is_ok()) --i;  // leadership moved: write it again to the new leader
  }
}

// Waits until x holds the same group state as g's leader, family by family
// (a new leader's id reservation may still be on its way), then checks it.
void check_same_state(cluster& c, node& x, raft::group_id g) {
  node* l = c.leader(g);
  CAPTURE(g);
  CAPTURE(x.address);
  test::eventually([&] { return state_of(*l, g) == state_of(x, g); }, 15s);
  auto want = state_of(*l, g);
  auto got = state_of(x, g);
  for (auto& [f, kv] : want) {
    CAPTURE(f);
    CHECK(kv.size() == got[f].size());
    CHECK(kv == got[f]);
  }
  CHECK(want["ledger"].size() > 0);
}

}  // namespace

TEST_CASE(
    "a follower that missed more than the leader's log keeps catches up from a streamed state "
    "and then takes new entries") {
  cluster c = catch_up_cluster();
  for (raft::group_id g = 0; g < catch_up_groups; ++g) write_entries(c, g, 0, 5);
  node* gone = c.n[2].get();
  gone->stop();
  for (raft::group_id g = 0; g < catch_up_groups; ++g) write_entries(c, g, 5, 120);

  gone->start();
  for (raft::group_id g = 0; g < catch_up_groups; ++g) {
    CAPTURE(g);
    CHECK(test::eventually([&] { return gone->status_of(g).fetch.installed >= 1; }, 15s));
    check_same_state(c, *gone, g);
    auto f = gone->status_of(g).fetch;
    CHECK_FALSE(f.incomplete);
    CHECK(f.failed == 0);
  }
  CHECK(c.sb.fetch_count() > 2);  // many small pages

  // The log goes on from the installed state.
  for (raft::group_id g = 0; g < catch_up_groups; ++g) {
    write_entries(c, g, 125, 10);
    check_same_state(c, *gone, g);
  }
}

TEST_CASE("a member whose data directory was wiped comes back with the group's whole state") {
  cluster c = catch_up_cluster();
  for (raft::group_id g = 0; g < catch_up_groups; ++g) write_entries(c, g, 0, 60);
  node* gone = c.n[1].get();
  gone->stop();
  for (raft::group_id g = 0; g < catch_up_groups; ++g) write_entries(c, g, 60, 10);
  gone->rejoin(raft::incarnation_id(gone->id, 5));
  for (raft::group_id g = 0; g < catch_up_groups; ++g) {
    CAPTURE(g);
    CHECK(test::eventually([&] { return gone->status_of(g).fetch.installed >= 1; }, 15s));
    check_same_state(c, *gone, g);
    write_entries(c, g, 70, 5);
    check_same_state(c, *gone, g);
  }
}

TEST_CASE(
    "a member wiped after it had caught up is sent the group again at once, not after the "
    "leader's snapshot resend timeout") {
  // Ten minutes: the leaders must not wait on what they knew of the
  // member's former id (its match index); under its new id they probe it
  // from scratch.
  cluster c = catch_up_cluster(600'000);
  for (raft::group_id g = 0; g < catch_up_groups; ++g) write_entries(c, g, 0, 60);
  node* gone = c.n[1].get();
  // Every leader has seen it match its whole log.
  for (raft::group_id g = 0; g < catch_up_groups; ++g) check_same_state(c, *gone, g);
  gone->stop();
  gone->rejoin(raft::incarnation_id(gone->id, 6));
  for (raft::group_id g = 0; g < catch_up_groups; ++g) {
    CAPTURE(g);
    check_same_state(c, *gone, g);
    CHECK_FALSE(state_of(*gone, g)["ledger"].empty());  // its empty store was filled again
    write_entries(c, g, 60, 5);
    check_same_state(c, *gone, g);
  }
}

TEST_CASE(
    "a follower whose state source dies mid-stream installs nothing half done and fetches again "
    "from the new leader") {
  cluster c = catch_up_cluster();
  constexpr raft::group_id g = 0;
  // Group 1 is left idle: only group 0's fetch is in play.
  write_entries(c, g, 0, 5);
  node* old = c.leader(g);
  node* behind = nullptr;
  for (auto& x : c.n)
    if (x.get() != old) behind = x.get();
  behind->stop();
  write_entries(c, g, 5, 120);
  // The old leader still leads (nothing moved it): the fetch will ask it.
  REQUIRE(c.leader(g) == old);

  {
    std::lock_guard lk(c.sb.mu);
    c.sb.hold_after = c.sb.fetches + 3;  // three pages go through, then hold
  }
  behind->start();
  CHECK(test::eventually([&] { return c.sb.held_count() >= 1; }, 15s));
  auto mid = behind->status_of(g);
  CHECK(mid.fetch.fetching);
  CHECK(mid.fetch.incomplete);
  CHECK(mid.fetch.keys > 0);
  CHECK(mid.fetch.installed == 0);
  const uint64_t applied_mid = mid.applied_index;

  old->stop();
  c.sb.release();
  CHECK(test::eventually([&] { return behind->status_of(g).fetch.failed >= 1; }, 15s));
  // Nothing of the half state was installed: libraft's applied index did
  // not move past where it was, and the store says the data is incomplete
  // (a restart now would know it).
  const std::string mark = state_of(*behind, g)["raft"].back().second;
  auto after = behind->status_of(g);
  // (Unless the next fetch already ran: an election takes longer than this.)
  if (after.fetch.installed == 0 && !after.fetch.fetching) {
    CHECK(after.applied_index == applied_mid);
    CHECK(mark != "<none>");
  }

  // A new leader among the two left sends its own snapshot: a fresh fetch.
  node* next = c.leader(g);
  CHECK(next != old);
  CHECK(test::eventually([&] { return behind->status_of(g).fetch.installed >= 1; }, 20s));
  check_same_state(c, *behind, g);
  CHECK_FALSE(behind->status_of(g).fetch.incomplete);
  write_entries(c, g, 125, 5);
  check_same_state(c, *behind, g);
}
