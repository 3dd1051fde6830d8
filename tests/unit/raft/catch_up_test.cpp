// Followers that cannot catch up from the log (net/raft/io.hpp, "Catching
// up"): three nodes' groups in one process over an in-process switchboard
// that also carries state fetches, with a small snapshot threshold so the
// leader's log soon starts past what a stopped follower holds.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.hpp"
#include "net/raft/groups.hpp"
#include "net/raft/keys.hpp"
#include "persistence/journal_writer.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;
using persistence::family;

namespace {

constexpr raft::group_id group_count = 2;
using kvs = std::vector<std::pair<std::string, std::string>>;
using respond_fn = std::function<void(result<std::string>)>;

// Agent names "g<digit>-..." are in group <digit>.
raft::group_id group_of_name(std::string_view name) {
  return name.size() > 1 ? static_cast<raft::group_id>(name[1] - '0') : 0;
}

// Delivers messages and fetches between nodes. A fetch may be held (not
// answered) once `hold_after` fetches went through, until release().
struct switchboard {
  std::mutex mu;
  std::map<std::string, raft::groups*> nodes;
  int fetches = 0;
  int hold_after = -1;  // -1: never hold
  std::vector<respond_fn> held;

  void deliver(const std::string& from, std::string_view to, raft::group_id g, std::string bytes) {
    std::lock_guard lk(mu);
    auto it = nodes.find(std::string(to));
    if (it != nodes.end()) it->second->recv(from, g, std::move(bytes));
  }
  void fetch(const std::string& from, std::string_view to, std::string request, respond_fn done) {
    raft::groups* dest = nullptr;
    {
      std::lock_guard lk(mu);
      ++fetches;
      if (hold_after >= 0 && fetches > hold_after) {
        held.push_back(std::move(done));
        return;
      }
      auto it = nodes.find(std::string(to));
      if (it != nodes.end()) dest = it->second;
    }
    if (dest == nullptr) return done(error(code::unavailable, std::string(to) + " is down"));
    dest->serve_fetch(from, std::move(request), std::move(done));
  }
  int fetch_count() {
    std::lock_guard lk(mu);
    return fetches;
  }
  std::size_t held_count() {
    std::lock_guard lk(mu);
    return held.size();
  }
  // Stops holding; what was held fails as if its server had died.
  void release() {
    std::vector<respond_fn> h;
    {
      std::lock_guard lk(mu);
      hold_after = -1;
      h.swap(held);
    }
    for (auto& d : h) d(error(code::unavailable, "the server died"));
  }
  void attach(const std::string& address, raft::groups* gs) {
    std::lock_guard lk(mu);
    if (gs == nullptr)
      nodes.erase(address);
    else
      nodes[address] = gs;
  }
};

struct wire : raft::sender {
  switchboard& sb;
  std::string self;
  wire(switchboard& s, std::string me) : sb(s), self(std::move(me)) {}
  void send(std::string_view to, raft::group_id g, std::string bytes) override {
    sb.deliver(self, to, g, std::move(bytes));
  }
  void fetch(std::string_view to, std::string request, respond_fn done) override {
    sb.fetch(self, to, std::move(request), std::move(done));
  }
};

struct node {
  raft_id id;
  std::string address;
  switchboard& sb;
  std::unique_ptr<test::temp_dir> dir = std::make_unique<test::temp_dir>("keel-catch-up");
  std::unique_ptr<persistence::store> db;
  std::unique_ptr<persistence::journal_writer> journal;
  wire out;
  std::unique_ptr<raft::groups> gs;
  uint32_t install_snapshot_timeout_ms = 2000;

  node(raft_id i, switchboard& s)
      : id(i), address("n" + std::to_string(i)), sb(s), out(s, "n" + std::to_string(i)) {}

  void start() {
    auto s = persistence::store::open({dir->str(), 8 << 20, true});
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
    o.transfer_back_ms = 0;  // leadership stays where the test put it
    o.snapshot_threshold = 32;
    o.snapshot_trailing = 8;
    o.install_snapshot_timeout_ms = install_snapshot_timeout_ms;
    o.group_of = group_of_name;
    o.fetch_page_bytes = 2048;  // many pages
    o.fetch_page_timeout_ms = 5000;
    auto started = raft::groups::start(std::move(o));
    REQUIRE_MESSAGE(started.is_ok(), started.error().to_string());
    gs = std::move(started).value();
    sb.attach(address, gs.get());
  }

