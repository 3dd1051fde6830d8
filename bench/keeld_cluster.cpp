#include "bench/keeld_cluster.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bench/bench_util.hpp"
#include "config/cluster_config.hpp"
#include "http/url.hpp"

extern char** environ;

namespace keel::bench {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::vector<uint16_t> free_ports(std::size_t n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (std::size_t i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      die("cannot bind a free port on 127.0.0.1");
    fds.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

std::string http_answer::describe() const {
  if (!ok) return "no response: " + error;
  return "HTTP " + std::to_string(status) + " " + raw.substr(0, 500);
}

std::string agent_path(std::string_view name) {
  return "/v1/agents/" + net::percent_encode(name);
}

// --- member_clients ---------------------------------------------------------------

member_clients::member_clients(std::map<std::string, uint16_t> ports,
                               std::chrono::milliseconds timeout)
    : ports_(std::move(ports)), timeout_(timeout) {}

http_answer member_clients::call(const std::string& member, std::string_view method,
                                 const std::string& target, std::string_view body) {
  auto port = ports_.find(member);
  if (port == ports_.end()) die("no member " + member);
  auto [it, fresh] = clients_.try_emplace(member);
  if (fresh) {
    it->second.set_timeout(timeout_);
    // A member that is down now is connected to again by request().
    it->second.connect("127.0.0.1", port->second).ignore();
  }
  http_answer a;
  auto r = it->second.request(method, target, body);
  if (!r) {
    a.error = r.error().to_string();
    return a;
  }
  a.ok = true;
  a.status = r->status;
  a.raw = std::move(r->body);
  a.body = json::parse(a.raw, nullptr, false);
  return a;
}

// --- keeld_cluster -------------------------------------------------------------------

struct keeld_cluster::member {
  config::cluster_member plan;
  std::vector<std::string> argv;
  std::string log;
  pid_t pid = -1;

  // Starts the child and waits until its log says it listens.
  void start() {
    kill9();
    std::vector<std::string> args = argv;
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<char*> envp;
    for (char** e = environ; *e; ++e)
      if (std::strncmp(*e, "KEEL_TOKEN=", 11) != 0) envp.push_back(*e);
    envp.push_back(nullptr);
    std::error_code ec;
    const auto log_start = fs::exists(log, ec) ? fs::file_size(log, ec) : 0;
    pid_t p = ::fork();
    if (p < 0) die("fork failed");
    if (p == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd < 0) ::_exit(126);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
      ::execve(cargv[0], cargv.data(), envp.data());
      ::_exit(127);
    }
    pid = p;
    bool exited = false;
    bool listening = poll_until(
        [&] {
          int st = 0;
          if (::waitpid(pid, &st, WNOHANG) == pid) {
            exited = true;
            pid = -1;
            return true;
          }
          std::string text = read_all(log);
          return text.size() > log_start &&
                 text.find("keeld listening on", log_start) != std::string::npos;
        },
        std::chrono::seconds(30), std::chrono::milliseconds(5));
    if (exited || !listening) die(plan.id + " did not start:\n" + tail());
  }

  void kill9() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = -1;
  }

  std::string tail() const {
    std::string text = read_all(log);
    return text.size() > 2000 ? "..." + text.substr(text.size() - 2000) : text;
  }
};

keeld_cluster::keeld_cluster(std::string keeld, std::string dir, std::string prefix, int size,
                             uint32_t shards, json config_keys)
    : keeld_(std::move(keeld)),
      dir_(std::move(dir)),
      shards_(shards),
      groups_(config_keys.value("groups", 32u)),
      config_keys_(std::move(config_keys)),
      clients_({}) {
  auto ports = free_ports(static_cast<std::size_t>(size) * 2);
  for (int i = 0; i < size; ++i) {
    auto m = std::make_unique<member>();
    m->plan.id = prefix + std::to_string(i + 1);
    m->plan.host = m->plan.http_host = "127.0.0.1";
    m->plan.cluster_port = ports[static_cast<std::size_t>(i) * 2];
    m->plan.http_port = ports[static_cast<std::size_t>(i) * 2 + 1];
    ids_.push_back(m->plan.id);
    members_[m->plan.id] = std::move(m);
  }
  clients_ = member_clients(http_ports());
}

keeld_cluster::~keeld_cluster() {
  stop_all();
}

std::map<std::string, uint16_t> keeld_cluster::http_ports() const {
  std::map<std::string, uint16_t> out;
  for (const auto& [id, m] : members_) out[id] = m->plan.http_port;
  return out;
}

void keeld_cluster::start_all(std::chrono::milliseconds timeout) {
  fs::create_directories(dir_);
  json ms = json::array();
  for (const auto& id : ids_) ms.push_back(config::to_json(members_[id]->plan));
  json c{{"cluster_id", "keel-bench"},
         {"shards", shards_},
         {"secret", "keel-bench-replication-secret-0123456789"},
         {"members", ms}};
  for (const auto& [k, v] : config_keys_.items()) c[k] = v;
  const std::string cfg = dir_ + "/cluster.json";
  std::ofstream(cfg) << c.dump(2);
  for (const auto& id : ids_) {
    auto& m = *members_[id];
    fs::create_directories(dir_ + "/" + id);
    m.argv = {keeld_,        "--data", dir_ + "/" + id + "/data", "--cluster", cfg, "--node-id", id,
              "--anonymous", "admin"};
    m.log = dir_ + "/" + id + "/keeld.log";
    m.start();
  }
  const bool replicated = config_keys_.value("replication", 0) > 0;
  std::string last;
  bool ok = poll_until(
      [&] {
        for (const auto& id : ids_) {
          auto st = status(id);
          if (st.is_null()) return last = id + " does not answer", false;
          for (const auto& m : st["members"])
            if (!m.value("up", false)) return last = id + " sees a member down", false;
        }
        if (replicated)
          for (uint32_t g = 0; g < groups_; ++g)
            if (ready_leader(g).empty())
              return last = "group " + std::to_string(g) + " has no ready leader", false;
        return true;
      },
      timeout, std::chrono::milliseconds(100));
  if (!ok) die("the cluster did not come up: " + last + "\n" + logs());
}

void keeld_cluster::kill9(const std::string& id) {
  members_.at(id)->kill9();
}

void keeld_cluster::restart(const std::string& id) {
  members_.at(id)->start();
}

void keeld_cluster::wipe(const std::string& id) {
  members_.at(id)->kill9();
  std::error_code ec;
  fs::remove_all(dir_ + "/" + id + "/data", ec);
  if (ec) die("wiping " + id + ": " + ec.message());
}

uint64_t keeld_cluster::data_bytes(const std::string& id) const {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir_ + "/" + id + "/data", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) total += it->file_size(size_ec);
  }
  return total;
}

