// A node's replicated groups (net/raft/groups.hpp) with three nodes in one
// process: each its own store, journal writer and raft loop, connected by an
// in-process switchboard that can cut a link one way. Four groups, every
// node a voter of each.
#include "net/raft/groups.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.hpp"
#include "net/raft/keys.hpp"
#include "persistence/journal_writer.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;
using persistence::family;

namespace {

constexpr raft::group_id group_count = 4;

// Delivers each message to the receiving node's groups unless the link
// from sender to receiver is cut. Senders call it from their loops; the
// receiver's recv only posts, so holding the lock across it is short.
struct switchboard {
  std::mutex mu;
  std::map<std::string, raft::groups*> nodes;
  std::set<std::pair<std::string, std::string>> cut;

  void deliver(const std::string& from, std::string_view to, raft::group_id g, std::string bytes) {
    std::lock_guard lk(mu);
    std::string dest(to);
    if (cut.count({from, dest})) return;
    auto it = nodes.find(dest);
    if (it != nodes.end()) it->second->recv(from, g, std::move(bytes));
  }
  void attach(const std::string& address, raft::groups* gs) {
    std::lock_guard lk(mu);
    if (gs == nullptr)
      nodes.erase(address);
    else
      nodes[address] = gs;
  }
  // Both directions between `a` and every other node.
  void isolate(const std::string& a, const std::vector<std::string>& others) {
    std::lock_guard lk(mu);
    for (const auto& b : others) {
      cut.insert({a, b});
      cut.insert({b, a});
    }
  }
  void heal() {
    std::lock_guard lk(mu);
    cut.clear();
  }
};

struct wire : raft::sender {
  switchboard& sb;
  std::string self;
  wire(switchboard& s, std::string me) : sb(s), self(std::move(me)) {}
  void send(std::string_view to, raft::group_id g, std::string bytes) override {
    sb.deliver(self, to, g, std::move(bytes));
  }
};

// What the leadership callbacks saw, for the contract checks.
struct leadership_log {
  std::mutex mu;
  std::map<raft::group_id, int> leads, loses;
  int lead_saw_wrong_term = 0;  // on_lead while leading(g) was not its term
  int lose_saw_leading = 0;     // on_lose while leading(g) was still set
};

struct node {
  raft_id id;
  std::string address;
  switchboard& sb;
  test::temp_dir dir{"keel-groups"};
  std::unique_ptr<persistence::store> db;
  std::unique_ptr<persistence::journal_writer> journal;
  wire out;
  std::unique_ptr<raft::groups> gs;
  std::atomic<raft::groups*> live{nullptr};
  leadership_log seen;
  uint32_t transfer_back_ms = 0;  // off unless a test wants it

  node(raft_id i, switchboard& s)
      : id(i), address("n" + std::to_string(i)), sb(s), out(s, "n" + std::to_string(i)) {}

  void start() {
    auto s = persistence::store::open({dir.str(), 8 << 20, true});
    REQUIRE_MESSAGE(s.is_ok(), s.error().to_string());
    db = std::move(s).value();
    journal = std::make_unique<persistence::journal_writer>(*db, /*sync=*/true);
    raft::groups_options o;
    o.self = address;
    o.self_id = id;
    for (raft::group_id g = 0; g < group_count; ++g)
      o.groups.push_back({g, {{1, "n1"}, {2, "n2"}, {3, "n3"}}});
    o.db = db.get();
    o.submit = [j = journal.get()](persistence::write_set ops,
                                   std::function<void(const status&)> done) {
      j->submit(std::move(ops), std::move(done));
    };
    o.out = &out;
    o.election_timeout_ms = 300;
    o.heartbeat_ms = 50;
    o.transfer_back_ms = transfer_back_ms;
    o.on_lead = [this](raft::group_id g, uint64_t term) {
      raft::groups* l = live.load();
      std::lock_guard lk(seen.mu);
      ++seen.leads[g];
      if (l != nullptr && l->leading(g) != term) ++seen.lead_saw_wrong_term;
    };
    o.on_lose = [this](raft::group_id g) {
      raft::groups* l = live.load();
      std::lock_guard lk(seen.mu);
      ++seen.loses[g];
      if (l != nullptr && l->leading(g).has_value()) ++seen.lose_saw_leading;
    };
    auto started = raft::groups::start(std::move(o));
    REQUIRE_MESSAGE(started.is_ok(), started.error().to_string());
    gs = std::move(started).value();
    live.store(gs.get());
    sb.attach(address, gs.get());
  }

