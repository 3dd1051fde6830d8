// A member that lost its store joins its groups under a new raft id
// (net/raft/groups.hpp, "Joining"; net/raft/identity.hpp): three nodes'
// groups in one process (groups_harness.hpp).
#include <doctest/doctest.h>

#include <string>

#include "groups_harness.hpp"
#include "net/raft/identity.hpp"

namespace {

// Every server of g's configuration as its leader sees it: raft id -> role.
std::map<raft_id, std::string> servers_of(cluster& c, raft::group_id g) {
  node* l = c.leader(g);
  std::map<raft_id, std::string> out;
  for (const auto& r : l->status_of(g).replicas) out[r.id] = r.role;
  return out;
}

bool voters_are(cluster& c, raft::group_id g, const std::map<raft_id, std::string>& want) {
  return servers_of(c, g) == want;
}

// What g's node `to` answers a join request from member `from`.
result<std::string> ask_join(node& to, const std::string& from, std::string request) {
  auto got = std::make_shared<test::future_value<result<std::string>>>();
  to.gs->serve_join(from, std::move(request),
                    [got](result<std::string> r) { got->set(std::move(r)); });
  auto answer = got->wait(10s);
  REQUIRE_MESSAGE(answer.has_value(), "a join request was not answered in time");
  return *answer;
}

void write(cluster& c, raft::group_id g, const std::string& key, const std::string& value) {
  node* l = c.leader(g);
  REQUIRE(ended(propose(*l, g, *l->gs->leading(g), key, value)).is_ok());
}

}  // namespace

TEST_CASE("a member that lost its store joins every group under its new raft id") {
  cluster c;
  for (raft::group_id g = 0; g < group_count; ++g)
    write(c, g, "before/" + std::to_string(g), "v" + std::to_string(g));

  node& lost = *c.n[2];
  lost.stop();
  const raft_id fresh = raft::incarnation_id(lost.id, 7);
  lost.rejoin(fresh);
  for (raft::group_id g = 0; g < group_count; ++g)
    write(c, g, "during/" + std::to_string(g), "w" + std::to_string(g));

  const std::map<raft_id, std::string> want{{1, "voter"}, {2, "voter"}, {fresh, "voter"}};
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    // The former id (3) is removed; the new one went spare, standby, voter.
    CHECK(test::eventually([&] { return voters_are(c, g, want); }, 10s));
    wait_blob(lost, "before/" + std::to_string(g), "v" + std::to_string(g));
    wait_blob(lost, "during/" + std::to_string(g), "w" + std::to_string(g));
    CHECK(test::eventually([&] { return lost.status_of(g).joining.empty(); }, 10s));
  }
  CHECK(blobs(lost) == blobs(*c.n[0]));

  // A late ask from an older incarnation of the same member does not
  // remove the newer one. (Asked of whichever member leads: a leadership
  // change meanwhile answers unavailable, and the ask is made again.)
  result<std::string> refused = std::string();
  CHECK(test::eventually(
      [&] {
        refused = ask_join(*c.leader(0), lost.address,
                           raft::encode_join_request(0, raft::incarnation_id(lost.id, 6)));
        return refused.is_ok() || refused.error().error_code() != code::unavailable;
      },
      10s));
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.error().error_code() == code::conflict);
  CHECK(voters_are(c, 0, want));

  // It counts as a voter: with one of the others stopped, every group
  // still elects a leader and commits through it.
  c.n[0]->stop();
  for (raft::group_id g = 0; g < group_count; ++g) {
    node* l = c.leader(g, {c.n[1].get(), &lost});
    CHECK(ended(propose(*l, g, *l->gs->leading(g), "after/" + std::to_string(g), "x")).is_ok());
    wait_blob(lost, "after/" + std::to_string(g), "x");
  }
}

TEST_CASE("a member that lost its store cannot elect a replica missing committed entries") {
  // n2 is cut off while an entry commits on n1 and n3; then n1 stops and
  // n3 loses its store. Had n3 come back as voter 3 with an empty log, it
  // would vote for n2, whose log lacks the entry, and the entry would be
  // lost. Under a new id it is no voter: nothing is elected until n1 is
  // back, and the entry reaches everyone.
  cluster c([](node& x) { x.group_total = 1; });
  const raft::group_id g = 0;
  node* l = c.leader(g);
  node* behind = nullptr;
  node* lost = nullptr;
  for (auto* x : c.others(l)) (behind == nullptr ? behind : lost) = x;
  c.isolate(behind);
  write(c, g, "committed", "on a majority");
  wait_blob(*lost, "committed", "on a majority");

  l->stop();
  lost->stop();
  lost->rejoin(raft::incarnation_id(lost->id, 9));
  c.sb.heal();
  // Five election timeouts: n2 campaigns again and again, and no vote of
  // the new id counts.
  CHECK_FALSE(test::eventually(
      [&] { return (behind->gs && behind->gs->leading(g)) || (lost->gs && lost->gs->leading(g)); },
      1500ms));

  l->start();
  for (auto* x : c.all()) wait_blob(*x, "committed", "on a majority");
  CHECK(test::eventually([&] { return lost->status_of(g).joining.empty(); }, 10s));
}

