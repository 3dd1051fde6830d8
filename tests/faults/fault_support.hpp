#pragma once
// What the fault tests share: a keeld to break (restartable on the same
// data, with its own descriptor limit and config), a small disk of its own
// to fill, bytes to flip, and the bookkeeping of acknowledged messages that
// every test checks at its end. Uses doctest assertions: include it from
// test files only.

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "support/http_replay_check.hpp"
#include "support/keeld_process.hpp"
#include "support/ledger_pages.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

namespace keel::test {

using nlohmann::json;
namespace fs = std::filesystem;

// Why the process has no private mount namespace ("" when it has one);
// set by the fault tests' main.
std::string& mount_namespace_problem();

// The longest a fault test waits for one condition (recoveries retry every
// second or so; the margin is for a loaded 2-core machine and sanitizers).
inline constexpr std::chrono::milliseconds fault_deadline{30'000};

// A tmpfs of `bytes` mounted at `dir` inside the test process's private
// mount namespace; unmounted on destruction. ok() says whether it could be
// made, why() why not.
class tmpfs_disk {
 public:
  tmpfs_disk(const fs::path& dir, uint64_t bytes) : dir_(dir) {
    if (!mount_namespace_problem().empty()) {
      why_ = "no private mount namespace: " + mount_namespace_problem();
      return;
    }
    fs::create_directories(dir);
    const std::string opts = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      why_ = std::string("mount tmpfs: ") + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~tmpfs_disk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  tmpfs_disk(const tmpfs_disk&) = delete;
  tmpfs_disk& operator=(const tmpfs_disk&) = delete;

  bool ok() const { return mounted_; }
  const std::string& why() const { return why_; }
  const fs::path& dir() const { return dir_; }

  uint64_t free_bytes() const {
    struct statvfs v {};
    if (::statvfs(dir_.c_str(), &v) != 0) return 0;
    return uint64_t{v.f_bavail} * v.f_frsize;
  }
  // Takes space with a filler file until `leave` bytes are free (or all of
  // it, leave = 0).
  void fill(uint64_t leave) {
    const uint64_t free = free_bytes();
    if (free <= leave) return;
    const fs::path filler = dir_ / ("filler-" + std::to_string(fillers_++));
    int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    // Page by page down to nothing: a tmpfs refuses one large request that
    // would not fit whole.
    uint64_t want = free - leave;
    for (uint64_t chunk = want; chunk >= 4096 && want > 0;) {
      if (::fallocate(fd, 0, static_cast<off_t>(::lseek(fd, 0, SEEK_END)),
                      static_cast<off_t>(std::min(chunk, want))) == 0) {
        ::lseek(fd, 0, SEEK_END);
        want -= std::min(chunk, want);
      } else {
        chunk /= 2;
      }
    }
    ::close(fd);
  }
  // Gives back all the space fill() took.
  void free_all() {
    for (int i = 0; i < fillers_; ++i) fs::remove(dir_ / ("filler-" + std::to_string(i)));
    fillers_ = 0;
  }

 private:
  fs::path dir_;
  bool mounted_ = false;
  std::string why_;
  int fillers_ = 0;
};

// A message body field of `bytes` random hex digits: big, and different
// every time (equal payloads would be stored once).
template <class Rng>
json random_padding(Rng& rng, std::size_t bytes) {
  static const char* hex = "0123456789abcdef";
  std::string s(bytes, '0');
  for (auto& c : s) c = hex[rng() & 15];
  return {{"pad", s}};
}

// Writes a keeld config file.
inline void write_config(const fs::path& file, const json& cfg) {
  std::ofstream out(file);
  out << cfg.dump();
  REQUIRE_MESSAGE(out.good(), "cannot write " << file.string());
}

// XORs one byte of `file` at `offset` with `mask`.
inline void flip_byte(const fs::path& file, uint64_t offset, uint8_t mask = 0x40) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << file.string());
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ mask);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  REQUIRE(f.good());
}

