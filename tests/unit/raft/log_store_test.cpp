// A group's raft log, term, vote and snapshot in the raft column family:
// what is written comes back from load as libraft wants it, and truncates
// and snapshots drop exactly the entries libraft drops from its own log.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "net/raft/log_store.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using namespace keel::raft;

namespace {

struct opened {
  test::temp_dir dir{"keel-raftlog"};
  std::unique_ptr<persistence::store> db;
  opened() { reopen(); }
  void reopen() {
    db.reset();
    persistence::store_options o;
    o.dir = dir.str();
    auto s = persistence::store::open(o);
    REQUIRE(s.is_ok());
    db = std::move(s).value();
  }
};

raft_entry entry(raft_term term, const std::string& data, unsigned short type = RAFT_COMMAND) {
  return raft_entry{term, type, {const_cast<char*>(data.data()), data.size()}, nullptr};
}

std::string text(const raft_buffer& b) {
  return {static_cast<const char*>(b.base), b.len};
}

// Loads and frees; the test reads the copies.
struct loaded_copy {
  raft_term term;
  raft_id vote;
  bool has_snapshot;
  raft_index snapshot_index = 0;
  raft_index start;
  std::vector<std::pair<raft_term, std::string>> entries;
};

loaded_copy load(log_store& log) {
  auto l = log.load();
  REQUIRE(l.is_ok());
  loaded_copy c{l->term, l->vote, l->snapshot != nullptr, 0, l->start_index, {}};
  if (l->snapshot) c.snapshot_index = l->snapshot->index;
  for (size_t i = 0; i < l->n_entries; ++i) {
    CHECK(l->entries[i].batch == l->entries[0].batch);
    c.entries.emplace_back(l->entries[i].term, text(l->entries[i].buf));
  }
  release(*l);
  return c;
}

// A configuration of one voter, n1 (raft id 1), closed when it goes.
struct one_voter {
  raft_configuration conf;
  one_voter() {
    raft_configuration_init(&conf);
    REQUIRE(raft_configuration_add(&conf, 1, "n1", RAFT_VOTER) == 0);
  }
  ~one_voter() { raft_configuration_close(&conf); }
  one_voter(const one_voter&) = delete;
  one_voter& operator=(const one_voter&) = delete;
};

void append(opened& o, log_store& log, raft_index first, std::vector<raft_entry> es) {
  auto ops = log.append_ops(first, es.data(), static_cast<unsigned>(es.size()));
  REQUIRE(o.db->write(ops, true).is_ok());
}

}  // namespace

TEST_CASE("an empty group's log loads as term 0, no vote, no snapshot, starting at index 1") {
  opened o;
  log_store log(*o.db, 3);
  auto c = load(log);
  CHECK(c.term == 0);
  CHECK(c.vote == 0);
  CHECK_FALSE(c.has_snapshot);
  CHECK(c.start == 1);
  CHECK(c.entries.empty());
}

