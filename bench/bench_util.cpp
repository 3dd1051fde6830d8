#include "bench/bench_util.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "persistence/keys.hpp"
#include "persistence/store.hpp"

namespace keel::bench {

namespace {

std::string program_name = "bench";

bool parse_u64(std::string_view s, uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

}  // namespace

// --- options ------------------------------------------------------------------

options::options(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {
  program_name = program_;
  add("json", "", "write the report as JSON to this file");
}

void options::add(std::string name, std::string default_value, std::string help) {
  order_.push_back(name);
  entries_[name] = {std::move(default_value), std::move(help), false, false};
}

void options::add_switch(std::string name, std::string help) {
  order_.push_back(name);
  entries_[name] = {"", std::move(help), true, false};
}

void options::usage(int rc) const {
  std::ostream& o = rc == 0 ? std::cout : std::cerr;
  o << "usage: " << program_ << " [options]\n" << summary_ << "\n\noptions:\n";
  for (const auto& n : order_) {
    const auto& e = entries_.at(n);
    o << "  --" << n << (e.is_switch ? "" : " VALUE");
    o << "\n      " << e.help;
    if (!e.is_switch && !e.value.empty()) o << " (default " << e.value << ")";
    o << '\n';
  }
  std::exit(rc);
}

void options::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") usage(0);
    if (a.substr(0, 2) != "--") {
      std::cerr << program_ << ": unexpected argument '" << a << "'\n";
      usage(2);
    }
    std::string name(a.substr(2));
    std::string value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      inline_value = true;
    }
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::cerr << program_ << ": unknown option --" << name << '\n';
      usage(2);
    }
    if (it->second.is_switch) {
      if (inline_value) {
        std::cerr << program_ << ": --" << name << " takes no value\n";
        std::exit(2);
      }
      it->second.set = true;
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) {
        std::cerr << program_ << ": --" << name << " needs a value\n";
        std::exit(2);
      }
      value = argv[++i];
    }
    it->second.value = std::move(value);
    it->second.set = true;
  }
}

const std::string& options::str(const std::string& name) const {
  return entries_.at(name).value;
}

uint64_t options::u64(const std::string& name) const {
  uint64_t v = 0;
  if (!parse_u64(str(name), v)) {
    std::cerr << program_ << ": --" << name << " must be a non-negative integer, not '" << str(name)
              << "'\n";
    std::exit(2);
  }
  return v;
}

double options::f64(const std::string& name) const {
  const std::string& s = str(name);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !(v >= 0)) {
    std::cerr << program_ << ": --" << name << " must be a non-negative number, not '" << s
              << "'\n";
    std::exit(2);
  }
  return v;
}

bool options::on(const std::string& name) const {
  return entries_.at(name).set;
}

std::vector<uint64_t> options::u64_list(const std::string& name) const {
  std::vector<uint64_t> out;
  std::string_view s = str(name);
  while (!s.empty()) {
    auto comma = s.find(',');
    std::string_view piece = s.substr(0, comma);
    uint64_t v = 0;
    if (!parse_u64(piece, v)) {
      std::cerr << program_ << ": --" << name << " must be a list like 1,10,100\n";
      std::exit(2);
    }
    out.push_back(v);
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  return out;
}

ordered_json options::params() const {
  ordered_json p = ordered_json::object();
  for (const auto& n : order_) {
    if (n == "json") continue;
    const auto& e = entries_.at(n);
    if (e.is_switch) {
      p[n] = e.set;
      continue;
    }
    uint64_t v = 0;
    if (parse_u64(e.value, v))
      p[n] = v;
    else
      p[n] = e.value;
  }
  return p;
}

// --- measurement ----------------------------------------------------------------

int64_t now_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

double round2(double v) {
  return std::round(v * 100.0) / 100.0;
}

latency summarize(std::vector<int64_t>& ns) {
  latency l;
  l.count = ns.size();
  if (ns.empty()) return l;
  std::sort(ns.begin(), ns.end());
  // Nearest rank: the smallest sample with at least q of all at or below it.
  auto at = [&](double q) {
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(ns.size())));
    rank = std::clamp<std::size_t>(rank, 1, ns.size());
    return static_cast<double>(ns[rank - 1]) / 1000.0;
  };
  l.p50_us = at(0.50);
  l.p99_us = at(0.99);
  l.p999_us = at(0.999);
  long double sum = 0;
  for (int64_t v : ns) sum += v;
  l.mean_us = static_cast<double>(sum / ns.size()) / 1000.0;
  l.max_us = static_cast<double>(ns.back()) / 1000.0;
  return l;
}

uint64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream in(line.substr(6));
      uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

// --- report -----------------------------------------------------------------------

report::report(std::string bench) : bench_(std::move(bench)), load_at_start_(load_average()) {}

void report::metric(const std::string& name, const ordered_json& value) {
  metrics_[name] = value;
}

void report::latency_metrics(const std::string& name, const latency& l, bool with_p999) {
  metrics_[name + "_p50_us"] = round2(l.p50_us);
  metrics_[name + "_p99_us"] = round2(l.p99_us);
  if (with_p999) metrics_[name + "_p999_us"] = round2(l.p999_us);
  metrics_[name + "_max_us"] = round2(l.max_us);
  metrics_[name + "_samples"] = l.count;
}

