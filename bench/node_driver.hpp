#pragma once
// Driving a keel::actors::node from a benchmark: one request at a time with
// the caller spinning on the answer (for latencies), or many in flight (for
// setting agents up). Every answer is checked; a wrong one ends the bench.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "actors/node.hpp"
#include "config/node_config.hpp"

namespace keel::bench {

using json = nlohmann::json;

// node::start or die.
std::unique_ptr<actors::node> start_node(const config::node_config& cfg);

// Reads keel_<name> from the node's metrics; dies when absent.
double node_metric(actors::node& n, std::string_view name);

// One request in flight, issued from the calling thread, which spins until
// the callback has run. Returns the latency in nanoseconds: from just before
// the call to the moment the caller saw the answer.
class sync_driver {
 public:
  explicit sync_driver(actors::node& n) : node_(n) {}

  // query(name, {"get": true}); the answer must be {"total": expected}.
  int64_t query_total(const std::string& name, int64_t expected);
  // send(name, {"add": add}) and wait for the agent's reply, which must be
  // {"total": expected}; the message must be acknowledged first.
  int64_t send_add(const std::string& name, int64_t add, int64_t expected);

 private:
  actors::node& node_;
  std::atomic<bool> done_{false};
  std::optional<result<json>> answer_;
  std::optional<result<actors::send_ack>> ack_;
  std::optional<result<actors::agent_reply>> reply_;
};

using name_fn = std::function<std::string(uint64_t)>;

// Spawns counters [0, count) named name(i) with input(i), keeping at most
// `window` spawns in flight. Returns the elapsed nanoseconds.
int64_t spawn_all(actors::node& n, uint64_t count, const name_fn& name,
                  const std::function<json(uint64_t)>& input, std::size_t window = 256);

// Queries agents [0, count) with {"get": true}, at most `window` in flight,
// and checks each total against expected(i). Returns the elapsed nanoseconds.
int64_t query_all(actors::node& n, uint64_t count, const name_fn& name,
                  const std::function<int64_t(uint64_t)>& expected, std::size_t window = 256);

// Polls live_agents() until it is 0; dies after `timeout_ms`. Returns the
// elapsed milliseconds.
int64_t wait_all_hibernated(actors::node& n, int64_t timeout_ms);

}  // namespace keel::bench