  void stop() {
    if (!gs) return;
    sb.attach(address, nullptr);
    gs->stop();
    live.store(nullptr);
    gs.reset();
    journal->stop();
    journal.reset();
    db.reset();
  }

  int leads(raft::group_id g) {
    std::lock_guard lk(seen.mu);
    return seen.leads[g];
  }
  int loses(raft::group_id g) {
    std::lock_guard lk(seen.mu);
    return seen.loses[g];
  }

  std::optional<std::string> blob(const std::string& key) {
    auto v = db->get(family::blobs, key);
    REQUIRE(v.is_ok());
    return *v;
  }
  raft::group_status status_of(raft::group_id g) {
    for (auto& s : gs->status())
      if (s.id == g) return s;
    FAIL("no status for group " << g);
    return {};
  }
};

struct cluster {
  switchboard sb;
  std::vector<std::unique_ptr<node>> n;

  explicit cluster(uint32_t transfer_back_ms = 0) {
    for (raft_id i = 1; i <= 3; ++i) n.push_back(std::make_unique<node>(i, sb));
    for (auto& x : n) {
      x->transfer_back_ms = transfer_back_ms;
      x->start();
    }
  }
  ~cluster() {
    for (auto& x : n) x->stop();
  }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  std::vector<node*> all() {
    std::vector<node*> v;
    for (auto& x : n) v.push_back(x.get());
    return v;
  }
  std::vector<node*> others(node* but) {
    std::vector<node*> v;
    for (auto& x : n)
      if (x.get() != but) v.push_back(x.get());
    return v;
  }

  // The one node among `among` that is ready as g's leader, waiting for
  // exactly one.
  node* leader(raft::group_id g, std::vector<node*> among = {}) {
    if (among.empty()) among = all();
    node* found = nullptr;
    bool one = test::eventually(
        [&] {
          int count = 0;
          for (auto* x : among)
            if (x->gs && x->gs->leading(g)) {
              ++count;
              found = x;
            }
          return count == 1;
        },
        10s);
    CAPTURE(g);
    REQUIRE_MESSAGE(one, "no single ready leader within 10 s");
    return found;
  }

  void isolate(node* x) {
    std::vector<std::string> rest;
    for (auto* o : others(x)) rest.push_back(o->address);
    sb.isolate(x->address, rest);
  }
};

using outcome = std::shared_ptr<test::future_value<status>>;

outcome propose(node& x, raft::group_id g, uint64_t term, const std::string& key,
                const std::string& value) {
  auto got = std::make_shared<test::future_value<status>>();
  x.gs->propose(g, term, {{family::blobs, false, key, value}},
                [got](const status& s) { got->set(s); });
  return got;
}

status ended(const outcome& o, std::chrono::milliseconds within = 10s) {
  auto s = o->wait(within);
  REQUIRE_MESSAGE(s.has_value(), "the proposal did not end in time");
  return *s;
}

status barrier(node& x, raft::group_id g) {
  auto got = std::make_shared<test::future_value<status>>();
  x.gs->barrier(g, [got](const status& s) { got->set(s); });
  auto s = got->wait(10s);
  REQUIRE_MESSAGE(s.has_value(), "the barrier did not end in time");
  return *s;
}

void wait_blob(node& x, const std::string& key, const std::string& value) {
  CAPTURE(x.address);
  CAPTURE(key);
  CHECK(test::eventually([&] { return x.blob(key) == value; }, 10s));
}

std::vector<std::pair<std::string, std::string>> blobs(node& x) {
  auto all = x.db->scan(family::blobs, "", "", 100000);
  REQUIRE(all.is_ok());
  return *all;
}

}  // namespace

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

  // libraft's check-quorum steps it down after an election timeout.
  CHECK(test::eventually([&] { return !old->gs->leading(0).has_value(); }, 10s));
  CHECK(test::eventually([&] { return old->loses(0) == 1; }, 10s));
  CHECK(old->status_of(0).role != "leader");
  CHECK(ended(held).error_code() == code::unavailable);

  node* next = c.leader(0, c.others(old));
  const uint64_t new_term = *next->gs->leading(0);
  CHECK(new_term > old_term);
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
