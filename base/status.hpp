#pragma once
// status and result<T>: how every layer reports failure.
//
// Codes are stable: they travel on the wire as strings (to_string(code)) and
// map to HTTP statuses in net/api/. A status is cheap to copy when ok (no
// allocation); a failed one carries a message written for the user.

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace keel {

enum class code {
  ok = 0,
  invalid_argument,  // bad input from outside (HTTP, config, CLI)
  not_found,
  already_exists,
  conflict,    // the target is in a state that refuses the request
  corruption,  // data on disk or wire failed a check
  io_error,
  unavailable,  // shutting down, overloaded, or a peer is down
  timeout,
  too_large,
  unauthorized,
  internal,  // a broken invariant of ours
  no_space,  // the disk is full (or below the store's reserve): retry once it has room
};
inline constexpr code last_code = code::no_space;

const char* to_string(code c);
// The code named by to_string(c); code::internal for names it never gives.
code code_from_string(std::string_view name);

class [[nodiscard]] status {
 public:
  status() = default;
  status(code c, std::string message) : code_(c), message_(std::move(message)) {}

  static status ok() { return {}; }

  bool is_ok() const { return code_ == code::ok; }
  explicit operator bool() const { return is_ok(); }
  code error_code() const { return code_; }
  const std::string& message() const { return message_; }
  // "not_found: agent acct/alice does not exist"
  std::string to_string() const;
  // Explicitly drops a status; greppable so ignored errors stay visible.
  void ignore() const {}

 private:
  code code_ = code::ok;
  std::string message_;
};

inline status error(code c, std::string message) {
  return status(c, std::move(message));
}

// A value or a failed status. REQUIRES: never constructed from an ok status.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::move(value)) {}
  result(status s) : v_(std::move(s)) { assert(!std::get<status>(v_).is_ok()); }

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }

  T& value() & {
    assert(is_ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(is_ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(is_ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // The failure; an ok status when this holds a value.
  status error() const { return is_ok() ? status::ok() : std::get<1>(v_); }
  void ignore() const {}

 private:
  std::variant<T, status> v_;
};

}  // namespace keel

// Propagates a failed status out of the enclosing function.
#define KEEL_TRY(expr)                    \
  do {                                    \
    ::keel::status _keel_s = (expr);      \
    if (!_keel_s.is_ok()) return _keel_s; \
  } while (0)
