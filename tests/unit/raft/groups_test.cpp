// A node's replicated groups (net/raft/groups.hpp) with three nodes in one
// process (groups_harness.hpp).
#include "net/raft/groups.hpp"

#include <doctest/doctest.h>

#include "groups_harness.hpp"

using namespace keel;
using namespace std::chrono_literals;

TEST_CASE(
    "every group gets one ready leader that all members name, and its writes reach every "
    "replica") {
  cluster c;
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    node* l = c.leader(g);
    // on_lead runs just after leading(g) is published.
    CHECK(test::eventually([&] { return l->leads(g) == 1; }, 10s));
    for (auto* x : c.all())
      CHECK(test::eventually([&] { return x->gs->leader_of(g) == l->address; }, 10s));
    uint64_t term = *l->gs->leading(g);

    auto done = propose(*l, g, term, "k" + std::to_string(g), "v" + std::to_string(g));
    CHECK(ended(done).is_ok());
    for (auto* x : c.all()) wait_blob(*x, "k" + std::to_string(g), "v" + std::to_string(g));

    // A follower answers at once: the callback has run when propose returns.
    for (auto* f : c.others(l)) {
      auto refused = propose(*f, g, term, "f", "f");
      auto s = refused->wait(0ms);
      REQUIRE(s.has_value());
      CHECK(s->error_code() == code::unavailable);
    }
    // A stale term is refused at once too (the state machine would fence it).
    auto stale = propose(*l, g, term - 1, "stale", "x");
    REQUIRE(stale->wait(0ms).has_value());
    CHECK(stale->wait(0ms)->error_code() == code::unavailable);

    CHECK(barrier(*l, g).is_ok());
    for (auto* f : c.others(l)) CHECK(barrier(*f, g).error_code() == code::unavailable);
  }
  for (auto* x : c.all()) {
    CHECK_FALSE(x->blob("f").has_value());
    CHECK_FALSE(x->blob("stale").has_value());
    std::lock_guard lk(x->seen.mu);
    CHECK(x->seen.lead_saw_wrong_term == 0);
  }
}

TEST_CASE("status shows each group's roles, terms and the leader's view of every replica") {
  cluster c;
  node* l = c.leader(1);
  uint64_t term = *l->gs->leading(1);
  for (int i = 0; i < 20; ++i)
    CHECK(ended(propose(*l, 1, term, "s" + std::to_string(i), "v")).is_ok());
  raft::group_status s;
  bool caught_up = test::eventually(
      [&] {
        s = l->status_of(1);
        if (s.replicas.size() != 3) return false;
        for (auto& r : s.replicas)
          if (r.match_index != s.last_index) return false;
        return s.applied_index == s.last_index;
      },
      10s);
  CHECK(caught_up);
  CHECK(s.role == "leader");
  CHECK(s.term == term);
  CHECK(s.leading == term);
  CHECK(s.leader == l->address);
  CHECK(s.commit_index == s.last_index);
  std::set<std::string> members;
  for (auto& r : s.replicas) members.insert(r.member);
  CHECK(members == std::set<std::string>{"n1", "n2", "n3"});
  for (auto* f : c.others(l)) {
    raft::group_status fs;
    CHECK(test::eventually(
        [&] {
          fs = f->status_of(1);
          return fs.applied_index == s.last_index;
        },
        10s));
    CHECK(fs.role == "follower");
    CHECK(fs.term == term);
    CHECK(fs.leader == l->address);
    CHECK_FALSE(fs.leading.has_value());
    CHECK(fs.replicas.empty());
  }
}

TEST_CASE(
    "a leader cut off from both followers steps down, its pending proposal fails, and it "
    "follows the new leader after the heal") {
  cluster c;
  node* old = c.leader(0);
  const uint64_t old_term = *old->gs->leading(0);
  CHECK(ended(propose(*old, 0, old_term, "before", "1")).is_ok());
  for (auto* x : c.all()) wait_blob(*x, "before", "1");

  c.isolate(old);
  // Accepted (it still leads) but it can never commit.
  auto held = propose(*old, 0, old_term, "held", "x");

  // Its lease lapses first; libraft's check-quorum steps it down after an
  // election timeout or two.
  CHECK(test::eventually([&] { return !old->gs->leading(0).has_value(); }, 10s));
  CHECK(test::eventually([&] { return old->loses(0) == 1; }, 10s));
  CHECK(test::eventually([&] { return old->status_of(0).role != "leader"; }, 10s));
  CHECK(ended(held).error_code() == code::unavailable);

  node* next = c.leader(0, c.others(old));
  const uint64_t new_term = *next->gs->leading(0);
  CHECK(new_term > old_term);
  {
    // The old leader let go (its on_lose, where a node aborts the group's
    // calls) before the new one was ready.
    std::scoped_lock lk(old->seen.mu, next->seen.mu);
    CHECK(old->seen.last_lose[0] < next->seen.last_lead[0]);
  }
  CHECK(ended(propose(*next, 0, new_term, "after", "2")).is_ok());

  c.sb.heal();
  CHECK(test::eventually([&] { return old->gs->leader_of(0) == next->address; }, 10s));
  wait_blob(*old, "after", "2");
  // The new leader still leads: the healed member did not disrupt it.
  CHECK(next->gs->leading(0) == new_term);
  CHECK(ended(propose(*next, 0, new_term, "healed", "3")).is_ok());
  for (auto* x : c.all()) wait_blob(*x, "healed", "3");
  auto reference = blobs(*next);
  for (auto* x : c.all()) {
    CAPTURE(x->address);
    CHECK_FALSE(x->blob("held").has_value());
    CHECK(blobs(*x) == reference);
    std::lock_guard lk(x->seen.mu);
    CHECK(x->seen.lose_saw_leading == 0);
  }
}