void report::note(std::string text) {
  notes_.push_back(std::move(text));
}

void report::finish(const std::string& json_path) const {
  ordered_json machine = ordered_json::object();
  machine["cores"] = std::thread::hardware_concurrency();
  machine["loadavg_1m_start"] = load_at_start_;
  machine["loadavg_1m_end"] = load_average();
  std::cout << "== " << bench_ << '\n';
  std::cout << "params:";
  for (auto it = params_.begin(); it != params_.end(); ++it)
    std::cout << ' ' << it.key() << '=' << (it->is_string() ? it->get<std::string>() : it->dump());
  std::cout << '\n';
  std::size_t width = 0;
  for (auto it = metrics_.begin(); it != metrics_.end(); ++it)
    width = std::max(width, it.key().size());
  for (auto it = metrics_.begin(); it != metrics_.end(); ++it) {
    std::cout << "  " << it.key() << std::string(width - it.key().size() + 2, ' ');
    if (it->is_number_float()) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f", it->get<double>());
      std::cout << buf << '\n';
    } else {
      std::cout << it->dump() << '\n';
    }
  }
  for (const auto& n : notes_) std::cout << "  note: " << n << '\n';
  std::cout << "  machine: " << machine.dump() << '\n';
  std::cout.flush();

  if (json_path.empty()) return;
  ordered_json j = ordered_json::object();
  j["bench"] = bench_;
  j["params"] = params_;
  j["metrics"] = metrics_;
  j["machine"] = machine;
  if (!notes_.empty()) j["notes"] = notes_;
  std::ofstream f(json_path, std::ios::trunc);
  f << j.dump(2) << '\n';
  f.close();
  if (!f) {
    std::cerr << bench_ << ": cannot write " << json_path << '\n';
    std::exit(1);
  }
}

// --- control ------------------------------------------------------------------------

void die(const std::string& message) {
  std::fflush(stdout);
  std::cerr << program_name << ": FAILED: " << message << std::endl;
  std::_Exit(1);
}

namespace {
std::atomic<spin_mode> current_spin_mode{spin_mode::pause};
}  // namespace

void set_spin_mode(spin_mode m) {
  current_spin_mode.store(m);
}

spin_mode parse_spin_mode(const std::string& s) {
  if (s == "spin") return spin_mode::pause;
  if (s == "yield") return spin_mode::yield;
  die("wait mode must be 'spin' or 'yield', not '" + s + "'");
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  f >> l;
  return l;
}

void spin_until(const std::atomic<bool>& flag, const char* what,
                std::chrono::milliseconds timeout) {
  if (flag.load(std::memory_order_acquire)) return;
  const int64_t deadline = now_ns() + static_cast<int64_t>(timeout.count()) * 1'000'000;
  const bool yield = current_spin_mode.load(std::memory_order_relaxed) == spin_mode::yield;
  for (uint32_t i = 1;; ++i) {
    if (flag.load(std::memory_order_acquire)) return;
    if (yield) {
      sched_yield();
    } else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    // Reading the clock costs ~20 ns; do it rarely.
    if ((i & 0xFFFF) == 0 && now_ns() > deadline)
      die(std::string("no answer within ") + std::to_string(timeout.count()) + " ms: " + what);
  }
}

temp_dir::temp_dir(const std::string& prefix) {
  const char* t = std::getenv("TMPDIR");
  std::string base = t && *t ? t : "/tmp";
  std::string pattern = base + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) die("cannot create a temp directory like " + pattern);
  path_ = buf.data();
}

temp_dir::~temp_dir() {
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t dir_bytes(const std::string& dir, std::string_view suffix) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code e2;
    if (!it->is_regular_file(e2)) continue;
    std::string name = it->path().filename().string();
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    total += it->file_size(e2);
  }
  return total;
}

double prom_value(std::string_view text, std::string_view name) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    if (line.size() > name.size() && line.substr(0, name.size()) == name &&
        line[name.size()] == ' ')
      return std::strtod(std::string(line.substr(name.size() + 1)).c_str(), nullptr);
  }
  return -1;
}

std::string numbered_name(std::string_view prefix, uint64_t i, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*llu", width, static_cast<unsigned long long>(i));
  return std::string(prefix) + buf;
}

raw_fsync::raw_fsync(const std::string& dir) {
  auto db = persistence::store::open({dir, 8 << 20, true});
  if (!db) die("store::open " + dir + ": " + db.error().to_string());
  db_ = std::move(*db);
}

raw_fsync::~raw_fsync() = default;

void raw_fsync::measure(uint64_t count, std::vector<int64_t>& out) {
  for (uint64_t i = 0; i < count; ++i) {
    persistence::write_set ws;
    ws.push_back(
        {persistence::family::ledger, false, persistence::agent_seq_key(1, ++seq_), value_});
    int64_t t0 = now_ns();
    auto st = db_->write(ws, true);
    out.push_back(now_ns() - t0);
    if (!st) die("raw fsync write: " + st.to_string());
  }
}

}  // namespace keel::bench