void keeld_cluster::stop_all() {
  for (auto& [id, m] : members_) m->kill9();
}

bool keeld_cluster::running(const std::string& id) const {
  return members_.at(id)->pid > 0;
}

double keeld_cluster::cpu_seconds(const std::string& id) const {
  pid_t pid = members_.at(id)->pid;
  if (pid <= 0) die(id + " is not running");
  std::string stat = read_all("/proc/" + std::to_string(pid) + "/stat");
  // Fields after the command name (which may hold spaces) start at the
  // last ')': state is field 3, utime 14, stime 15.
  auto close = stat.rfind(')');
  if (close == std::string::npos) die("cannot read /proc/" + std::to_string(pid) + "/stat");
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> f;
  for (std::string x; in >> x;) f.push_back(x);
  if (f.size() < 13) die("short /proc/" + std::to_string(pid) + "/stat");
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return (std::stod(f[11]) + std::stod(f[12])) / ticks;
}

json keeld_cluster::status(const std::string& id) {
  if (!running(id)) return nullptr;
  auto a = clients_.call(id, "GET", "/v1/cluster");
  if (!a.ok || a.status != 200 || !a.body.is_object()) return nullptr;
  return a.body;
}

std::string keeld_cluster::ready_leader(uint32_t g) {
  for (const auto& id : ids_) {
    auto st = status(id);
    if (st.is_null() || !st.contains("groups")) continue;
    for (const auto& e : st["groups"])
      if (e.value("group", UINT32_MAX) == g && e.value("role", "") == "leader" &&
          e.value("ready", false))
        return id;
  }
  return {};
}

uint32_t keeld_cluster::group_of(std::string_view name) const {
  return config::group_of_shard(config::shard_of(name, shards_), groups_);
}

std::string keeld_cluster::logs() const {
  std::string out;
  for (const auto& [id, m] : members_) out += "--- log of " + id + ":\n" + m->tail() + "\n";
  return out;
}

}  // namespace keel::bench