TEST_CASE(
    "agent ids stay unique across a failover, and the new leader's are above every limit "
    "the old one committed") {
  cluster c;
  constexpr raft::group_id g = 1;
  node* a = c.leader(g);
  std::vector<uint64_t> first;
  for (int i = 0; i < 5000; ++i) {
    auto id = a->gs->allocate_agent_id(g);
    REQUIRE_MESSAGE(id.is_ok(), id.error().to_string());
    first.push_back(*id);
  }
  // A follower has none to give.
  CHECK(c.others(a)[0]->gs->allocate_agent_id(g).error().error_code() == code::unavailable);

  c.isolate(a);
  CHECK(test::eventually([&] { return !a->gs->leading(g).has_value(); }, 10s));
  CHECK(a->gs->allocate_agent_id(g).error().error_code() == code::unavailable);
  // What the old leader committed: it commits nothing more while cut off.
  auto stored = a->db->get(family::raft, raft::reserved_ids_key(g));
  REQUIRE(stored.is_ok());
  REQUIRE(stored->has_value());
  const uint64_t old_limit = get_u64_be((*stored)->data());

  node* b = c.leader(g, c.others(a));
  std::vector<uint64_t> second;
  for (int i = 0; i < 5000; ++i) {
    auto id = b->gs->allocate_agent_id(g);
    REQUIRE_MESSAGE(id.is_ok(), id.error().to_string());
    second.push_back(*id);
  }
  constexpr uint64_t low = (uint64_t{1} << 48) - 1;
  std::set<uint64_t> all(first.begin(), first.end());
  all.insert(second.begin(), second.end());
  CHECK(all.size() == 10000);
  for (uint64_t id : all) CHECK((id >> 48) == g + 1);
  for (uint64_t id : first) CHECK((id & low) < old_limit);
  for (uint64_t id : second) CHECK((id & low) >= old_limit);
  c.sb.heal();
}

TEST_CASE(
    "a member stopped and started again over its store catches up and its groups take "
    "proposals") {
  cluster c;
  for (raft::group_id g = 0; g < group_count; ++g) c.leader(g);
  node* gone = c.n[2].get();
  gone->stop();
  // The other two go on (leadership may move off the stopped member).
  for (raft::group_id g = 0; g < group_count; ++g) {
    node* l = c.leader(g, c.others(gone));
    uint64_t term = *l->gs->leading(g);
    for (int i = 0; i < 5; ++i)
      CHECK(ended(propose(*l, g, term, "w" + std::to_string(g) + "-" + std::to_string(i), "v"))
                .is_ok());
  }

  gone->start();
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    node* l = c.leader(g);
    uint64_t term = *l->gs->leading(g);
    CHECK(ended(propose(*l, g, term, "again" + std::to_string(g), "v")).is_ok());
    const uint64_t applied = l->status_of(g).applied_index;
    CHECK(test::eventually([&] { return gone->status_of(g).applied_index >= applied; }, 10s));
    for (int i = 0; i < 5; ++i)
      wait_blob(*gone, "w" + std::to_string(g) + "-" + std::to_string(i), "v");
    wait_blob(*gone, "again" + std::to_string(g), "v");
  }
}

TEST_CASE("stopping a node ends every proposal and barrier it still holds") {
  cluster c;
  node* l = c.leader(3);
  uint64_t term = *l->gs->leading(3);
  // Cut off, so nothing it holds can commit before the stop.
  c.isolate(l);
  std::vector<outcome> held;
  for (int i = 0; i < 10; ++i) held.push_back(propose(*l, 3, term, "p" + std::to_string(i), "v"));
  auto b = std::make_shared<test::future_value<status>>();
  l->gs->barrier(3, [b](const status& s) { b->set(s); });
  l->stop();
  for (auto& h : held) CHECK(ended(h, 1s).error_code() == code::unavailable);
  auto bs = b->wait(1s);
  REQUIRE(bs.has_value());
  CHECK(bs->error_code() == code::unavailable);
  CHECK(l->leads(3) == 1);
  CHECK(l->loses(3) == 1);
}

TEST_CASE("leadership moves back to a group's preferred replica once it has caught up") {
  // n1 is every group's first voter: its preferred replica.
  cluster c(300);
  node* n1 = c.all()[0];
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    CHECK(test::eventually([&] { return n1->gs->leading(g).has_value(); }, 10s));
  }
  n1->stop();
  for (raft::group_id g = 0; g < group_count; ++g) c.leader(g, c.others(n1));
  // Written while n1 is away: it must catch up before it gets a group back.
  node* other = c.leader(0, c.others(n1));
  auto done = propose(*other, 0, *other->gs->leading(0), "while-away", "v");
  CHECK(ended(done).is_ok());
  n1->start();
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    CHECK(test::eventually([&] { return n1->gs->leading(g).has_value(); }, 15s));
  }
  wait_blob(*n1, "while-away", "v");
  // The one who handed a group back stopped leading it first.
  for (auto* x : c.others(n1))
    for (raft::group_id g = 0; g < group_count; ++g) CHECK_FALSE(x->gs->leading(g).has_value());
}
