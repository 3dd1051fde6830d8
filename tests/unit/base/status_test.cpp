#include <doctest/doctest.h>

#include <memory>
#include <set>
#include <string>

#include "base/status.hpp"

using keel::code;
using keel::result;
using keel::status;

namespace {

const code all_codes[] = {
    code::ok,       code::invalid_argument, code::not_found,    code::already_exists,
    code::conflict, code::corruption,       code::io_error,     code::unavailable,
    code::timeout,  code::too_large,        code::unauthorized, code::internal,
    code::no_space};

status fails_with(code c) {
  return keel::error(c, "boom");
}

// Uses KEEL_TRY twice; `steps` counts how far it got.
status two_steps(status first, status second, int& steps) {
  KEEL_TRY(first);
  ++steps;
  KEEL_TRY(second);
  ++steps;
  return status::ok();
}

}  // namespace

TEST_CASE("a default status is ok, allocates no message and prints as ok") {
  status s;
  CHECK(s.is_ok());
  CHECK(static_cast<bool>(s));
  CHECK(s.error_code() == code::ok);
  CHECK(s.message().empty());
  CHECK(s.to_string() == "ok");
  CHECK(status::ok().is_ok());
}

TEST_CASE("a failed status keeps its code and message and prints them together") {
  status s = keel::error(code::not_found, "agent acct/alice does not exist");
  CHECK_FALSE(s.is_ok());
  CHECK_FALSE(static_cast<bool>(s));
  CHECK(s.error_code() == code::not_found);
  CHECK(s.message() == "agent acct/alice does not exist");
  CHECK(s.to_string() == "not_found: agent acct/alice does not exist");

  status copy = s;
  CHECK(copy.error_code() == code::not_found);
  CHECK(copy.message() == s.message());
}

TEST_CASE("every code has a distinct, stable wire name") {
  std::set<std::string> names;
  for (code c : all_codes) names.insert(keel::to_string(c));
  CHECK(names.size() == std::size(all_codes));

  SUBCASE("the names are the snake_case spellings of the enumerators") {
    CHECK(std::string(keel::to_string(code::ok)) == "ok");
    CHECK(std::string(keel::to_string(code::invalid_argument)) == "invalid_argument");
    CHECK(std::string(keel::to_string(code::not_found)) == "not_found");
    CHECK(std::string(keel::to_string(code::already_exists)) == "already_exists");
    CHECK(std::string(keel::to_string(code::conflict)) == "conflict");
    CHECK(std::string(keel::to_string(code::corruption)) == "corruption");
    CHECK(std::string(keel::to_string(code::io_error)) == "io_error");
    CHECK(std::string(keel::to_string(code::unavailable)) == "unavailable");
    CHECK(std::string(keel::to_string(code::timeout)) == "timeout");
    CHECK(std::string(keel::to_string(code::too_large)) == "too_large");
    CHECK(std::string(keel::to_string(code::unauthorized)) == "unauthorized");
    CHECK(std::string(keel::to_string(code::internal)) == "internal");
  }
  SUBCASE("status::to_string prefixes the message with the code name") {
    for (code c : all_codes) {
      if (c == code::ok) continue;
      CAPTURE(keel::to_string(c));
      CHECK(fails_with(c).to_string() == std::string(keel::to_string(c)) + ": boom");
    }
  }
}

TEST_CASE("a result holds either a value or the failure it was built from") {
  SUBCASE("value") {
    result<int> r = 42;
    REQUIRE(r.is_ok());
    CHECK(static_cast<bool>(r));
    CHECK(r.value() == 42);
    CHECK(*r == 42);
    CHECK(r.error().is_ok());
    r.value() = 7;
    CHECK(*r == 7);
  }
  SUBCASE("failure") {
    result<int> r = keel::error(code::timeout, "too slow");
    CHECK_FALSE(r.is_ok());
    CHECK_FALSE(static_cast<bool>(r));
    CHECK(r.error().error_code() == code::timeout);
    CHECK(r.error().message() == "too slow");
  }
  SUBCASE("member access through ->") {
    result<std::string> r = std::string("hello");
    REQUIRE(r.is_ok());
    CHECK(r->size() == 5);
  }
  SUBCASE("move-only values can be moved out") {
    result<std::unique_ptr<int>> r = std::make_unique<int>(9);
    REQUIRE(r.is_ok());
    std::unique_ptr<int> p = std::move(r).value();
    REQUIRE(p != nullptr);
    CHECK(*p == 9);
  }
}

TEST_CASE("KEEL_TRY returns the first failure and continues past successes") {
  int steps = 0;
  SUBCASE("all ok") {
    CHECK(two_steps(status::ok(), status::ok(), steps).is_ok());
    CHECK(steps == 2);
  }
  SUBCASE("first fails") {
    status s = two_steps(fails_with(code::io_error), status::ok(), steps);
    CHECK(s.error_code() == code::io_error);
    CHECK(steps == 0);
  }
  SUBCASE("second fails") {
    status s = two_steps(status::ok(), fails_with(code::conflict), steps);
    CHECK(s.error_code() == code::conflict);
    CHECK(steps == 1);
  }
}
