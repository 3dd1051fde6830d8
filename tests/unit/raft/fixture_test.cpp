// libraft's deterministic in-memory cluster (raft/fixture.h) with a trivial
// state machine: pins the library behaviour the group state machine relies
// on before any of it is built on top.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "net/raft/raft_c.hpp"

extern "C" {
#include <raft/fixture.h>
}

namespace {

// Records every applied command, and raft_last_applied() as seen from
// inside apply (0.15's apply callback has no index argument).
struct recorder {
  struct raft* r = nullptr;
  std::vector<std::string> applied;
  std::vector<raft_index> last_applied_seen;
};

int apply(struct raft_fsm* fsm, const struct raft_buffer* buf, void** result) {
  auto* rec = static_cast<recorder*>(fsm->data);
  rec->applied.emplace_back(static_cast<const char*>(buf->base), buf->len);
  rec->last_applied_seen.push_back(raft_last_applied(rec->r));
  *result = nullptr;
  return 0;
}

struct three_servers {
  raft_fixture f{};
  std::vector<recorder> recs = std::vector<recorder>(3);
  std::vector<raft_fsm> fsms = std::vector<raft_fsm>(3);

  three_servers() {
    REQUIRE(raft_fixture_initialize(&f) == 0);
    for (unsigned i = 0; i < 3; ++i) {
      fsms[i] = raft_fsm{};
      fsms[i].version = 1;
      fsms[i].data = &recs[i];
      fsms[i].apply = apply;
      REQUIRE(raft_fixture_grow(&f, &fsms[i]) == 0);
      recs[i].r = raft_fixture_get(&f, i);
    }
    raft_configuration conf;
    REQUIRE(raft_fixture_configuration(&f, 3, &conf) == 0);
    REQUIRE(raft_fixture_bootstrap(&f, &conf) == 0);
    raft_configuration_close(&conf);
    REQUIRE(raft_fixture_start(&f) == 0);
  }
  ~three_servers() { raft_fixture_close(&f); }
  three_servers(const three_servers&) = delete;
  three_servers& operator=(const three_servers&) = delete;
};

int applied_callbacks = 0;
void on_applied(struct raft_apply* req, int status, void*) {
  if (status == 0) ++applied_callbacks;
  delete req;
}

raft_buffer copy_to_raft(const std::string& s) {
  raft_buffer b;
  b.len = s.size();
  b.base = raft_malloc(b.len);
  std::memcpy(b.base, s.data(), b.len);
  return b;
}

}  // namespace

TEST_CASE("three in-memory servers elect a leader and apply a command on each, in index order") {
  three_servers c;
  REQUIRE(raft_fixture_step_until_has_leader(&c.f, 10'000));
  unsigned leader = raft_fixture_leader_index(&c.f);
  REQUIRE(leader < 3);
  struct raft* r = raft_fixture_get(&c.f, leader);
  CHECK(raft_state(r) == RAFT_LEADER);

  applied_callbacks = 0;
  for (const char* cmd : {"one", "two"}) {
    raft_buffer b = copy_to_raft(cmd);
    auto* req = new keel::raft::apply_request{};
    REQUIRE(raft_apply(r, req, &b, 1, on_applied) == 0);
  }
  raft_index target = raft_last_index(r);
  for (unsigned i = 0; i < 3; ++i)
    REQUIRE(raft_fixture_step_until_applied(&c.f, i, target, 10'000));
  CHECK(applied_callbacks == 2);
  for (unsigned i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(c.recs[i].applied == std::vector<std::string>{"one", "two"});
    // Inside apply, the entry's index is raft_last_applied() + 1: the two
    // commands are consecutive entries and each sees the one before it
    // already counted as applied. The group state machine stores this index
    // beside its writes.
    REQUIRE(c.recs[i].last_applied_seen.size() == 2);
    CHECK(c.recs[i].last_applied_seen[1] == c.recs[i].last_applied_seen[0] + 1);
    CHECK(c.recs[i].last_applied_seen[1] + 1 == target);
  }
}

TEST_CASE("a proposal to a follower is refused as not the leader, with libraft's name for it") {
  three_servers c;
  REQUIRE(raft_fixture_step_until_has_leader(&c.f, 10'000));
  unsigned follower = (raft_fixture_leader_index(&c.f) + 1) % 3;
  raft_buffer b = copy_to_raft("x");
  keel::raft::apply_request req{};
  int rv = raft_apply(raft_fixture_get(&c.f, follower), &req, &b, 1, on_applied);
  CHECK(rv == RAFT_NOTLEADER);
  raft_free(b.base);  // refused: still ours
  CHECK(keel::raft::error_text(rv).find("(raft " + std::to_string(RAFT_NOTLEADER) + ")") !=
        std::string::npos);
}