  void stop() {
    if (!gs) return;
    sb.attach(address, nullptr);
    gs->stop();
    gs.reset();
    journal->stop();
    journal.reset();
    db.reset();
  }

  // A new, empty data directory (same raft id).
  void wipe() {
    REQUIRE(!gs);
    dir = std::make_unique<test::temp_dir>("keel-catch-up");
  }

  raft::group_status status_of(raft::group_id g) {
    for (auto& s : gs->status())
      if (s.id == g) return s;
    FAIL("no status for group " << g);
    return {};
  }

  // Group g's keys, family by family, as the store holds them now.
  std::map<std::string, kvs> state_of(raft::group_id g) {
    std::map<std::string, kvs> out;
    std::string tag;
    put_u64_be(tag, uint64_t{g + 1} << 48);
    tag.resize(2);  // the group tag: the agent id's top 16 bits
    for (family f : {family::ledger, family::inbox, family::timers, family::agents}) {
      auto all = db->scan(f, "", "", 100000);
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
      auto v = db->get(family::raft, key);
      REQUIRE(v.is_ok());
      out["raft"].push_back({key, v->value_or("<none>")});
    }
    return out;
  }
};

struct cluster {
  switchboard sb;
  std::vector<std::unique_ptr<node>> n;

  explicit cluster(uint32_t install_snapshot_timeout_ms = 2000) {
    for (raft_id i = 1; i <= 3; ++i) n.push_back(std::make_unique<node>(i, sb));
    for (auto& x : n) {
      x->install_snapshot_timeout_ms = install_snapshot_timeout_ms;
      x->start();
    }
  }
  ~cluster() {
    for (auto& x : n) x->stop();
  }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  std::vector<node*> up() {
    std::vector<node*> v;
    for (auto& x : n)
      if (x->gs) v.push_back(x.get());
    return v;
  }
  node* leader(raft::group_id g) {
    node* found = nullptr;
    bool one = test::eventually(
        [&] {
          int count = 0;
          for (auto* x : up())
            if (x->gs->leading(g)) {
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
};

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
  test::eventually([&] { return l->state_of(g) == x.state_of(g); }, 15s);
  auto want = l->state_of(g);
  auto got = x.state_of(g);
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
  cluster c;
  for (raft::group_id g = 0; g < group_count; ++g) write_entries(c, g, 0, 5);
  node* gone = c.n[2].get();
  gone->stop();
  for (raft::group_id g = 0; g < group_count; ++g) write_entries(c, g, 5, 120);

  gone->start();
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    CHECK(test::eventually([&] { return gone->status_of(g).fetch.installed >= 1; }, 15s));
    check_same_state(c, *gone, g);
    auto f = gone->status_of(g).fetch;
    CHECK_FALSE(f.incomplete);
    CHECK(f.failed == 0);
  }
  CHECK(c.sb.fetch_count() > 2);  // many small pages

  // The log goes on from the installed state.
  for (raft::group_id g = 0; g < group_count; ++g) {
    write_entries(c, g, 125, 10);
    check_same_state(c, *gone, g);
  }
}

TEST_CASE("a member whose data directory was wiped comes back with the group's whole state") {
  cluster c;
  for (raft::group_id g = 0; g < group_count; ++g) write_entries(c, g, 0, 60);
  node* gone = c.n[1].get();
  gone->stop();
  gone->wipe();
  for (raft::group_id g = 0; g < group_count; ++g) write_entries(c, g, 60, 10);
  gone->start();
  for (raft::group_id g = 0; g < group_count; ++g) {
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
  // Ten minutes: only a leader that sees the wiped member lost its log
  // sends it anything in time.
  cluster c(600'000);
  for (raft::group_id g = 0; g < group_count; ++g) write_entries(c, g, 0, 60);
  node* gone = c.n[1].get();
  // Every leader has seen it match its whole log.
  for (raft::group_id g = 0; g < group_count; ++g) check_same_state(c, *gone, g);
  gone->stop();
  gone->wipe();
  gone->start();
  for (raft::group_id g = 0; g < group_count; ++g) {
    CAPTURE(g);
    check_same_state(c, *gone, g);
    CHECK_FALSE(gone->state_of(g)["ledger"].empty());  // its empty store was filled again
    write_entries(c, g, 60, 5);
    check_same_state(c, *gone, g);
  }
}

TEST_CASE(
    "a follower whose state source dies mid-stream installs nothing half done and fetches again "
    "from the new leader") {
  cluster c;
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
  const std::string mark = behind->state_of(g)["raft"].back().second;
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
