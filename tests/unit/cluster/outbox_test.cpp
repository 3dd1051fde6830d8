// The cluster outbox (net/cluster/outbox.hpp) of a replicated member, on a
// real node (actors, store, journal) whose writes go through a stand-in
// replicator: an agent's entries are written to and erased from its group,
// only the group's leader delivers them, and entries without a sender stay
// the node's own. Deliveries go to a test double that the test answers.

#include "net/cluster/outbox.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/node.hpp"
#include "base/bytes.hpp"
#include "persistence/keys.hpp"
#include "support/stand_in_replicator.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;
using keel::test::eventually;
using keel::test::future_value;
using net::delivery_ack;
using net::outbox_item;

namespace {

// Batches handed to the owner, held until the test answers them.
struct owner_double {
  using done_fn = std::function<void(result<std::vector<delivery_ack>>)>;
  std::mutex mu;
  std::deque<std::pair<std::vector<outbox_item>, done_fn>> batches;
  std::atomic<bool> up{true};

  void take(std::vector<outbox_item> batch, done_fn done) {
    std::lock_guard lk(mu);
    batches.emplace_back(std::move(batch), std::move(done));
  }
  // The next batch, waited for up to 10 s; empty when none came.
  std::pair<std::vector<outbox_item>, done_fn> next() {
    std::pair<std::vector<outbox_item>, done_fn> out;
    eventually(
        [&] {
          std::lock_guard lk(mu);
          if (batches.empty()) return false;
          out = std::move(batches.front());
          batches.pop_front();
          return true;
        },
        10s);
    return out;
  }
  std::size_t pending() {
    std::lock_guard lk(mu);
    return batches.size();
  }
};

// Every item acknowledged as taken.
std::vector<delivery_ack> all_ok(const std::vector<outbox_item>& batch) {
  std::vector<delivery_ack> acks;
  for (const auto& i : batch) {
    delivery_ack a;
    a.ok = true;
    a.ack.id = i.id;
    acks.push_back(std::move(a));
  }
  return acks;
}

struct outbox_node {
  test::temp_dir dir{"keel-outbox"};
  test::stand_in_replicator repl;
  std::unique_ptr<actors::node> node;
  owner_double owner;
  std::unique_ptr<net::cluster_outbox> outbox;

  outbox_node() {
    config::node_config c;
    c.data_dir = dir.str();
    c.scheduler_threads = 2;
    c.block_cache_bytes = 8 << 20;
    actors::start_options o;
    o.repl = &repl;
    auto started = actors::node::start(c, std::move(o));
    REQUIRE_MESSAGE(started.is_ok(), started.error().to_string());
    node = std::move(*started);
    repl.n = node.get();
    net::cluster_outbox::options oo;
    oo.repl = &repl;
    oo.retry_min_ms = 10;
    oo.retry_max_ms = 50;
    outbox = std::make_unique<net::cluster_outbox>(
        *node, [](std::string_view) { return std::string("peer"); },
        [this](const std::string&) { return owner.up.load(); },
        [this](const std::string&, std::vector<outbox_item> batch, owner_double::done_fn done) {
          owner.take(std::move(batch), std::move(done));
        },
        oo);
    REQUIRE(outbox->start().is_ok());
    // This member leads every group of the stand-in.
    for (uint32_t g = 0; g < 4; ++g) outbox->lead(g);
  }
  ~outbox_node() {
    outbox->stop();
    node->stop();
  }

  // Appends a message from `from` to b/1; the durable answer.
  result<outbox_item> append(const std::string& from, const std::string& id) {
    outbox_item i;
    i.name = "b/1";
    i.kind = persistence::inbox_kind::message;
    i.id = id;
    i.from = from;
    i.body = {{"text", id}};
    future_value<result<outbox_item>> durable;
    outbox->append(
        std::move(i), [&](result<outbox_item> r) { durable.set(std::move(r)); }, nullptr);
    auto r = durable.wait();
    REQUIRE(r);
    return std::move(*r);
  }
  bool stored(uint64_t seq) {
    std::string k;
    put_u64_be(k, seq);
    auto v = node->storage().get(persistence::family::outbox, k);
    REQUIRE(v.is_ok());
    return v->has_value();
  }
  std::size_t proposals_to(uint32_t g) {
    std::size_t n = 0;
    for (const auto& p : repl.seen()) n += p.group == g;
    return n;
  }
};

}  // namespace

