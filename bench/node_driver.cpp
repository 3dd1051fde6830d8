#include "bench/node_driver.hpp"

#include <mutex>
#include <thread>

#include "bench/bench_util.hpp"

namespace keel::bench {

namespace {

// Shared with the callbacks of a pipelined run; outlives them via shared_ptr.
struct pipeline {
  std::atomic<int64_t> in_flight{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string first_error;

  void fail(std::string why) {
    std::lock_guard lk(mu);
    if (first_error.empty()) first_error = std::move(why);
    failed.store(true, std::memory_order_release);
  }
  void check() {
    if (!failed.load(std::memory_order_acquire)) return;
    std::lock_guard lk(mu);
    die(first_error);
  }
  // Waits (yielding: this is set-up, not a measured path) until fewer than
  // `limit` requests are in flight.
  void wait_below(int64_t limit, const char* what) {
    const int64_t deadline = now_ns() + 120'000'000'000;
    while (in_flight.load(std::memory_order_acquire) >= limit) {
      check();
      if (now_ns() > deadline) die(std::string("stalled while ") + what);
      std::this_thread::yield();
    }
    check();
  }
};

}  // namespace

std::unique_ptr<actors::node> start_node(const config::node_config& cfg) {
  auto n = actors::node::start(cfg);
  if (!n) die("node::start: " + n.error().to_string());
  return std::move(*n);
}

double node_metric(actors::node& n, std::string_view name) {
  std::string full = "keel_" + std::string(name);
  double v = prom_value(n.metrics_text(), full);
  if (v < 0) die("metric " + full + " is missing from metrics_text()");
  return v;
}

int64_t sync_driver::query_total(const std::string& name, int64_t expected) {
  done_.store(false, std::memory_order_relaxed);
  answer_.reset();
  int64_t t0 = now_ns();
  node_.query(name, json{{"get", true}}, [this](result<json> r) {
    answer_.emplace(std::move(r));
    done_.store(true, std::memory_order_release);
  });
  spin_until(done_, "query");
  int64_t t1 = now_ns();
  const auto& a = *answer_;
  if (!a) die("query " + name + ": " + a.error().to_string());
  if (!a->is_object() || a->value("total", INT64_MIN) != expected)
    die("query " + name + " answered " + a->dump() + ", expected total " +
        std::to_string(expected));
  return t1 - t0;
}

int64_t sync_driver::send_add(const std::string& name, int64_t add, int64_t expected) {
  done_.store(false, std::memory_order_relaxed);
  ack_.reset();
  reply_.reset();
  int64_t t0 = now_ns();
  node_.send(
      name, actors::inbound_message{{}, "bench", json{{"add", add}}},
      [this](result<actors::send_ack> a) { ack_.emplace(std::move(a)); },
      [this](result<actors::agent_reply> r) {
        reply_.emplace(std::move(r));
        done_.store(true, std::memory_order_release);
      });
  spin_until(done_, "send");
  int64_t t1 = now_ns();
  if (!ack_) die("send " + name + ": replied before it was acknowledged");
  if (!*ack_) die("send " + name + ": " + ack_->error().to_string());
  const auto& r = *reply_;
  if (!r) die("send " + name + ": reply failed: " + r.error().to_string());
  if (!r->ok) die("send " + name + ": agent answered " + r->code + ": " + r->message);
  if (!r->body.is_object() || r->body.value("total", INT64_MIN) != expected)
    die("send " + name + " replied " + r->body.dump() + ", expected total " +
        std::to_string(expected));
  return t1 - t0;
}

int64_t spawn_all(actors::node& n, uint64_t count, const name_fn& name,
                  const std::function<json(uint64_t)>& input, std::size_t window) {
  auto p = std::make_shared<pipeline>();
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < count; ++i) {
    p->wait_below(static_cast<int64_t>(window), "spawning");
    p->in_flight.fetch_add(1, std::memory_order_acq_rel);
    std::string nm = name(i);
    n.spawn(nm, "counter", input(i), [p, nm](result<actors::agent_view> v) {
      if (!v) p->fail("spawn " + nm + ": " + v.error().to_string());
      p->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    });
  }
  p->wait_below(1, "spawning");
  return now_ns() - t0;
}

int64_t query_all(actors::node& n, uint64_t count, const name_fn& name,
                  const std::function<int64_t(uint64_t)>& expected, std::size_t window) {
  auto p = std::make_shared<pipeline>();
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < count; ++i) {
    p->wait_below(static_cast<int64_t>(window), "querying");
    p->in_flight.fetch_add(1, std::memory_order_acq_rel);
    std::string nm = name(i);
    int64_t want = expected(i);
    n.query(nm, json{{"get", true}}, [p, nm, want](result<json> r) {
      if (!r)
        p->fail("query " + nm + ": " + r.error().to_string());
      else if (!r->is_object() || r->value("total", INT64_MIN) != want)
        p->fail("query " + nm + " answered " + r->dump() + ", expected total " +
                std::to_string(want));
      p->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    });
  }
  p->wait_below(1, "querying");
  return now_ns() - t0;
}

int64_t wait_all_hibernated(actors::node& n, int64_t timeout_ms) {
  int64_t t0 = now_ns();
  bool ok = poll_until([&] { return n.live_agents() == 0; }, std::chrono::milliseconds(timeout_ms),
                       std::chrono::milliseconds(5));
  if (!ok)
    die(std::to_string(n.live_agents()) + " agents still live after " + std::to_string(timeout_ms) +
        " ms of waiting for hibernation");
  return (now_ns() - t0) / 1'000'000;
}

}  // namespace keel::bench
