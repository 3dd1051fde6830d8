#include <doctest/doctest.h>

#include "actors/task_queue.hpp"

using namespace keel;
using actors::worker_task;

namespace {

worker_task task(std::string id, std::string queue, uint32_t lease_ms = 1000) {
  worker_task t;
  t.id = std::move(id);
  t.queue = std::move(queue);
  t.agent = "a/1";
  t.effect = 7;
  t.lease_ms = lease_ms;
  return t;
}

}  // namespace

TEST_CASE("tasks are handed out oldest first, one worker at a time per lease") {
  actors::task_queue q;
  q.add(task("1.7.1", "billing"));
  q.add(task("1.8.1", "billing"));
  q.add(task("2.3.1", "mail"));
  auto a = q.poll("billing", "w1", 0);
  REQUIRE(a);
  CHECK(a->id == "1.7.1");
  CHECK(a->lease_until_ms == 1000);
  auto b = q.poll("billing", "w2", 10);
  REQUIRE(b);
  CHECK(b->id == "1.8.1");
  CHECK_FALSE(q.poll("billing", "w3", 20));
  CHECK_FALSE(q.poll("nothing", "w3", 20));
  auto stats = q.stats(20);
  CHECK(stats["billing"].leased == 2);
  CHECK(stats["mail"].ready == 1);
}

TEST_CASE(
    "a lease that runs out makes the task ready again, and only its holder may report it before") {
  actors::task_queue q;
  q.add(task("1.7.1", "billing"));
  REQUIRE(q.poll("billing", "w1", 0));
  auto other = q.find("1.7.1", "w2", 500);
  REQUIRE_FALSE(other);
  CHECK(other.error().error_code() == code::conflict);
  CHECK(q.find("1.7.1", "w1", 500));
  CHECK(q.find("1.7.1", "", 500));  // a report without a worker name is taken
  auto again = q.poll("billing", "w2", 1500);
  REQUIRE(again);
  CHECK(again->deliveries == 2);
  CHECK(q.requeued() == 1);
  CHECK(q.find("1.7.1", "w1", 1600).error().error_code() == code::conflict);
  q.finish("1.7.1");
  CHECK(q.find("1.7.1", "w2", 1600).error().error_code() == code::not_found);
}

TEST_CASE("tasks rebuilt at start-up stay leased for one lease") {
  actors::task_queue q;
  q.add(task("1.7.1", "billing"), 1000);
  CHECK_FALSE(q.poll("billing", "w2", 500));
  CHECK(q.find("1.7.1", "w1", 500));  // its old worker may still finish it
  CHECK(q.poll("billing", "w2", 1001));
}

TEST_CASE("removing an agent's effect drops its task whatever the attempt") {
  actors::task_queue q;
  q.add(task("1.7.1", "billing"));
  q.add(task("1.7.2", "billing"));
  q.remove("a/1", 7);
  CHECK_FALSE(q.poll("billing", "w", 0));
  CHECK(q.stats(0).empty());
}

TEST_CASE(
    "a lapsed lease of a non-idempotent task takes it out of the queue instead of re-leasing it") {
  actors::task_queue q;
  auto pay = task("1.9.1", "billing", 100);
  pay.idempotent = false;
  q.add(pay);
  q.add(task("1.10.1", "billing", 100));  // idempotent
  REQUIRE(q.poll("billing", "w1", 0)->id == "1.9.1");
  REQUIRE(q.poll("billing", "w1", 0)->id == "1.10.1");
  CHECK(q.take_lapsed(50).empty());  // both leases hold
  // Both lapse: the idempotent task is handed out again, the other is not.
  auto next = q.poll("billing", "w2", 200);
  REQUIRE(next);
  CHECK(next->id == "1.10.1");
  auto lapsed = q.take_lapsed(200);
  REQUIRE(lapsed.size() == 1);
  CHECK(lapsed[0].id == "1.9.1");
  CHECK(lapsed[0].worker == "w1");
  CHECK(q.take_lapsed(300).empty());
  CHECK(q.find("1.9.1", "", 300).error().error_code() == code::not_found);
}

TEST_CASE(
    "add_new leaves a known task as it is and refuses one that was finished, removed or taken as "
    "lapsed") {
  actors::task_queue q;
  q.add(task("1.1.1", "billing"));
  REQUIRE(q.poll("billing", "w1", 0));
  // Known and leased to w1: the lease stays w1's.
  CHECK_FALSE(q.add_new(task("1.1.1", "billing"), 5000));
  CHECK(q.find("1.1.1", "w1", 10).is_ok());
  // A new id goes in, leased as after a restart.
  auto render = task("1.2.1", "billing");
  render.effect = 2;
  CHECK(q.add_new(render, 5000));
  CHECK_FALSE(q.poll("billing", "w2", 10));
  // Ended lately: a store scan that raced its result must not bring it back.
  q.finish("1.1.1");
  CHECK_FALSE(q.add_new(task("1.1.1", "billing"), 0));
  q.remove("a/1", 2);
  CHECK_FALSE(q.add_new(render, 0));
  auto pay = task("1.3.1", "billing", 100);
  pay.idempotent = false;
  q.add(pay);
  REQUIRE(q.poll("billing", "w1", 0));
  REQUIRE(q.take_lapsed(200).size() == 1);
  CHECK_FALSE(q.add_new(pay, 0));
  CHECK(q.stats(300).empty());
}
