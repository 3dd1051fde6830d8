#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.hpp"
#include "support/temp_dir.hpp"

using nlohmann::json;
namespace kl = keel::log;

namespace {

// 2025-06-01T12:00:00.123Z
constexpr int64_t at = 1748779200123;

// Sends the process's log to a file for the test, and puts the settings
// back when done.
class captured_log {
 public:
  captured_log() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    REQUIRE(fd_ >= 0);
    kl::set_output(fd_);
  }
  ~captured_log() {
    kl::configure(level_, format_);
    kl::set_output(STDERR_FILENO);
    ::close(fd_);
  }
  captured_log(const captured_log&) = delete;
  captured_log& operator=(const captured_log&) = delete;

  std::vector<std::string> lines() const {
    std::ifstream in(path_);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

 private:
  keel::test::temp_dir dir_{"keel-log"};
  std::string path_ = dir_.str() + "/log";
  int fd_ = -1;
  kl::level level_ = kl::threshold();
  kl::format format_ = kl::output_format();
};

}  // namespace

TEST_CASE("a text log line holds the time, the level, the message and key=value fields") {
  const std::string line = kl::format_line(
      kl::level::info, "turn started",
      {{"agent", "acct/alice"}, {"seq", uint64_t{3}}, {"final", true}}, at, kl::format::text);
  CHECK(line == "2025-06-01T12:00:00.123Z info  turn started agent=acct/alice seq=3 final=true\n");
  CHECK(kl::format_line(kl::level::error, "x", {}, at, kl::format::text) ==
        "2025-06-01T12:00:00.123Z error x\n");
}

TEST_CASE("text values with spaces, quotes or newlines are quoted and the line stays one line") {
  const std::string line = kl::format_line(
      kl::level::warn, "effect failed\nsecond line",
      {{"error", "upstream said \"no\"\nthen hung up"}, {"empty", ""}}, at, kl::format::text);
  CHECK(line.find('\n') == line.size() - 1);
  CHECK(line.find(R"(error="upstream said \"no\"\nthen hung up")") != std::string::npos);
  CHECK(line.find("empty=\"\"") != std::string::npos);
  CHECK(line.find("warn  effect failed second line") != std::string::npos);
}

TEST_CASE("a JSON log line parses back to time, level, msg and the fields with their types") {
  const std::string line = kl::format_line(kl::level::debug, "request",
                                           {{"method", "GET"},
                                            {"status", 200u},
                                            {"ms", 1.25},
                                            {"delta", int64_t{-4}},
                                            {"ok", false},
                                            {"path", std::string("/v1/agents/a%2Fb")},
                                            {"odd", std::string("\xff bytes")}},
                                           at, kl::format::json);
  REQUIRE(line.back() == '\n');
  json j = json::parse(line, nullptr, false);
  REQUIRE_MESSAGE(!j.is_discarded(), line);
  CHECK(j["time"] == "2025-06-01T12:00:00.123Z");
  CHECK(j["level"] == "debug");
  CHECK(j["msg"] == "request");
  CHECK(j["method"] == "GET");
  CHECK(j["status"] == 200);
  CHECK(j["ms"] == 1.25);
  CHECK(j["delta"] == -4);
  CHECK(j["ok"] == false);
  CHECK(j["path"] == "/v1/agents/a%2Fb");
  // Bytes that are not UTF-8 are replaced, never make the line invalid.
  CHECK(j["odd"].get<std::string>().find("bytes") != std::string::npos);
  // The fixed keys come first, for a person reading the raw line.
  CHECK(line.rfind(R"({"time":)", 0) == 0);
}

TEST_CASE("levels and formats are named and parsed back, and nothing else is") {
  for (auto l : {kl::level::error, kl::level::warn, kl::level::info, kl::level::debug})
    CHECK(kl::parse_level(kl::to_string(l)) == l);
  CHECK_FALSE(kl::parse_level("verbose"));
  CHECK_FALSE(kl::parse_level("INFO"));
  CHECK(kl::parse_format("json") == kl::format::json);
  CHECK(kl::parse_format("text") == kl::format::text);
  CHECK_FALSE(kl::parse_format("xml"));
}

TEST_CASE("a record below the threshold is not written, and one at or above it is") {
  captured_log log;
  kl::configure(kl::level::warn, kl::format::text);
  CHECK_FALSE(kl::enabled(kl::level::info));
  CHECK(kl::enabled(kl::level::error));
  kl::info("not written");
  kl::debug("not written either");
  kl::warn("written", {{"n", 1}});
  kl::configure(kl::level::debug, kl::format::json);
  kl::debug("now written");
  const auto lines = log.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].find("warn  written n=1") != std::string::npos);
  CHECK(json::parse(lines[1])["msg"] == "now written");
}

TEST_CASE("lines logged from many threads at once never interleave") {
  captured_log log;
  kl::configure(kl::level::info, kl::format::json);
  constexpr int threads = 4, per_thread = 500;
  const std::string padding(300, 'x');
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i)
        kl::info("line", {{"thread", t}, {"i", i}, {"padding", padding}});
    });
  for (auto& t : ts) t.join();
  const auto lines = log.lines();
  REQUIRE(lines.size() == threads * per_thread);
  std::vector<int> seen(threads, 0);
  for (const auto& l : lines) {
    json j = json::parse(l, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), l);
    CHECK(j["i"] == seen[j["thread"].get<int>()]++);  // and in order per thread
  }
}