TEST_CASE("appended entries, the term and the vote survive a reopen of the store") {
  opened o;
  {
    log_store log(*o.db, 3);
    std::string a = "alpha", b, c(10'000, 'c');
    append(o, log, 1, {entry(1, a), entry(1, b), entry(2, c)});
    REQUIRE(log.set_term(2).is_ok());
    REQUIRE(log.set_vote(7).is_ok());
    // Another group's entries are not this group's.
    log_store other(*o.db, 4);
    std::string x = "x";
    append(o, other, 1, {entry(9, x)});
  }
  o.reopen();
  log_store log(*o.db, 3);
  auto c = load(log);
  CHECK(c.term == 2);
  CHECK(c.vote == 7);
  CHECK(c.start == 1);
  REQUIRE(c.entries.size() == 3);
  CHECK(c.entries[0] == std::pair<raft_term, std::string>{1, "alpha"});
  CHECK(c.entries[1] == std::pair<raft_term, std::string>{1, ""});
  CHECK(c.entries[2] == std::pair<raft_term, std::string>{2, std::string(10'000, 'c')});
}

TEST_CASE("a new term clears the vote cast in the term before") {
  opened o;
  log_store log(*o.db, 0);
  REQUIRE(log.set_term(4).is_ok());
  REQUIRE(log.set_vote(2).is_ok());
  REQUIRE(log.set_term(5).is_ok());
  auto c = load(log);
  CHECK(c.term == 5);
  CHECK(c.vote == 0);
}

TEST_CASE("a truncate drops the entries from its index on and a later append replaces them") {
  opened o;
  log_store log(*o.db, 1);
  std::string s1 = "1", s2 = "2", s3 = "3", s4 = "4";
  append(o, log, 1, {entry(1, s1), entry(1, s2), entry(1, s3), entry(1, s4)});
  REQUIRE(o.db->write(log.truncate_ops(3), true).is_ok());
  auto c = load(log);
  REQUIRE(c.entries.size() == 2);
  CHECK(c.entries[1].second == "2");
  std::string n3 = "new 3";
  append(o, log, 3, {entry(2, n3)});
  c = load(log);
  REQUIRE(c.entries.size() == 3);
  CHECK(c.entries[2] == std::pair<raft_term, std::string>{2, "new 3"});
}

TEST_CASE("a snapshot with trailing entries keeps exactly the last trailing entries it covers") {
  opened o;
  log_store log(*o.db, 2);
  std::vector<std::string> data;
  for (int i = 1; i <= 10; ++i) data.push_back("e" + std::to_string(i));
  std::vector<raft_entry> es;
  for (auto& d : data) es.push_back(entry(3, d));
  append(o, log, 1, es);

  raft_snapshot snap{};
  snap.index = 8;
  snap.term = 3;
  raft_configuration_init(&snap.configuration);
  REQUIRE(raft_configuration_add(&snap.configuration, 1, "n1", RAFT_VOTER) == 0);
  REQUIRE(raft_configuration_add(&snap.configuration, 2, "n2", RAFT_STANDBY) == 0);
  snap.configuration_index = 1;
  std::string part1 = "mark", part2 = "er";
  raft_buffer bufs[2] = {{part1.data(), part1.size()}, {part2.data(), part2.size()}};
  snap.bufs = bufs;
  snap.n_bufs = 2;

  SUBCASE("trailing 3: entries 1..5 go, 6..10 stay") {
    REQUIRE(o.db->write(log.snapshot_ops(snap, 3), true).is_ok());
    auto c = load(log);
    CHECK(c.has_snapshot);
    CHECK(c.snapshot_index == 8);
    CHECK(c.start == 6);
    REQUIRE(c.entries.size() == 5);
    CHECK(c.entries.front().second == "e6");
    CHECK(c.entries.back().second == "e10");
  }
  SUBCASE("trailing 0 (an installed snapshot): every entry goes") {
    REQUIRE(o.db->write(log.snapshot_ops(snap, 0), true).is_ok());
    auto c = load(log);
    CHECK(c.snapshot_index == 8);
    CHECK(c.start == 9);
    CHECK(c.entries.empty());
  }
  SUBCASE("trailing beyond the snapshot: nothing goes") {
    REQUIRE(o.db->write(log.snapshot_ops(snap, 100), true).is_ok());
    auto c = load(log);
    CHECK(c.start == 1);
    CHECK(c.entries.size() == 10);
  }
  raft_configuration_close(&snap.configuration);

  auto back = log.read_snapshot();
  REQUIRE(back.is_ok());
  REQUIRE(*back != nullptr);
  raft_snapshot* s = *back;
  CHECK(s->index == 8);
  CHECK(s->term == 3);
  CHECK(s->configuration_index == 1);
  REQUIRE(s->configuration.n == 2);
  CHECK(std::string(s->configuration.servers[1].address) == "n2");
  CHECK(s->configuration.servers[1].role == RAFT_STANDBY);
  REQUIRE(s->n_bufs == 1);
  CHECK(text(s->bufs[0]) == "marker");
  release(s);
}

TEST_CASE("bootstrap writes a configuration entry in term 1 and is refused a second time") {
  opened o;
  log_store log(*o.db, 5);
  one_voter v;
  REQUIRE(log.bootstrap(v.conf).is_ok());
  auto again = log.bootstrap(v.conf);
  CHECK(again.error_code() == code::conflict);
  auto l = log.load();
  REQUIRE(l.is_ok());
  CHECK(l->term == 1);
  REQUIRE(l->n_entries == 1);
  CHECK(l->entries[0].term == 1);
  CHECK(l->entries[0].type == RAFT_CHANGE);
  CHECK(l->entries[0].buf.len > 0);
  release(*l);
}

TEST_CASE("a log with a gap in its entries, or a value that does not decode, loads as corruption") {
  opened o;
  log_store log(*o.db, 6);
  std::string a = "a", b = "b";
  SUBCASE("gap") {
    append(o, log, 1, {entry(1, a)});
    append(o, log, 3, {entry(1, b)});
  }
  SUBCASE("short entry value") {
    REQUIRE(
        o.db->write({{persistence::family::raft, false, entry_key(6, 1), "short"}}, true).is_ok());
  }
  SUBCASE("term of the wrong size") {
    REQUIRE(o.db->write({{persistence::family::raft, false, term_key(6), "xyz"}}, true).is_ok());
  }
  auto l = log.load();
  REQUIRE_FALSE(l.is_ok());
  CHECK(l.error().error_code() == code::corruption);
}

TEST_CASE("recover appends the configuration after the last entry, in the current term") {
  opened o;
  log_store log(*o.db, 3);
  one_voter v;
  // Nothing to recover in a group without state.
  CHECK(log.recover(v.conf).error_code() == code::conflict);
  auto none = log.last_index();
  REQUIRE(none.is_ok());
  CHECK(*none == 0);

  std::string a = "a", b = "b";
  append(o, log, 1, {entry(1, a), entry(2, b)});
  REQUIRE(log.set_term(5).is_ok());
  REQUIRE(log.recover(v.conf).is_ok());
  raft_buffer want{};
  REQUIRE(raft_configuration_encode(&v.conf, &want) == 0);
  const std::string encoded(static_cast<const char*>(want.base), want.len);
  raft_free(want.base);
  auto last = log.last_index();
  REQUIRE(last.is_ok());
  CHECK(*last == 3);

  auto loaded = log.load();
  REQUIRE(loaded.is_ok());
  REQUIRE(loaded->n_entries == 3);
  const raft_entry& added = loaded->entries[2];
  CHECK(added.term == 5);
  CHECK(added.type == RAFT_CHANGE);
  CHECK(text(added.buf) == encoded);  // libraft's own encoding, as bootstrap writes it
  release(*loaded);
}