TEST_CASE("a join request from a member the group does not list is refused") {
  cluster c([](node& x) { x.group_total = 1; });
  node* l = c.leader(0);
  auto answer = ask_join(*l, "n9", raft::encode_join_request(0, raft::incarnation_id(9, 1)));
  REQUIRE_FALSE(answer.is_ok());
  CHECK(answer.error().error_code() == code::unauthorized);
  CHECK(servers_of(c, 0).size() == 3);

  // Nor a listed member asking for another member's id: it would remove
  // that member's voter.
  node* asker = c.others(l).front();
  const raft_id not_its = raft::incarnation_id(asker->id == 3 ? 2 : 3, 4);
  auto refused_other = ask_join(*l, asker->address, raft::encode_join_request(0, not_its));
  REQUIRE_FALSE(refused_other.is_ok());
  CHECK(refused_other.error().error_code() == code::unauthorized);
  CHECK(servers_of(c, 0).size() == 3);

  // Nor one that is not a join request.
  auto refused = ask_join(*l, "n2", "short");
  CHECK(refused.error().error_code() == code::corruption);
}

namespace {

// A cluster whose leaders soon snapshot: a member that joins after 60
// entries needs the group's state streamed (a fetch the switchboard can
// hold).
cluster small_log_cluster() {
  return cluster([](node& x) {
    x.group_total = 1;
    x.tune = [](raft::groups_options& o) {
      o.snapshot_threshold = 16;
      o.snapshot_trailing = 4;
    };
  });
}

// Wipes a follower of group 0, holds every state fetch from now on, and
// starts it joining under its incarnation `incarnation`: returns it once
// it is the group's standby with its fetch held (the join in the middle).
node* join_halfway(cluster& c, uint32_t incarnation) {
  for (int i = 0; i < 60; ++i) write(c, 0, "k" + std::to_string(i), "v" + std::to_string(i));
  node* lost = c.others(c.leader(0)).front();
  const raft_id fresh = raft::incarnation_id(lost->id, incarnation);
  lost->stop();
  {
    std::lock_guard lk(c.sb.mu);
    c.sb.hold_after = c.sb.fetches;
  }
  lost->rejoin(fresh);
  REQUIRE(test::eventually([&] { return c.sb.held_count() >= 1; }, 10s));
  REQUIRE(test::eventually(
      [&] {
        auto s = servers_of(c, 0);
        return s.count(fresh) && s[fresh] == "standby";
      },
      10s));
  return lost;
}

void check_joined(cluster& c, node& x, raft_id fresh) {
  CHECK(test::eventually(
      [&] {
        auto s = servers_of(c, 0);
        return s.size() == 3 && s.count(fresh) && s[fresh] == "voter";
      },
      15s));
  wait_blob(x, "k59", "v59");
  node* l = c.leader(0);
  CHECK(test::eventually([&] { return blobs(x) == blobs(*l); }, 10s));
}

}  // namespace

TEST_CASE("a join goes on after the joining member restarts in the middle of it") {
  cluster c = small_log_cluster();
  node* lost = join_halfway(c, 11);
  const raft_id its = lost->run_id;
  // Killed while its fetch runs; it starts again over what it wrote so far
  // (its store says the data is incomplete), under the same new id.
  lost->stop();
  c.sb.release();
  lost->start();
  check_joined(c, *lost, its);
  // Its own view agrees: a voter, no longer joining.
  CHECK(test::eventually([&] { return lost->status_of(0).joining.empty(); }, 10s));
}

TEST_CASE("a join goes on after its leader stops in the middle of it") {
  cluster c = small_log_cluster();
  node* l = c.leader(0);
  node* lost = join_halfway(c, 12);
  const raft_id its = lost->run_id;
  // The former id is gone: two voters left, both needed. With the leader
  // stopped the group waits; once it is back, whichever leads takes the
  // join from the configuration as it is.
  l->stop();
  c.sb.release();
  CHECK(lost->status_of(0).joining != "");
  l->start();
  check_joined(c, *lost, its);
}

TEST_CASE("a group that lost two replicas' data is recovered on the one left; the others join") {
  cluster c([](node& x) { x.group_total = 1; });
  for (int i = 0; i < 10; ++i) write(c, 0, "k" + std::to_string(i), "v");
  node& left = *c.n[0];
  wait_blob(left, "k9", "v");
  c.n[1]->stop();
  c.n[2]->stop();
  // Two of three replicas lost: the one left holds every committed entry
  // but can never win an election with its configuration.
  c.n[1]->wipe();
  c.n[2]->wipe();
  const uint64_t ends = left.status_of(0).last_index;
  left.stop();

  // A recovery at an index where the log does not end is refused: given
  // again after the group moved on, it would drop the others' entries.
  left.tune = [ends](raft::groups_options& o) { o.recover = {{0, ends + 1}}; };
  const status stale = left.try_start();
  CHECK(stale.error_code() == code::invalid_argument);

  left.tune = [ends](raft::groups_options& o) { o.recover = {{0, ends}}; };
  left.start();
  node* l = c.leader(0, {&left});
  CHECK(l == &left);
  REQUIRE(ended(propose(left, 0, *left.gs->leading(0), "after", "recovery")).is_ok());

  const raft_id two = raft::incarnation_id(2, 21), three = raft::incarnation_id(3, 31);
  c.n[1]->rejoin(two);
  c.n[2]->rejoin(three);
  const std::map<raft_id, std::string> want{{1, "voter"}, {two, "voter"}, {three, "voter"}};
  CHECK(test::eventually([&] { return voters_are(c, 0, want); }, 15s));
  for (auto* x : c.all()) {
    wait_blob(*x, "k9", "v");
    wait_blob(*x, "after", "recovery");
  }
}
