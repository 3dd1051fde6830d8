#include "base/log.hpp"

#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "base/clock.hpp"

namespace keel::log {

namespace detail {
std::atomic<uint8_t> threshold{static_cast<uint8_t>(level::info)};
}

namespace {

std::atomic<uint8_t> current_format{static_cast<uint8_t>(format::text)};
std::atomic<int> output_fd{STDERR_FILENO};

// A JSON string literal; bytes that are not UTF-8 become U+FFFD, so a line
// is always valid JSON.
void append_quoted(std::string& out, std::string_view s) {
  out += nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool needs_quotes(std::string_view s) {
  if (s.empty()) return true;
  for (unsigned char c : s)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) return true;
  return false;
}

template <class T>
void append_number(std::string& out, T v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_value(std::string& out, const field& f, format fmt) {
  switch (f.type) {
    case field::kind::text:
      if (fmt == format::json || needs_quotes(f.text))
        append_quoted(out, f.text);
      else
        out += f.text;
      return;
    case field::kind::signed_int:
      return append_number(out, f.i);
    case field::kind::unsigned_int:
      return append_number(out, f.u);
    case field::kind::boolean:
      out += f.b ? "true" : "false";
      return;
    case field::kind::real:
      if (!std::isfinite(f.d)) {
        out += fmt == format::json ? "null" : "nan";
        return;
      }
      return append_number(out, f.d);
  }
}

}  // namespace

const char* const level_choices = "error, warn, info, debug";
const char* const format_choices = "text, json";

std::string_view to_string(level l) {
  switch (l) {
    case level::error:
      return "error";
    case level::warn:
      return "warn";
    case level::info:
      return "info";
    case level::debug:
      return "debug";
  }
  return "info";
}

std::optional<level> parse_level(std::string_view name) {
  for (level l : {level::error, level::warn, level::info, level::debug})
    if (to_string(l) == name) return l;
  return std::nullopt;
}

std::string_view to_string(format f) {
  return f == format::json ? "json" : "text";
}

std::optional<format> parse_format(std::string_view name) {
  if (name == "text") return format::text;
  if (name == "json") return format::json;
  return std::nullopt;
}

void configure(level l, format f) {
  detail::threshold.store(static_cast<uint8_t>(l), std::memory_order_relaxed);
  current_format.store(static_cast<uint8_t>(f), std::memory_order_relaxed);
}

level threshold() {
  return static_cast<level>(detail::threshold.load(std::memory_order_relaxed));
}

format output_format() {
  return static_cast<format>(current_format.load(std::memory_order_relaxed));
}

void set_output(int fd) {
  output_fd.store(fd, std::memory_order_relaxed);
}

std::string format_line(level l, std::string_view msg, std::span<const field> fs, int64_t time_ms,
                        format f) {
  std::string out;
  out.reserve(64 + msg.size() + 24 * fs.size());
  if (f == format::json) {
    out += "{\"time\":\"";
    out += utc_iso8601(time_ms);
    out += "\",\"level\":\"";
    out += to_string(l);
    out += "\",\"msg\":";
    append_quoted(out, msg);
    for (const field& x : fs) {
      assert(x.key != "time" && x.key != "level" && x.key != "msg");
      out += ',';
      append_quoted(out, x.key);
      out += ':';
      append_value(out, x, f);
    }
    out += "}\n";
    return out;
  }
  out += utc_iso8601(time_ms);
  out += ' ';
  const std::string_view name = to_string(l);
  out += name;
  out.append(name.size() < 5 ? 5 - name.size() : 0, ' ');
  out += ' ';
  // A message is one line: a newline in it (from an error text) would start
  // what reads as a record of its own.
  for (char c : msg) out += c == '\n' || c == '\r' ? ' ' : c;
  for (const field& x : fs) {
    out += ' ';
    out += x.key;
    out += '=';
    append_value(out, x, f);
  }
  out += '\n';
  return out;
}

void write(level l, std::string_view msg, std::span<const field> fs) {
  const std::string line = format_line(l, msg, fs, wall_ms(), output_format());
  const int fd = output_fd.load(std::memory_order_relaxed);
  std::size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to log to: drop the line, never the process
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace keel::log
