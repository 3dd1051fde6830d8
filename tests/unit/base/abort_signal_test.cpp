#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "base/abort_signal.hpp"
#include "support/wait.hpp"

using keel::abort_signal;
using namespace std::chrono_literals;

TEST_CASE("an abort signal is raised once and stays raised") {
  abort_signal s;
  CHECK_FALSE(s.raised());
  CHECK(s.raise());
  CHECK(s.raised());
  CHECK_FALSE(s.raise());  // already raised: not counted twice
  CHECK(s.raised());
}

TEST_CASE("a hook runs once, in the raising thread, and never after it is destroyed") {
  abort_signal s;
  std::atomic<int> runs{0};
  std::thread::id ran_on;
  auto counted = s.on_raise([&] {
    ran_on = std::this_thread::get_id();
    ++runs;
  });
  std::atomic<int> dropped_runs{0};
  {
    auto dropped = s.on_raise([&] { ++dropped_runs; });
  }
  CHECK(runs == 0);

  std::thread::id raiser;
  std::thread t([&] {
    raiser = std::this_thread::get_id();
    s.raise();
    s.raise();
  });
  t.join();
  CHECK(runs == 1);
  CHECK(ran_on == raiser);
  CHECK(dropped_runs == 0);

  SUBCASE("a hook on a raised signal runs at once, in the registering thread") {
    std::thread::id late_on;
    auto late = s.on_raise([&] { late_on = std::this_thread::get_id(); });
    CHECK(late_on == std::this_thread::get_id());
  }
}

TEST_CASE("wait_for returns as soon as another thread raises the signal, else at its timeout") {
  abort_signal s;
  auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(s.wait_for(30ms));
  CHECK(std::chrono::steady_clock::now() - start >= 30ms);

  keel::test::future_value<bool> waited;
  std::thread waiter([&] { waited.set(s.wait_for(60s)); });
  CHECK_FALSE(waited.wait(20ms).has_value());  // still waiting
  start = std::chrono::steady_clock::now();
  s.raise();
  auto r = waited.wait(10s);
  auto took = std::chrono::steady_clock::now() - start;
  waiter.join();
  REQUIRE(r.has_value());
  CHECK(*r);
  CHECK(took < 5s);        // far below the 60 s it would wait unraised
  CHECK(s.wait_for(60s));  // raised: returns at once
}
