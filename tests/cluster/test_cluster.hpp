#pragma once
// A Keel cluster of real keeld processes on 127.0.0.1 for cluster tests:
// ports picked up front (the cluster config needs them), one data folder
// and one log file per member, members started, SIGKILLed, frozen
// (SIGSTOP/SIGCONT) and restarted by PID with the flags they had, and
// keep-alive HTTP clients per member. Uses doctest assertions: include it
// from test files only.
//
// Members write their output to a log file (not a pipe nobody drains), so a
// chatty node never blocks; failure messages quote the logs' tails.
//
// Thread-safety: a test_cluster is used by the test's main thread only
// (start, kill, restart: PR_SET_PDEATHSIG ties each child to the thread that
// forked it). Other threads use their own client_set.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/cluster_config.hpp"
#include "http/client.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

namespace keel::test::cluster {

using nlohmann::json;
namespace fs = std::filesystem;

// The short timeouts every test cluster runs with.
inline constexpr uint32_t heartbeat_ms = 100;
inline constexpr uint32_t connection_timeout_ms = 1000;
inline constexpr uint32_t reconnect_min_ms = 50;
inline constexpr uint32_t reconnect_max_ms = 500;
inline constexpr uint32_t forward_timeout_ms = 5000;

// Polls `pred` at most every `interval` until it holds or `timeout` passes;
// returns whether it held. A waiting test asks rarely: the nodes need the
// CPU (CI has two cores).
template <class Pred>
bool poll_until(Pred&& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = std::chrono::milliseconds(10)) {
  auto next_ask = std::chrono::steady_clock::time_point{};
  return eventually(
      [&] {
        auto now = std::chrono::steady_clock::now();
        if (now < next_ask) return false;
        next_ask = now + interval;
        return static_cast<bool>(pred());
      },
      timeout);
}

// Whether `pred` holds at every poll (at most every `interval`) for
// `duration`: how a test watches for something that must not happen.
template <class Pred>
bool holds_for(Pred&& pred, std::chrono::milliseconds duration,
               std::chrono::milliseconds interval = std::chrono::milliseconds(20)) {
  return !poll_until([&] { return !pred(); }, duration, interval);
}

// The entry of member `id` in a GET /v1/cluster answer; {} when absent.
json member_entry(const json& status, const std::string& id);

// One HTTP exchange: transport_ok is false when no response came (connection
// refused or lost, timeout); then error says why.
struct answer {
  bool transport_ok = false;
  unsigned status = 0;
  std::string raw;
  json body;  // discarded when the response is not JSON
  std::string error;

  std::string describe() const;
};

// "/v1/agents/<name percent-encoded>".
std::string agent_path(std::string_view name);

// One keeld child whose output goes to a log file. start() may be called
// again after kill9() (a restart with the same flags and data).
class member_process {
 public:
  // REQUIRES: argv[0] is an absolute path.
  member_process(std::vector<std::string> argv, fs::path log);
  ~member_process();  // SIGKILLs a child still running
  member_process(const member_process&) = delete;
  member_process& operator=(const member_process&) = delete;

  // Starts the child and waits (up to `timeout`) until its log says it
  // listens. Returns false if it exited or did not listen in time.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // SIGKILL and reap; a no-op when not running.
  void kill9();
  void freeze();  // SIGSTOP
  void thaw();    // SIGCONT

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // The last `bytes` of the log.
  std::string log_tail(std::size_t bytes = 3000) const;

 private:
  std::vector<std::string> argv_;
  fs::path log_;
  pid_t pid_ = -1;
};

// Keep-alive HTTP clients, one per member, opened on first use. A member
// that was restarted is reached again on a fresh connection. One per thread.
class client_set {
 public:
  // `ports`: member id -> HTTP port on 127.0.0.1.
  explicit client_set(std::map<std::string, uint16_t> ports,
                      std::chrono::milliseconds timeout = std::chrono::seconds(15));
  answer call(const std::string& member, std::string_view method, const std::string& target,
              std::string_view body = {});
  answer post(const std::string& member, const std::string& target, const json& body) {
    return call(member, "POST", target, body.dump());
  }

 private:
  std::map<std::string, uint16_t> ports_;
  std::chrono::milliseconds timeout_;
  std::map<std::string, net::http_client> clients_;
};

class test_cluster {
 public:
  // Plans members n1..n<planned> (ports picked now) with `shards` shards.
  // None is started.
  explicit test_cluster(int planned, uint32_t shards = 64);
  ~test_cluster();  // SIGKILLs every member still running
  test_cluster(const test_cluster&) = delete;
  test_cluster& operator=(const test_cluster&) = delete;

  const fs::path& root() const { return dir_.path(); }
  uint32_t shards() const { return shards_; }
  const config::cluster_member& member(const std::string& id) const;
  std::vector<std::string> ids() const;  // every planned member
  std::map<std::string, uint16_t> http_ports() const;

  // Keys every config written from now on carries besides the defaults
  // (e.g. {"replication": 3, "groups": 4}).
  void set_config_keys(json keys) { config_keys_ = std::move(keys); }
  // Writes a cluster config naming `members` with `secret` to
  // root/<name>.json and returns its path.
  std::string write_config(const std::string& name, const std::vector<std::string>& members,
                           const std::string& secret = default_secret) const;
  // The placement of a config naming `members` (the map a first start
  // stores, epoch 1).
  config::shard_map initial_map(const std::vector<std::string>& members) const;

  // Starts member `id` with `config` (REQUIRE: it listens). `extra` is
  // appended to its flags (--join, --agents DIR). A member started before
  // keeps its data folder.
  void start(const std::string& id, const std::string& config, std::vector<std::string> extra = {});
  // Starts every planned member with one config naming them all (written
  // as root/cluster.json), `extra` appended to each one's flags, and waits
  // until they are connected.
  void start_all(const std::vector<std::string>& extra = {});
  // SIGKILL / start again with the same flags and data.
  void kill9(const std::string& id);
  void restart(const std::string& id);
  // The loss of a disk: SIGKILL, delete the member's data folder, start it
  // again (empty) with the same flags.
  void wipe(const std::string& id);
  member_process& process(const std::string& id);
  bool running(const std::string& id) const;

  // The main thread's clients.
  client_set& clients() { return clients_; }
  answer call(const std::string& id, std::string_view method, const std::string& target,
              std::string_view body = {}) {
    return clients_.call(id, method, target, body);
  }
  answer post(const std::string& id, const std::string& target, const json& body) {
    return clients_.post(id, target, body);
  }
  // GET /v1/cluster of `id`; REQUIREs a 200.
  json status(const std::string& id);

  // Waits until each of `members` shows every other one up.
  void wait_connected(const std::vector<std::string>& members,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Waits until every running member's outbox is empty.
  void wait_outboxes_empty(std::chrono::milliseconds timeout = std::chrono::seconds(60));

  // The tails of every member's log, for failure messages.
  std::string logs() const;

  static constexpr const char* default_secret = "keel-cluster-test-secret-0123456789";

 private:
  struct node {
    std::string config;
    std::vector<std::string> extra;
    std::unique_ptr<member_process> process;
  };

  temp_dir dir_{"keel-cluster"};
  uint32_t shards_;
  json config_keys_ = json::object();
  std::vector<config::cluster_member> members_;
  std::map<std::string, node> nodes_;
  client_set clients_;
};

}  // namespace keel::test::cluster