// The files of `dir` whose name ends in `ext`, by name.
inline std::vector<fs::path> files_ending(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().ends_with(ext)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

struct reply {
  unsigned status = 0;  // 0: the request did not get through
  std::string raw;
  json body;
  std::string error_code() const {
    return body.is_object() && body["error"].is_object() ? body["error"].value("code", "") : "";
  }
};

// A keeld on `data_dir` that a test breaks and restarts. Requests never
// REQUIRE success: under a fault a refused request is an answer too.
class fault_node {
 public:
  fault_node(fs::path data_dir, std::vector<std::string> args = {})
      : data_(std::move(data_dir)), keeld_(KEEL_KEELD_PATH, data_.string(), std::move(args)) {}
  ~fault_node() {
    if (keeld_.running() && std::uncaught_exceptions() == 0 && replay_at_end_)
      check_strict_replays_over_http(keeld_.port());
  }

  keeld_process& process() { return keeld_; }
  const fs::path& data() const { return data_; }
  // Skips the strict replay of every ledger when the test lets go.
  void no_replay_check() { replay_at_end_ = false; }

  bool start() {
    client_.close();
    connected_ = false;
    return keeld_.start();
  }

  reply call(std::string_view method, const std::string& target, std::string_view body = {}) {
    reply out;
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!connected_) connected_ = client_.connect("127.0.0.1", keeld_.port()).is_ok();
      if (!connected_) continue;
      auto r = client_.request(method, target, body);
      if (!r) {
        client_.close();
        connected_ = false;
        continue;
      }
      out.status = r->status;
      out.raw = r->body;
      out.body = json::parse(out.raw, nullptr, false);
      return out;
    }
    return out;
  }

  static std::string path(const std::string& name) {
    return "/v1/agents/" + net::percent_encode(name);
  }
  reply spawn(const std::string& name, const std::string& type = "counter") {
    return call("POST", "/v1/agents", json{{"name", name}, {"type", type}}.dump());
  }
  reply send(const std::string& name, const json& message) {
    return call("POST", path(name) + "/messages", message.dump());
  }
  std::optional<int64_t> total(const std::string& name) {
    auto r = call("POST", path(name) + "/query", R"({"get": true})");
    if (r.status != 200) return std::nullopt;
    return r.body.value("total", int64_t{0});
  }
  json health() { return call("GET", "/v1/health").body; }
  // Every event of `name`, paged; empty when the agent cannot be read.
  std::vector<json> ledger(const std::string& name) {
    auto all = read_ledger_pages(
        [this](const std::string& target) {
          auto r = call("GET", target);
          return std::pair<unsigned, json>(r.status, r.body);
        },
        path(name));
    return all ? *all : std::vector<json>();
  }
  // A sample of /metrics without labels; nullopt when absent.
  std::optional<double> metric(const std::string& name) {
    auto r = call("GET", "/metrics");
    const std::string text = "\n" + r.raw;
    auto at = text.find("\n" + name + " ");
    if (at == std::string::npos) return std::nullopt;
    return std::stod(text.substr(at + name.size() + 2));
  }

 private:
  fs::path data_;
  keeld_process keeld_;
  net::http_client client_;
  bool connected_ = false;
  bool replay_at_end_ = true;
};

// Messages a test sent to counters, and which were acknowledged; check()
// then finds each acknowledged one exactly once in its agent's ledger, and
// no other message at all.
class ack_book {
 public:
  // Sends {"id": id, "body": {"add": add, ...extra}} and records a 202.
  // A counter refuses a body with fields it does not know (the message is
  // recorded, and rejected): with `extra`, the message adds nothing.
  reply send(fault_node& n, const std::string& agent, const std::string& id, int add,
             const json& extra = json::object()) {
    json body = extra;
    body["add"] = add;
    auto r = n.send(agent, {{"id", id}, {"body", body}});
    const int counts = extra.empty() ? add : 0;
    if (r.status == 202) acked_[agent][id] = counts;
    sent_[agent][id] = counts;
    return r;
  }
  const std::map<std::string, std::map<std::string, int>>& acked() const { return acked_; }
  std::size_t count() const {
    std::size_t n = 0;
    for (const auto& [a, ids] : acked_) n += ids.size();
    return n;
  }
  // Every acknowledged message of `agent` appears once in its ledger (but
  // those in `excused`, which a report lists as lost), nothing unsent does,
  // and its total is the sum of what was processed. Returns the ids found.
  std::set<std::string> check(fault_node& n, const std::string& agent,
                              const std::set<std::string>& excused = {}) {
    std::multiset<std::string> seen;
    for (const auto& e : n.ledger(agent))
      if (e["type"] == "message_received") seen.insert(e["data"].value("id", ""));
    for (const auto& id : seen) {
      CHECK_MESSAGE(seen.count(id) == 1, agent << ": message " << id << " processed twice");
      CHECK_MESSAGE(sent_[agent].count(id) == 1, agent << ": message " << id << " never sent");
    }
    for (const auto& [id, add] : acked_[agent]) {
      if (excused.count(id)) continue;
      CHECK_MESSAGE(seen.count(id) == 1, agent << ": acknowledged message " << id << " is missing");
    }
    // A send whose answer was lost (refused, or cut by a kill) may have
    // been processed anyway: the total is the sum of what the ledger holds.
    int64_t sum = 0;
    for (const auto& id : std::set<std::string>(seen.begin(), seen.end())) sum += sent_[agent][id];
    auto t = n.total(agent);
    CHECK_MESSAGE(t.has_value(), agent << ": no total");
    if (t) CHECK_MESSAGE(*t == sum, agent << ": total " << *t << ", expected " << sum);
    return std::set<std::string>(seen.begin(), seen.end());
  }

 private:
  std::map<std::string, std::map<std::string, int>> acked_;
  std::map<std::string, std::map<std::string, int>> sent_;
};

}  // namespace keel::test
