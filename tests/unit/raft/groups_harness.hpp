#pragma once
// Three nodes' replicated groups (net/raft/groups.hpp) in one process, for
// the groups, lease and catch-up tests: each node its own store, journal
// writer and raft loop, connected by an in-process switchboard that can
// cut a link one way and hold state fetches. Four groups unless a test
// says otherwise, every node a voter of each. Included by one test
// file each (an anonymous namespace: every file has its own copy).

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.hpp"
#include "net/raft/groups.hpp"
#include "net/raft/keys.hpp"
#include "persistence/journal_writer.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

namespace {

using namespace keel;
using namespace std::chrono_literals;
using persistence::family;

constexpr raft::group_id group_count = 4;

// Delivers each message to the receiving node's groups unless the link
// from sender to receiver is cut. Senders call it from their loops; the
// receiver's recv only posts, so holding the lock across it is short.
using respond_fn = std::function<void(result<std::string>)>;

struct switchboard {
  std::mutex mu;
  std::map<std::string, raft::groups*> nodes;
  std::set<std::pair<std::string, std::string>> cut;
  // State fetches (catching up): a fetch is held, not answered, once
  // `hold_after` went through, until release().
  int fetches = 0;
  int hold_after = -1;  // -1: never hold
  std::vector<respond_fn> held;

