#pragma once
// A cluster of real keeld processes on 127.0.0.1 for benchmarks: ports
// picked up front, a cluster config written with the keys a bench asks for,
// one data folder and log file per member, members started, SIGKILLed and
// restarted with the flags they had, their CPU time read from /proc, and
// keep-alive HTTP clients per member. Any failure ends the bench (die()).
//
// Members run with `--anonymous admin` (no token) and write their output to
// a log file, so a chatty member never blocks on a pipe.
//
// Thread-safety: a keeld_cluster is driven by one thread (start, kill,
// restart: PR_SET_PDEATHSIG ties each child to the thread that forked it).
// Other threads call members through their own member_clients.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/client.hpp"

namespace keel::bench {

// Free TCP ports on 127.0.0.1: each socket stays bound until all are picked
// (so they differ), then closed.
std::vector<uint16_t> free_ports(std::size_t n);

// One HTTP exchange; ok is false when no response came (then error says why).
struct http_answer {
  bool ok = false;
  unsigned status = 0;
  std::string raw;
  nlohmann::json body;  // discarded when the response is not JSON
  std::string error;

  std::string describe() const;
};

// "/v1/agents/<name percent-encoded>".
std::string agent_path(std::string_view name);

// Keep-alive clients, one per member, connected on first use. One per thread.
class member_clients {
 public:
  explicit member_clients(std::map<std::string, uint16_t> ports,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));
  http_answer call(const std::string& member, std::string_view method, const std::string& target,
                   std::string_view body = {});
  http_answer post(const std::string& member, const std::string& target,
                   const nlohmann::json& body) {
    return call(member, "POST", target, body.dump());
  }

 private:
  std::map<std::string, uint16_t> ports_;
  std::chrono::milliseconds timeout_;
  std::map<std::string, net::http_client> clients_;
};

class keeld_cluster {
 public:
  // Plans members <prefix>1..<prefix><size> with `shards` shards and
  // `config_keys` added to the config (e.g. {"replication": 3}); data under
  // `dir`. None is started.
  keeld_cluster(std::string keeld, std::string dir, std::string prefix, int size, uint32_t shards,
                nlohmann::json config_keys);
  ~keeld_cluster();  // SIGKILLs every member still running
  keeld_cluster(const keeld_cluster&) = delete;
  keeld_cluster& operator=(const keeld_cluster&) = delete;

  const std::vector<std::string>& ids() const { return ids_; }
  std::map<std::string, uint16_t> http_ports() const;
  uint32_t shards() const { return shards_; }
  uint32_t groups() const { return groups_; }

  // Writes the config, starts every member and waits until each sees the
  // others up and (replicated) every group has a ready leader.
  void start_all(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  void kill9(const std::string& id);
  void restart(const std::string& id);  // same flags and data; waits until it listens
  // SIGKILLs the member and deletes its data directory (not started again).
  void wipe(const std::string& id);
  // Bytes of the member's data directory (every file under it).
  uint64_t data_bytes(const std::string& id) const;
  void stop_all();  // SIGKILL (the data is thrown away)
  bool running(const std::string& id) const;
  // utime + stime of the member's process in seconds (/proc/<pid>/stat).
  double cpu_seconds(const std::string& id) const;

  // The driving thread's clients.
  member_clients& clients() { return clients_; }
  // GET /v1/cluster of `id`; null when it does not answer 200.
  nlohmann::json status(const std::string& id);
  // The running member that leads group `g` and is ready to serve it; ""
  // when none says so.
  std::string ready_leader(uint32_t g);
  // The group of an agent name.
  uint32_t group_of(std::string_view name) const;
  // Tails of every member's log, for failure messages.
  std::string logs() const;

 private:
  struct member;
  std::string keeld_;
  std::string dir_;
  uint32_t shards_;
  uint32_t groups_;
  nlohmann::json config_keys_;
  std::vector<std::string> ids_;
  std::map<std::string, std::unique_ptr<member>> members_;
  member_clients clients_;
};

}  // namespace keel::bench