TEST_CASE(
    "a replicated outbox writes an agent's entry into its group, and only the group's leader "
    "delivers and erases it") {
  outbox_node x;
  const uint32_t g = x.repl.group_of("a/1");
  x.owner.up = false;  // held here until the test lets it go
  auto item = x.append("a/1", "m-1");
  REQUIRE_MESSAGE(item.is_ok(), item.error().to_string());
  CHECK((item->seq >> 48) == uint64_t{g} + 1);  // an id of the sender's group
  CHECK(x.proposals_to(g) == 1);
  CHECK(x.stored(item->seq));
  CHECK(x.outbox->holds("b/1"));

  // Another member leads the group now: the entry is its to deliver.
  x.outbox->release(g);
  CHECK_FALSE(x.outbox->holds("b/1"));
  CHECK(x.stored(item->seq));  // still in the group's log

  // Led here again: read back from the store and delivered once.
  const uint64_t lead = x.outbox->lead(g);
  REQUIRE(x.outbox->adopt(g, lead).is_ok());
  REQUIRE(x.outbox->adopt(g, lead).is_ok());  // twice: nothing doubles
  CHECK(x.outbox->holds("b/1"));
  x.owner.up = true;
  x.outbox->wake();
  auto [batch, done] = x.owner.next();
  REQUIRE(batch.size() == 1);
  CHECK(batch[0].seq == item->seq);
  CHECK(batch[0].id == "m-1");
  done(all_ok(batch));
  // The erase is a proposal to the same group.
  CHECK(eventually([&] { return !x.stored(item->seq); }, 10s));
  CHECK(x.proposals_to(g) == 2);
  CHECK_FALSE(x.outbox->holds("b/1"));
  CHECK(x.owner.pending() == 0);
}

TEST_CASE("a replicated outbox refuses an entry of a group this member does not lead") {
  outbox_node x;
  x.repl.lead = false;
  auto item = x.append("a/1", "m-1");
  REQUIRE_FALSE(item.is_ok());
  CHECK(item.error().error_code() == code::unavailable);
  CHECK(x.repl.seen().empty());
  CHECK_FALSE(x.outbox->holds("b/1"));
}

TEST_CASE(
    "an entry a member stops leading while it is in flight is not sent again from there, and "
    "one without a sender stays the node's own") {
  outbox_node x;
  const uint32_t g = x.repl.group_of("a/1");
  auto agent_entry = x.append("a/1", "m-1");
  REQUIRE(agent_entry.is_ok());
  auto [batch, done] = x.owner.next();
  REQUIRE(batch.size() == 1);
  // Leadership moves while the batch is out; the owner could not take it.
  x.repl.lead = false;
  x.outbox->release(g);
  delivery_ack retry;
  retry.retry = true;
  retry.code = "unavailable";
  done(std::vector<delivery_ack>{retry});
  CHECK_FALSE(x.outbox->holds("b/1"));
  CHECK(x.stored(agent_entry->seq));  // the next leader's to deliver

  // No sender: the node's sequence and journal, whoever leads what.
  auto own = x.append("", "m-2");
  REQUIRE_MESSAGE(own.is_ok(), own.error().to_string());
  CHECK((own->seq >> 48) == 0);
  CHECK(x.stored(own->seq));
  auto [second, ack] = x.owner.next();
  REQUIRE(second.size() == 1);
  CHECK(second[0].id == "m-2");
  ack(all_ok(second));
  CHECK(eventually([&] { return !x.stored(own->seq); }, 10s));
  CHECK(x.repl.seen().size() == 1);  // only the agent entry's append
}

TEST_CASE("an adopt that a release overtook queues nothing") {
  outbox_node x;
  const uint32_t g = x.repl.group_of("a/1");
  x.owner.up = false;
  auto item = x.append("a/1", "m-1");
  REQUIRE(item.is_ok());
  x.outbox->release(g);
  // Led again, and lost again before the adopt ran on its thread.
  const uint64_t lead = x.outbox->lead(g);
  x.outbox->release(g);
  REQUIRE(x.outbox->adopt(g, lead).is_ok());
  CHECK_FALSE(x.outbox->holds("b/1"));
  CHECK(x.stored(item->seq));
}