  void deliver(const std::string& from, std::string_view to, raft::group_id g, std::string bytes) {
    std::lock_guard lk(mu);
    std::string dest(to);
    if (cut.count({from, dest})) return;
    auto it = nodes.find(dest);
    if (it != nodes.end()) it->second->recv(from, g, std::move(bytes));
  }
  // A batch, as the cluster transport hands it over: one recv_frames.
  void deliver_frames(const std::string& from, std::string_view to, std::string frames) {
    std::lock_guard lk(mu);
    std::string dest(to);
    if (cut.count({from, dest})) return;
    auto it = nodes.find(dest);
    if (it != nodes.end()) it->second->recv_frames(from, std::move(frames));
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
  // Messages from `from` no longer reach `to` (the other way still works).
  void cut_one_way(const std::string& from, const std::string& to) {
    std::lock_guard lk(mu);
    cut.insert({from, to});
  }
  void heal() {
    std::lock_guard lk(mu);
    cut.clear();
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
  void join(const std::string& from, std::string_view to, std::string request, respond_fn done) {
    raft::groups* dest = nullptr;
    {
      std::lock_guard lk(mu);
      if (cut.count({from, std::string(to)}) || cut.count({std::string(to), from}))
        return done(error(code::unavailable, "cut"));
      auto it = nodes.find(std::string(to));
      if (it != nodes.end()) dest = it->second;
    }
    if (dest == nullptr) return done(error(code::unavailable, std::string(to) + " is down"));
    dest->serve_join(from, std::move(request), std::move(done));
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
};

struct wire : raft::sender {
  switchboard& sb;
  std::string self;
  wire(switchboard& s, std::string me) : sb(s), self(std::move(me)) {}
  void send(std::string_view to, raft::group_id g, std::string bytes) override {
    sb.deliver(self, to, g, std::move(bytes));
  }
  void send_frames(std::string_view to, std::string frames) override {
    sb.deliver_frames(self, to, std::move(frames));
  }
  void fetch(std::string_view to, std::string request, respond_fn done) override {
    sb.fetch(self, to, std::move(request), std::move(done));
  }
  void join(std::string_view to, std::string request, respond_fn done) override {
    sb.join(self, to, std::move(request), std::move(done));
  }
};

// What the leadership callbacks saw, for the contract checks.
struct leadership_log {
  std::mutex mu;
  std::map<raft::group_id, int> leads, loses;
  int lead_saw_wrong_term = 0;  // on_lead while leading(g) was not its term
  int lose_saw_leading = 0;     // on_lose while leading(g) was still set
  std::map<raft::group_id, std::chrono::steady_clock::time_point> last_lead, last_lose;
};

struct node {
  raft_id id;      // its original raft id, in every group's bootstrap
  raft_id run_id;  // the id it runs under (another after rejoin())
  bool join = false;
  std::string address;
  switchboard& sb;
  std::unique_ptr<test::temp_dir> dir = std::make_unique<test::temp_dir>("keel-groups");
  std::unique_ptr<persistence::store> db;
  std::unique_ptr<persistence::journal_writer> journal;
  wire out;
  std::unique_ptr<raft::groups> gs;
  std::atomic<raft::groups*> live{nullptr};
  leadership_log seen;
  uint32_t transfer_back_ms = 0;  // off unless a test wants it
  raft::group_id group_total = group_count;
  // Applied to the options last, before every start.
  std::function<void(raft::groups_options&)> tune;

  node(raft_id i, switchboard& s)
      : id(i),
        run_id(i),
        address("n" + std::to_string(i)),
        sb(s),
        out(s, "n" + std::to_string(i)) {}

  void start() {
    status started = try_start();
    REQUIRE_MESSAGE(started.is_ok(), started.to_string());
  }

  // start(), answering why the groups did not start (the store closed
  // again then).
  status try_start() {
    auto s = persistence::store::open({dir->str(), 8 << 20, true});
    REQUIRE_MESSAGE(s.is_ok(), s.error().to_string());
    db = std::move(s).value();
    journal = std::make_unique<persistence::journal_writer>(*db, /*sync=*/true);
    raft::groups_options o;
    o.self = address;
    o.self_id = run_id;
    for (raft::group_id g = 0; g < group_total; ++g)
      o.groups.push_back({g, {{1, "n1"}, {2, "n2"}, {3, "n3"}}, join});
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
      seen.last_lead[g] = std::chrono::steady_clock::now();
      if (l != nullptr && l->leading(g) != term) ++seen.lead_saw_wrong_term;
    };
    o.on_lose = [this](raft::group_id g) {
      raft::groups* l = live.load();
      std::lock_guard lk(seen.mu);
      ++seen.loses[g];
      seen.last_lose[g] = std::chrono::steady_clock::now();
      if (l != nullptr && l->leading(g).has_value()) ++seen.lose_saw_leading;
    };
    if (tune) tune(o);
    auto started = raft::groups::start(std::move(o));
    if (!started) {
      journal->stop();
      journal.reset();
      db.reset();
      return started.error();
    }
    gs = std::move(started).value();
    live.store(gs.get());
    sb.attach(address, gs.get());
    return status::ok();
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

  // A new, empty data directory (same raft id). REQUIRES: stopped.
  void wipe() {
    REQUIRE(!gs);
    dir = std::make_unique<test::temp_dir>("keel-groups");
  }
  // A new, empty data directory, and the groups joined under `new_id` as
  // a member that lost its store does (identity.hpp). REQUIRES: stopped.
  void rejoin(raft_id new_id) {
    wipe();
    run_id = new_id;
    join = true;
    start();
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

  explicit cluster(uint32_t transfer_back_ms = 0)
      : cluster([transfer_back_ms](node& x) { x.transfer_back_ms = transfer_back_ms; }) {}
  // `setup` runs on each node before it first starts.
  explicit cluster(const std::function<void(node&)>& setup) {
    for (raft_id i = 1; i <= 3; ++i) n.push_back(std::make_unique<node>(i, sb));
    for (auto& x : n) {
      setup(*x);
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

inline outcome propose(node& x, raft::group_id g, uint64_t term, const std::string& key,
                       const std::string& value) {
  auto got = std::make_shared<test::future_value<status>>();
  x.gs->propose(g, term, {{family::blobs, false, key, value}},
                [got](const status& s) { got->set(s); });
  return got;
}

inline status ended(const outcome& o, std::chrono::milliseconds within = 10s) {
  auto s = o->wait(within);
  REQUIRE_MESSAGE(s.has_value(), "the proposal did not end in time");
  return *s;
}

inline status barrier(node& x, raft::group_id g) {
  auto got = std::make_shared<test::future_value<status>>();
  x.gs->barrier(g, [got](const status& s) { got->set(s); });
  auto s = got->wait(10s);
  REQUIRE_MESSAGE(s.has_value(), "the barrier did not end in time");
  return *s;
}

inline void wait_blob(node& x, const std::string& key, const std::string& value) {
  CAPTURE(x.address);
  CAPTURE(key);
  CHECK(test::eventually([&] { return x.blob(key) == value; }, 10s));
}

inline std::vector<std::pair<std::string, std::string>> blobs(node& x) {
  auto all = x.db->scan(family::blobs, "", "", 100000);
  REQUIRE(all.is_ok());
  return *all;
}

}  // namespace
