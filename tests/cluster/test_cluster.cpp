#include "cluster/test_cluster.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <doctest/doctest.h>

extern char** environ;

namespace keel::test::cluster {

namespace {

// Distinct free ports on 127.0.0.1: each socket stays bound until all are
// picked, so no two are the same. Another process may still take one before
// keeld binds it; on a test machine that is rare enough.
std::vector<uint16_t> free_ports(std::size_t n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (std::size_t i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string answer::describe() const {
  if (!transport_ok) return "no response: " + error;
  return "HTTP " + std::to_string(status) + " " + raw.substr(0, 2000);
}

json member_entry(const json& status, const std::string& id) {
  if (status.is_object() && status.contains("members") && status["members"].is_array())
    for (const auto& m : status["members"])
      if (m.value("id", "") == id) return m;
  return json::object();
}

std::string agent_path(std::string_view name) {
  return "/v1/agents/" + net::percent_encode(name);
}

// --- member_process ------------------------------------------------------------

member_process::member_process(std::vector<std::string> argv, fs::path log)
    : argv_(std::move(argv)), log_(std::move(log)) {}

member_process::~member_process() {
  kill9();
}

bool member_process::start(std::chrono::milliseconds timeout) {
  kill9();
  // Everything the child needs is built before fork: it only calls
  // async-signal-safe functions. KEEL_TOKEN is left out: the tests call
  // without a token.
  std::vector<std::string> args = argv_;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "KEEL_TOKEN=", 11) != 0) envp.push_back(*e);
  envp.push_back(nullptr);
  const std::string log = log_.string();
  std::error_code ec;
  const auto log_start = fs::exists(log_, ec) ? fs::file_size(log_, ec) : 0;

  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) ::_exit(126);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  pid_ = pid;
  bool exited = false;
  bool listening = poll_until(
      [&] {
        int st = 0;
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
          exited = true;
          pid_ = -1;
          return true;
        }
        std::string text = read_file(log_);
        return text.size() > log_start &&
               text.find("keeld listening on", log_start) != std::string::npos;
      },
      timeout, std::chrono::milliseconds(5));
  if (exited) return false;
  if (!listening) {
    kill9();
    return false;
  }
  return true;
}

void member_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  pid_ = -1;
}

void member_process::freeze() {
  REQUIRE(pid_ > 0);
  REQUIRE(::kill(pid_, SIGSTOP) == 0);
}

void member_process::thaw() {
  REQUIRE(pid_ > 0);
  REQUIRE(::kill(pid_, SIGCONT) == 0);
}

std::string member_process::log_tail(std::size_t bytes) const {
  std::string text = read_file(log_);
  return text.size() > bytes ? "..." + text.substr(text.size() - bytes) : text;
}

// --- client_set ------------------------------------------------------------------

client_set::client_set(std::map<std::string, uint16_t> ports, std::chrono::milliseconds timeout)
    : ports_(std::move(ports)), timeout_(timeout) {}

answer client_set::call(const std::string& member, std::string_view method,
                        const std::string& target, std::string_view body) {
  auto port = ports_.find(member);
  REQUIRE_MESSAGE(port != ports_.end(), "no member " << member);
  auto [it, fresh] = clients_.try_emplace(member);
  if (fresh) {
    it->second.set_timeout(timeout_);
    // A member that is down now is connected to again by request().
    (void)it->second.connect("127.0.0.1", port->second);
  }
  answer a;
  auto r = it->second.request(method, target, body);
  if (!r) {
    a.error = r.error().to_string();
    return a;
  }
  a.transport_ok = true;
  a.status = r->status;
  a.raw = std::move(r->body);
  a.body = json::parse(a.raw, nullptr, false);
  return a;
}

// --- test_cluster ------------------------------------------------------------------

test_cluster::test_cluster(int planned, uint32_t shards) : shards_(shards), clients_({}) {
  auto ports = free_ports(static_cast<std::size_t>(planned) * 2);
  for (int i = 0; i < planned; ++i) {
    config::cluster_member m;
    m.id = "n" + std::to_string(i + 1);
    m.host = "127.0.0.1";
    m.cluster_port = ports[static_cast<std::size_t>(i) * 2];
    m.http_host = "127.0.0.1";
    m.http_port = ports[static_cast<std::size_t>(i) * 2 + 1];
    members_.push_back(m);
  }
  clients_ = client_set(http_ports());
}

test_cluster::~test_cluster() {
  for (auto& [id, n] : nodes_)
    if (n.process) n.process->kill9();
}

const config::cluster_member& test_cluster::member(const std::string& id) const {
  for (const auto& m : members_)
    if (m.id == id) return m;
  FAIL("no planned member " << id);
  return members_.front();  // unreachable
}

std::vector<std::string> test_cluster::ids() const {
  std::vector<std::string> out;
  for (const auto& m : members_) out.push_back(m.id);
  return out;
}

std::map<std::string, uint16_t> test_cluster::http_ports() const {
  std::map<std::string, uint16_t> out;
  for (const auto& m : members_) out[m.id] = m.http_port;
  return out;
}

