// Keel's raft_io and loop under a real libraft: three servers, each with its
// own store, on one raft loop, connected by an in-process switchboard that
// can cut links. The conformance test the io's contract rests on: elect,
// replicate, restart from the store, snapshot and compact, catch up by an
// installed snapshot, and truncate a diverged log.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.hpp"
#include "net/raft/io.hpp"
#include "net/raft/log_store.hpp"
#include "net/raft/loop.hpp"
#include "persistence/journal_writer.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;

namespace {

// Runs `fn` on the loop and waits (bounded) for its result.
template <class F>
auto on_loop(raft::loop& lp, F fn) -> decltype(fn()) {
  using T = decltype(fn());
  auto done = std::make_shared<std::promise<T>>();
  auto fut = done->get_future();
  REQUIRE(lp.post([done, fn]() mutable {
    if constexpr (std::is_void_v<T>) {
      fn();
      done->set_value();
    } else {
      done->set_value(fn());
    }
  }));
  REQUIRE(fut.wait_for(10s) == std::future_status::ready);
  return fut.get();
}

}  // namespace

TEST_CASE(
    "the raft loop runs tasks posted from several threads, each once, in each thread's order") {
  raft::loop lp;
  constexpr int threads = 4, per_thread = 500;
  std::vector<std::vector<int>> seen(threads);  // touched on the loop only
  std::promise<void> all;
  int count = 0;
  std::vector<std::thread> posters;
  for (int t = 0; t < threads; ++t) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        REQUIRE(lp.post([&, t, i] {
          seen[t].push_back(i);
          if (++count == threads * per_thread) all.set_value();
        }));
      }
    });
  }
  for (auto& p : posters) p.join();
  REQUIRE(all.get_future().wait_for(10s) == std::future_status::ready);
  for (int t = 0; t < threads; ++t) {
    REQUIRE(seen[t].size() == per_thread);
    for (int i = 0; i < per_thread; ++i) CHECK(seen[t][i] == i);
  }
}

