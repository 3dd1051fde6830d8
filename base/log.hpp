#pragma once
// The process's log: one line per record on stderr, as text for a terminal
// or as JSON Lines for a collector.
//
//   text: 2025-06-01T12:00:00.123Z info  turn started agent=acct/alice seq=3
//   json: {"time":"2025-06-01T12:00:00.123Z","level":"info","msg":"turn started",
//          "agent":"acct/alice","seq":3}
//
// A record is a level, a message and key=value fields. In text, a value is
// written bare unless it is empty or holds a space, a quote, '=' or a
// control character; then it is a JSON string ("a b"). In JSON the fields
// sit next to time, level and msg, which no field may be named.
//
// Cost: a record below the configured level is dropped after one relaxed
// atomic load, before anything is formatted; build expensive field values
// only under `if (log::enabled(...))`. Thread-safety: every function may be
// called from any thread; a line is formatted apart and handed to the
// output with one write(2), so lines never interleave (up to PIPE_BUF bytes
// on a pipe, whole on a terminal or file). The configuration is process-wide:
// set it once at start, before threads log.

#include <atomic>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace keel::log {

enum class level : uint8_t { error = 0, warn = 1, info = 2, debug = 3 };
enum class format : uint8_t { text, json };

// "error", "warn", "info", "debug"; and back (nullopt for other names).
std::string_view to_string(level l);
std::optional<level> parse_level(std::string_view name);
// "text", "json"; and back.
std::string_view to_string(format f);
std::optional<format> parse_format(std::string_view name);
// The choices, for messages: "error, warn, info, debug" and "text, json".
extern const char* const level_choices;
extern const char* const format_choices;

// One key=value. Holds views: the key and a text value must outlive the
// call that logs them (a temporary in the call's arguments does).
struct field {
  enum class kind : uint8_t { text, signed_int, unsigned_int, boolean, real };

  field(std::string_view k, std::string_view v) : key(k), type(kind::text), text(v) {}
  field(std::string_view k, const std::string& v) : key(k), type(kind::text), text(v) {}
  field(std::string_view k, const char* v) : key(k), type(kind::text), text(v) {}
  field(std::string_view k, bool v) : key(k), type(kind::boolean), b(v) {}
  field(std::string_view k, double v) : key(k), type(kind::real), d(v) {}
  template <std::signed_integral T>
  field(std::string_view k, T v) : key(k), type(kind::signed_int), i(v) {}
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>) field(std::string_view k, T v)
      : key(k), type(kind::unsigned_int), u(v) {}

  std::string_view key;
  kind type;
  std::string_view text;
  int64_t i = 0;
  uint64_t u = 0;
  bool b = false;
  double d = 0;
};
using fields = std::initializer_list<field>;

// Records at `threshold` and more severe are written. Default info, text.
void configure(level threshold, format f);
level threshold();
format output_format();
// Where lines go: a file descriptor, default 2 (stderr). For tests.
void set_output(int fd);

namespace detail {
extern std::atomic<uint8_t> threshold;
}

inline bool enabled(level l) {
  return static_cast<uint8_t>(l) <= detail::threshold.load(std::memory_order_relaxed);
}

// The line a record makes (with its '\n'), at `time_ms` (Unix ms), in `f`.
// Pure: for tests and for callers that print a record elsewhere.
std::string format_line(level l, std::string_view msg, std::span<const field> fs, int64_t time_ms,
                        format f);
inline std::string format_line(level l, std::string_view msg, fields fs, int64_t time_ms,
                               format f) {
  return format_line(l, msg, std::span<const field>(fs.begin(), fs.size()), time_ms, f);
}

// Writes a record now, whatever the threshold.
void write(level l, std::string_view msg, std::span<const field> fs);
inline void write(level l, std::string_view msg, fields fs = {}) {
  write(l, msg, std::span<const field>(fs.begin(), fs.size()));
}

inline void error(std::string_view msg, fields fs = {}) {
  if (enabled(level::error)) write(level::error, msg, fs);
}
inline void warn(std::string_view msg, fields fs = {}) {
  if (enabled(level::warn)) write(level::warn, msg, fs);
}
inline void info(std::string_view msg, fields fs = {}) {
  if (enabled(level::info)) write(level::info, msg, fs);
}
inline void debug(std::string_view msg, fields fs = {}) {
  if (enabled(level::debug)) write(level::debug, msg, fs);
}

}  // namespace keel::log