std::string test_cluster::write_config(const std::string& name,
                                       const std::vector<std::string>& members,
                                       const std::string& secret) const {
  json ms = json::array();
  for (const auto& id : members) ms.push_back(config::to_json(member(id)));
  json c{{"cluster_id", "keel-test"},
         {"shards", shards_},
         {"secret", secret},
         {"heartbeat_ms", heartbeat_ms},
         {"connection_timeout_ms", connection_timeout_ms},
         {"reconnect_min_ms", reconnect_min_ms},
         {"reconnect_max_ms", reconnect_max_ms},
         {"forward_timeout_ms", forward_timeout_ms},
         {"members", ms}};
  for (const auto& [k, v] : config_keys_.items()) c[k] = v;
  fs::path p = root() / (name + ".json");
  std::ofstream out(p);
  out << c.dump(2);
  REQUIRE_MESSAGE(out.good(), "cannot write " << p.string());
  return p.string();
}

config::shard_map test_cluster::initial_map(const std::vector<std::string>& members) const {
  std::vector<config::cluster_member> ms;
  for (const auto& id : members) ms.push_back(member(id));
  return config::shard_map(1, shards_, std::move(ms));
}

void test_cluster::start(const std::string& id, const std::string& config,
                         std::vector<std::string> extra) {
  (void)member(id);
  auto& n = nodes_[id];
  n.config = config;
  n.extra = std::move(extra);
  std::vector<std::string> argv = {KEEL_KEELD_PATH, "--data", (root() / id / "data").string(),
                                   "--cluster", config, "--node-id", id,
                                   // The tests drive each member's whole API without tokens.
                                   "--anonymous", "admin"};
  argv.insert(argv.end(), n.extra.begin(), n.extra.end());
  fs::create_directories(root() / id);
  if (n.process) n.process->kill9();
  n.process = std::make_unique<member_process>(std::move(argv), root() / id / "keeld.log");
  REQUIRE_MESSAGE(n.process->start(), id << " did not start:\n" << n.process->log_tail());
}

void test_cluster::kill9(const std::string& id) {
  process(id).kill9();
}

void test_cluster::restart(const std::string& id) {
  auto& p = process(id);
  p.kill9();
  REQUIRE_MESSAGE(p.start(), id << " did not start again:\n" << p.log_tail());
}

void test_cluster::wipe(const std::string& id) {
  auto& p = process(id);
  p.kill9();
  std::error_code ec;
  fs::remove_all(root() / id / "data", ec);
  REQUIRE_MESSAGE(!ec, "cannot delete " << (root() / id / "data").string() << ": " << ec.message());
  REQUIRE_MESSAGE(p.start(), id << " did not start again empty:\n" << p.log_tail());
}

member_process& test_cluster::process(const std::string& id) {
  auto it = nodes_.find(id);
  REQUIRE_MESSAGE((it != nodes_.end() && it->second.process), id << " was never started");
  return *it->second.process;
}

bool test_cluster::running(const std::string& id) const {
  auto it = nodes_.find(id);
  return it != nodes_.end() && it->second.process && it->second.process->running();
}

json test_cluster::status(const std::string& id) {
  auto a = call(id, "GET", "/v1/cluster");
  REQUIRE_MESSAGE((a.transport_ok && a.status == 200), id << ": GET /v1/cluster: " << a.describe());
  return a.body;
}

void test_cluster::start_all(const std::vector<std::string>& extra) {
  const auto members = ids();
  const auto cfg = write_config("cluster", members);
  for (const auto& id : members) start(id, cfg, extra);
  wait_connected(members);
}

void test_cluster::wait_connected(const std::vector<std::string>& members,
                                  std::chrono::milliseconds timeout) {
  std::string last;
  bool ok = poll_until(
      [&] {
        for (const auto& id : members) {
          auto a = call(id, "GET", "/v1/cluster");
          if (!a.transport_ok || a.status != 200) {
            last = id + ": " + a.describe();
            return false;
          }
          for (const auto& m : a.body["members"]) {
            std::string other = m.value("id", "");
            bool wanted = std::find(members.begin(), members.end(), other) != members.end();
            if (wanted && !m.value("up", false)) {
              last = id + " sees " + other + " down: " + a.raw;
              return false;
            }
          }
        }
        return true;
      },
      timeout);
  REQUIRE_MESSAGE(ok, "the members did not connect: " << last << "\n" << logs());
}

void test_cluster::wait_outboxes_empty(std::chrono::milliseconds timeout) {
  std::string last;
  bool ok = poll_until(
      [&] {
        for (const auto& m : members_) {
          if (!running(m.id)) continue;
          auto a = call(m.id, "GET", "/v1/cluster");
          if (!a.transport_ok || a.status != 200) {
            last = m.id + ": " + a.describe();
            return false;
          }
          if (a.body["outbox"].value("queued", uint64_t{1}) != 0) {
            last = m.id + ": outbox " + a.body["outbox"].dump();
            return false;
          }
        }
        return true;
      },
      timeout);
  REQUIRE_MESSAGE(ok, "the outboxes did not drain: " << last << "\n" << logs());
}

std::string test_cluster::logs() const {
  std::string out;
  for (const auto& [id, n] : nodes_)
    if (n.process) out += "--- log of " + id + ":\n" + n.process->log_tail() + "\n";
  return out;
}

}  // namespace keel::test::cluster