TEST_CASE(
    "a timer of the raft loop fires repeatedly until cancelled, and stop refuses later posts") {
  raft::loop lp;
  std::atomic<int> ticks{0};
  std::promise<void> three;
  auto id = lp.every(5ms, [&] {
    if (++ticks == 3) three.set_value();
  });
  REQUIRE(three.get_future().wait_for(10s) == std::future_status::ready);
  lp.cancel(id);
  // A task posted after the cancel runs after any tick already running;
  // from then on the count stays.
  int after_cancel = on_loop(lp, [&] { return ticks.load(); });
  // Another timer proves time passes on the loop without the cancelled one.
  std::promise<void> other;
  int other_ticks = 0;
  lp.every(5ms, [&] {
    if (++other_ticks == 4) other.set_value();
  });
  REQUIRE(other.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(on_loop(lp, [&] { return ticks.load(); }) == after_cancel);
  lp.stop();
  CHECK_FALSE(lp.post([] {}));
}

namespace {

// The trivial state machine: counts applied commands and hashes their
// values in order; its snapshot is that pair (16 bytes).
struct counter {
  uint64_t count = 0;
  uint64_t hash = 0;
  void add(uint64_t v) {
    ++count;
    hash = hash * 1'000'003 + v;
  }
};

int fsm_apply(raft_fsm* fsm, const raft_buffer* buf, void** result) {
  REQUIRE(buf->len == 8);
  uint64_t v;
  std::memcpy(&v, buf->base, 8);
  static_cast<counter*>(fsm->data)->add(v);
  *result = nullptr;
  return 0;
}

int fsm_snapshot(raft_fsm* fsm, raft_buffer* bufs[], unsigned* n) {
  auto* c = static_cast<counter*>(fsm->data);
  *bufs = static_cast<raft_buffer*>(raft_malloc(sizeof(raft_buffer)));
  (*bufs)[0].len = 16;
  (*bufs)[0].base = raft_malloc(16);
  std::memcpy((*bufs)[0].base, &c->count, 8);
  std::memcpy(static_cast<char*>((*bufs)[0].base) + 8, &c->hash, 8);
  *n = 1;
  return 0;
}

int fsm_restore(raft_fsm* fsm, raft_buffer* buf) {
  auto* c = static_cast<counter*>(fsm->data);
  REQUIRE(buf->len == 16);
  std::memcpy(&c->count, buf->base, 8);
  std::memcpy(&c->hash, static_cast<char*>(buf->base) + 8, 8);
  raft_free(buf->base);
  return 0;
}

constexpr unsigned snapshot_threshold = 64, snapshot_trailing = 16;
constexpr raft::group_id group = 7;

struct member;

// The in-process transport: a message is posted to the loop and handed to
// the receiver's io, unless the link between the two is cut. Touched on
// the loop only.
struct switchboard {
  raft::loop& lp;
  std::map<std::string, raft::io*> ios;
  std::set<std::pair<std::string, std::string>> cut;
  int refused = 0;
  int installs = 0;  // InstallSnapshot messages delivered
  bool open(const std::string& a, const std::string& b) const { return !cut.count({a, b}); }
};

struct wire : raft::sender {
  switchboard& sb;
  std::string self;
  wire(switchboard& s, std::string me) : sb(s), self(std::move(me)) {}
  void send(std::string_view to, raft::group_id g, std::string bytes) override {
    CHECK(g == group);
    if (!sb.open(self, std::string(to))) return;
    sb.lp.post([sb = &sb, from = self, to = std::string(to), bytes = std::move(bytes)] {
      auto it = sb->ios.find(to);
      if (it == sb->ios.end() || !sb->open(from, to)) return;
      if (bytes.size() > 1 && bytes[1] == RAFT_IO_INSTALL_SNAPSHOT) ++sb->installs;
      if (!it->second->recv(from, bytes)) ++sb->refused;
    });
  }
};

struct member {
  raft_id id;
  std::string address;
  test::temp_dir dir{"keel-raftio"};
  std::unique_ptr<persistence::store> db;
  std::unique_ptr<persistence::journal_writer> journal;
  std::unique_ptr<wire> out;
  std::unique_ptr<raft::io> io;
  struct ::raft r {};
  raft_fsm fsm{};
  counter state;
  bool running = false;
  uint32_t hold_votes_ms = 0;        // io_options.hold_votes_ms at the next start
  unsigned election_timeout = 1000;  // at the next start

  member(raft_id i) : id(i), address("n" + std::to_string(i)) {}

  void open_store() {
    persistence::store_options o;
    o.dir = dir.str();
    auto s = persistence::store::open(o);
    REQUIRE(s.is_ok());
    db = std::move(s).value();
    journal = std::make_unique<persistence::journal_writer>(*db, /*sync=*/true);
  }

  // Opens the store and starts the server on the loop; bootstraps `conf`
  // when given (a fresh store).
  void start(switchboard& sb, const raft_configuration* conf) {
    open_store();
    out = std::make_unique<wire>(sb, address);
    raft::io_options o;
    o.group = group;
    o.db = db.get();
    o.submit = [j = journal.get()](persistence::write_set ops,
                                   std::function<void(const status&)> done) {
      j->submit(std::move(ops), std::move(done));
    };
    o.out = out.get();
    o.on = &sb.lp;
    o.clock_ms = [] { return static_cast<uint64_t>(mono_ns() / 1'000'000); };
    o.hold_votes_ms = hold_votes_ms;
    io = std::make_unique<raft::io>(std::move(o));
    state = counter{};
    fsm = raft_fsm{};
    fsm.version = 1;
    fsm.data = &state;
    fsm.apply = fsm_apply;
    fsm.snapshot = fsm_snapshot;
    fsm.restore = fsm_restore;
    int rv = on_loop(sb.lp, [&] {
      r = ::raft{};
      int e = raft_init(&r, io->get(), &fsm, id, address.c_str());
      if (e != 0) return e;
      r.data = this;
      // Generous for a loaded 2-core machine: no spurious elections.
      raft_set_election_timeout(&r, election_timeout);
      raft_set_heartbeat_timeout(&r, 100);
      raft_set_snapshot_threshold(&r, snapshot_threshold);
      raft_set_snapshot_trailing(&r, snapshot_trailing);
      if (conf != nullptr && (e = raft_bootstrap(&r, conf)) != 0) return e;
      sb.ios[address] = io.get();
      return raft_start(&r);
    });
    REQUIRE_MESSAGE(rv == 0, raft::error_text(rv));
    running = true;
  }

  // raft_close, then the journal and the store.
  void stop(switchboard& sb) {
    if (!running) return;
    running = false;
    auto closed = std::make_shared<std::promise<void>>();
    auto fut = closed->get_future();
    on_loop(sb.lp, [&, closed] {
      sb.ios.erase(address);
      r.data = closed.get();
      raft_close(
          &r, [](struct ::raft* rr) { static_cast<std::promise<void>*>(rr->data)->set_value(); });
    });
    REQUIRE(fut.wait_for(10s) == std::future_status::ready);
    journal->stop();
    io.reset();
    journal.reset();
    db.reset();
  }
};

struct cluster {
  raft::loop lp;
  switchboard sb{lp, {}, {}, 0};
  std::vector<std::unique_ptr<member>> m;

  cluster() {
    raft_configuration conf;
    raft_configuration_init(&conf);
    for (raft_id i = 1; i <= 3; ++i) {
      m.push_back(std::make_unique<member>(i));
      REQUIRE(raft_configuration_add(&conf, i, m.back()->address.c_str(), RAFT_VOTER) == 0);
    }
    for (auto& x : m) x->start(sb, &conf);
    raft_configuration_close(&conf);
  }
  ~cluster() {
    for (auto& x : m) x->stop(sb);
    lp.stop();
  }
  cluster(const cluster&) = delete;
  cluster& operator=(const cluster&) = delete;

  // The running member that is leader (among `among`), waiting for one.
  member* leader(std::vector<member*> among = {}) {
    if (among.empty())
      for (auto& x : m) among.push_back(x.get());
    member* found = nullptr;
    bool ok = test::eventually(
        [&] {
          found = on_loop(lp, [&]() -> member* {
            for (auto* x : among)
              if (x->running && raft_state(&x->r) == RAFT_LEADER) return x;
            return nullptr;
          });
          return found != nullptr;
        },
        10s);
    REQUIRE_MESSAGE(ok, "no leader within 10 s");
    return found;
  }

  counter state_of(member& x) {
    return on_loop(lp, [&] { return x.state; });
  }
};

// Proposes values first..last on `leader` with up to `window` in flight;
// counts how the proposals ended. Runs on the loop. After a failure the
// values not yet proposed count as failed too: a failure callback runs
// while libraft changes state, where it must not be called again.
struct proposer {
  member* leader;
  uint64_t next, last;
  int window = 16;
  int in_flight = 0, done = 0, failed = 0;

  void pump() {
    while (in_flight < window && next <= last) {
      raft_buffer b{raft_malloc(8), 8};
      uint64_t v = next++;
      std::memcpy(b.base, &v, 8);
      auto* req = new raft::apply_request{};
      req->data = this;
      int rv = raft_apply(&leader->r, req, &b, 1, [](raft::apply_request* q, int st, void*) {
        auto* p = static_cast<proposer*>(q->data);
        delete q;
        --p->in_flight;
        if (st == 0) {
          ++p->done;
          p->pump();
          return;
        }
        ++p->failed;
        p->failed += static_cast<int>(p->last + 1 - p->next);
        p->next = p->last + 1;
      });
      if (rv != 0) {
        raft_free(b.base);  // refused: still ours
        delete req;
        ++failed;
        continue;
      }
      ++in_flight;
    }
  }
};

// Proposes first..last and waits until every proposal has ended.
std::pair<int, int> propose(cluster& c, member* leader, uint64_t first, uint64_t last) {
  auto p = std::make_shared<proposer>(proposer{leader, first, last});
  on_loop(c.lp, [p] { p->pump(); });
  int total = static_cast<int>(last - first + 1);
  bool ended = test::eventually(
      [&] { return on_loop(c.lp, [p] { return p->done + p->failed; }) == total; }, 20s);
  REQUIRE_MESSAGE(ended, "proposals did not end within 20 s");
  return on_loop(c.lp, [p] { return std::pair{p->done, p->failed}; });
}

counter expected(uint64_t first, uint64_t last, counter from = {}) {
  for (uint64_t v = first; v <= last; ++v) from.add(v);
  return from;
}

void wait_applied(cluster& c, member& x, counter want) {
  bool ok = test::eventually(
      [&] {
        counter s = c.state_of(x);
        return s.count == want.count && s.hash == want.hash;
      },
      10s);
  CAPTURE(x.address);
  CAPTURE(c.state_of(x).count);
  CAPTURE(want.count);
  REQUIRE_MESSAGE(ok, "server did not apply every command within 10 s");
}

}  // namespace

TEST_CASE(
    "three servers on Keel's io elect a leader, replicate, restart from RocksDB and compact") {
  cluster c;
  member* l = c.leader();
  auto [done, failed] = propose(c, l, 1, 1000);
  CHECK(failed == 0);
  CHECK(done == 1000);
  counter want = expected(1, 1000);
  for (auto& x : c.m) wait_applied(c, *x, want);
  CHECK(on_loop(c.lp, [&] { return c.sb.refused; }) == 0);

  SUBCASE("snapshots drop the log below index - trailing in RocksDB") {
    for (auto& x : c.m) {
      CAPTURE(x->address);
      raft::log_store log(*x->db, group);
      bool compacted = test::eventually(
          [&] {
            auto loaded = log.load();
            REQUIRE(loaded.is_ok());
            // Exactly index - trailing + 1 after a snapshot of its own; past
            // the snapshot when a slow follower was sent one (trailing 0).
            bool ok = loaded->snapshot != nullptr && loaded->snapshot->index >= 1000 / 2 &&
                      loaded->start_index >= loaded->snapshot->index - snapshot_trailing + 1;
            raft::release(*loaded);
            return ok;
          },
          10s);
      CHECK(compacted);
    }
  }

  SUBCASE("a follower stopped and reopened loads its term, vote and log, and catches up") {
    member* f = c.m[0].get() == l ? c.m[1].get() : c.m[0].get();
    struct seen {
      raft_term term;
      raft_id vote;
      raft_index last;
    };
    seen before = on_loop(c.lp, [&] {
      return seen{f->r.current_term, f->r.voted_for, raft_last_index(&f->r)};
    });
    f->stop(c.sb);

    f->open_store();
    {
      raft::log_store log(*f->db, group);
      auto loaded = log.load();
      REQUIRE(loaded.is_ok());
      CHECK(loaded->term == before.term);
      CHECK(loaded->vote == before.vote);
      CHECK(loaded->start_index + loaded->n_entries - 1 == before.last);
      REQUIRE(loaded->snapshot != nullptr);
      raft::release(*loaded);
    }
    f->journal->stop();
    f->journal.reset();
    f->db.reset();

    // The other two go on without it, past its snapshot window: it needs
    // an installed snapshot to catch up.
    auto [done2, failed2] = propose(c, l, 1001, 1200);
    CHECK(failed2 == 0);
    CHECK(done2 == 200);
    f->start(c.sb, nullptr);
    want = expected(1001, 1200, want);
    for (auto& x : c.m) wait_applied(c, *x, want);
    CHECK(on_loop(c.lp, [&] { return c.sb.installs; }) > 0);
  }

  SUBCASE("a leader cut off with entries nobody else has gets its log truncated after the heal") {
    std::vector<member*> others;
    for (auto& x : c.m)
      if (x.get() != l) others.push_back(x.get());
    on_loop(c.lp, [&] {
      for (auto* o : others) {
        c.sb.cut.insert({l->address, o->address});
        c.sb.cut.insert({o->address, l->address});
      }
    });
    raft_term old_term = on_loop(c.lp, [&] { return l->r.current_term; });
    // Uncommitted on the old leader: more entries than the new leader will
    // write, so a suffix must be dropped, not only overwritten.
    auto stale = std::make_shared<proposer>(proposer{l, 5001, 5050, 50});
    on_loop(c.lp, [&] { stale->pump(); });

    member* l2 = c.leader(others);
    auto [done2, failed2] = propose(c, l2, 1001, 1020);
    CHECK(failed2 == 0);
    want = expected(1001, 1020, want);
    for (auto* o : others) wait_applied(c, *o, want);

    on_loop(c.lp, [&] { c.sb.cut.clear(); });
    wait_applied(c, *l, want);
    // Every stale proposal failed on the old leader.
    CHECK(test::eventually([&] { return on_loop(c.lp, [&] { return stale->failed; }) == 50; }));
    CHECK(on_loop(c.lp, [&] { return stale->done; }) == 0);
    // The old leader's stored log ends where the new leader's does, and
    // no entry of its old term is left after the divergence.
    raft_index last2 = on_loop(c.lp, [&] { return raft_last_index(&l2->r); });
    raft::log_store log(*l->db, group);
    bool same = test::eventually([&] {
      auto loaded = log.load();
      REQUIRE(loaded.is_ok());
      bool ok = loaded->start_index + loaded->n_entries - 1 == last2;
      for (size_t i = 0; ok && i < loaded->n_entries; ++i) {
        uint64_t v = 0;
        if (loaded->entries[i].type == RAFT_COMMAND && loaded->entries[i].buf.len == 8)
          std::memcpy(&v, loaded->entries[i].buf.base, 8);
        if (v >= 5001) ok = false;
      }
      raft::release(*loaded);
      return ok;
    });
    CHECK(same);
    CHECK(on_loop(c.lp, [&] { return l->r.current_term; }) > old_term);
  }
}

TEST_CASE("a restarted server drops vote requests for hold_votes_ms, then votes again") {
  cluster c;
  member* l = c.leader();
  std::vector<member*> rest;
  for (auto& x : c.m)
    if (x.get() != l) rest.push_back(x.get());
  member* held = rest[0];
  member* campaigner = rest[1];
  // The leader goes; one follower restarts holding votes for 4 s and with
  // an election timeout it never reaches here, so it cannot win itself.
  // The other campaigns at once (1-2 s after the leader's last message)
  // and needs the held one's vote.
  constexpr auto hold = 4s;
  l->stop(c.sb);
  held->stop(c.sb);
  held->hold_votes_ms = static_cast<uint32_t>(std::chrono::milliseconds(hold).count());
  held->election_timeout = 600'000;
  const auto restarted = std::chrono::steady_clock::now();
  held->start(c.sb, nullptr);
  CHECK(c.leader({campaigner}) == campaigner);
  CHECK(std::chrono::steady_clock::now() - restarted >= hold);
}
