// The leader lease of replicated groups (net/raft/groups.hpp, io.hpp): a
// leader that can no longer count on a majority lets go of its group (its
// on_lose, where a node aborts the group's calls) before any other member
// is ready to lead it, however its links are cut; a member that restarts
// does not help elect a new leader while the old one may still hold a
// lease it echoed before the restart. Three nodes in one process
// (groups_harness.hpp), so every clock is the same clock.
#include <doctest/doctest.h>

#include "groups_harness.hpp"

namespace {

constexpr raft::group_id g = 0;

// The old leader's last on_lose came before the new leader's last on_lead.
void check_let_go_first(node* old, node* next) {
  // on_lead runs just after leading(g) is published.
  REQUIRE(test::eventually([&] { return next->leads(g) >= 1; }, 10s));
  std::scoped_lock lk(old->seen.mu, next->seen.mu);
  REQUIRE(old->seen.last_lose.count(g) == 1);
  REQUIRE(next->seen.last_lead.count(g) == 1);
  CHECK(old->seen.last_lose[g] < next->seen.last_lead[g]);
}

}  // namespace

TEST_CASE("a leader's lease lapses before another member leads, whichever way its links are cut") {
  enum class cut_kind { both, outgoing, incoming };
  for (cut_kind kind : {cut_kind::both, cut_kind::outgoing, cut_kind::incoming}) {
    CAPTURE(static_cast<int>(kind));
    cluster c;
    node* old = c.leader(g);
    const uint64_t old_term = *old->gs->leading(g);
    CHECK(test::eventually([&] { return old->leads(g) == 1; }, 10s));
    for (node* o : c.others(old)) {
      if (kind != cut_kind::incoming) c.sb.cut_one_way(old->address, o->address);
      if (kind != cut_kind::outgoing) c.sb.cut_one_way(o->address, old->address);
    }
    // outgoing: the followers stop hearing it and elect another leader.
    // incoming: they still hear it, but it hears no answer: its lease
    // lapses, check-quorum steps it down, then the others elect.
    node* next = c.leader(g, c.others(old));
    CHECK(*next->gs->leading(g) > old_term);
    CHECK_FALSE(old->gs->leading(g).has_value());
    check_let_go_first(old, next);
    // Its proposals are refused at once, never left to a deposed term.
    CHECK(ended(propose(*old, g, old_term, "late", "x")).error_code() == code::unavailable);
  }
}

TEST_CASE("a lapsed lease comes back while the leader still leads, and the group is ready again") {
  cluster c;
  node* l = c.leader(g);
  const uint64_t term = *l->gs->leading(g);
  CHECK(test::eventually([&] { return l->leads(g) == 1; }, 10s));
  // Only the answers are lost, and only for less than check-quorum needs
  // to step it down (two election timeouts): its lease lapses, then the
  // answers come back in the same term.
  for (node* o : c.others(l)) c.sb.cut_one_way(o->address, l->address);
  CHECK(test::eventually([&] { return l->loses(g) == 1; }, 10s));
  CHECK_FALSE(l->gs->leading(g).has_value());
  c.sb.heal();
  CHECK(test::eventually([&] { return l->gs->leading(g).has_value(); }, 10s));
  if (l->gs->leading(g) == term) {
    // Ready again in the same term (on_lead runs just after leading(g) is
    // published): writes commit as before.
    CHECK(test::eventually([&] { return l->leads(g) == 2; }, 10s));
    CHECK(ended(propose(*l, g, term, "again", "1")).is_ok());
    for (auto* x : c.all()) wait_blob(*x, "again", "1");
  } else {
    // check-quorum was quicker on this machine: a new term, led anew.
    MESSAGE("the leader stepped down before the answers came back");
  }
}

TEST_CASE(
    "a member that restarts grants no vote for an election timeout, so the leader it echoed "
    "before the restart lets go first") {
  // The scenario end to end; io_test pins the hold itself (whether this
  // election would come too early without it depends on timing).
  {
    cluster c;
    node* old = c.leader(g);
    CHECK(test::eventually([&] { return old->leads(g) == 1; }, 10s));
    auto rest = c.others(old);
    node* candidate = rest[0];
    node* voter = rest[1];
    // The candidate loses the leader: it campaigns, and the voter, which
    // still hears the leader, refuses it. Nothing is written meanwhile, so
    // its log stays as complete as the others'.
    c.sb.cut_one_way(old->address, candidate->address);
    c.sb.cut_one_way(candidate->address, old->address);
    CHECK(test::eventually([&] { return candidate->status_of(g).role == "candidate"; }, 10s));
    // The voter echoed the leader just now, then restarts without it,
    // and the leader is cut from it too.
    c.sb.cut_one_way(old->address, voter->address);
    c.sb.cut_one_way(voter->address, old->address);
    voter->stop();
    voter->start();
    node* next = c.leader(g, rest);
    check_let_go_first(old, next);
  }
}
