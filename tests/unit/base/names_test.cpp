#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "base/names.hpp"

using keel::code;
using keel::nearest_name;
using keel::validate_agent_name;
using keel::validate_signal_name;

TEST_CASE("agent names that match [a-z0-9][a-z0-9._/-]{0,127} are accepted") {
  for (const char* name : {"a", "0", "acct/alice", "counter-1", "a.b_c/d-e", "9lives", "x/", "a..b",
                           "a//b", "z-", "team_7/agent.v2"}) {
    CAPTURE(name);
    CHECK(validate_agent_name(name).is_ok());
  }
}

TEST_CASE("an agent name of exactly 128 characters is accepted and 129 is refused") {
  std::string name128 = "a" + std::string(127, 'b');
  REQUIRE(name128.size() == keel::max_agent_name);
  CHECK(validate_agent_name(name128).is_ok());

  std::string name129 = name128 + "c";
  auto s = validate_agent_name(name129);
  CHECK(s.error_code() == code::invalid_argument);
  CHECK(s.message().find("128") != std::string::npos);
}

TEST_CASE("the empty agent name is refused") {
  auto s = validate_agent_name("");
  CHECK(s.error_code() == code::invalid_argument);
  CHECK(s.message().find("empty") != std::string::npos);
}

TEST_CASE("an agent name must start with a lowercase letter or digit") {
  for (const char* name : {"/acct", ".hidden", "_x", "-x", "Alice", " a"}) {
    CAPTURE(name);
    auto s = validate_agent_name(name);
    CHECK(s.error_code() == code::invalid_argument);
    CHECK(s.message().find(name) != std::string::npos);
  }
}

TEST_CASE("a character outside the alphabet is refused and its position reported") {
  SUBCASE("uppercase") {
    auto s = validate_agent_name("acct/Alice");
    CHECK(s.error_code() == code::invalid_argument);
    CHECK(s.message().find("position 5") != std::string::npos);
  }
  SUBCASE("space") {
    auto s = validate_agent_name("a b");
    CHECK(s.error_code() == code::invalid_argument);
    CHECK(s.message().find("position 1") != std::string::npos);
  }
  SUBCASE("other punctuation and bytes") {
    for (std::string name :
         {std::string("a:b"), std::string("a@b"), std::string("a\\b"), std::string("a%2f"),
          std::string("a\xc3\xa9"), std::string("a\0b", 3), std::string("a\nb")}) {
      CAPTURE(name);
      CHECK(validate_agent_name(name).error_code() == code::invalid_argument);
    }
  }
  SUBCASE("every byte outside the alphabet in the middle of a name") {
    for (int c = 0; c < 256; ++c) {
      char ch = static_cast<char>(c);
      bool allowed = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                     ch == '_' || ch == '/' || ch == '-';
      std::string name = std::string("a") + ch + "b";
      CAPTURE(c);
      CHECK(validate_agent_name(name).is_ok() == allowed);
    }
  }
}

TEST_CASE("a mistyped name finds the one it most likely meant, and only a near one") {
  const std::vector<std::string> signals = {"approve", "reject", "resolve",
                                            "answer",  "cancel", "retry"};
  CHECK(nearest_name("aprove", signals) == "approve");
  CHECK(nearest_name("Approve", signals) == "approve");
  CHECK(nearest_name("rejcet", signals) == "reject");
  CHECK(nearest_name("retyr", signals) == "retry");
  CHECK(nearest_name("approve", signals) == "approve");
  // Too far, too short to tell, or two as near: no guess.
  CHECK(nearest_name("escalate", signals).empty());
  CHECK(nearest_name("ab", signals).empty());
  CHECK(nearest_name("bat", {"cat", "hat"}).empty());
  CHECK(nearest_name("x", {}).empty());
}

TEST_CASE("signal names are short words of letters, digits and . _ : -") {
  for (const char* ok : {"approve", "a", "ops:wake", "remind.later", "Re_try-2"})
    CHECK_MESSAGE(validate_signal_name(ok).is_ok(), ok);
  for (std::string bad : {std::string(), std::string(65, 'a'), std::string("has space"),
                          std::string("a/b"), std::string("a\0b", 3)}) {
    CAPTURE(bad);
    CHECK(validate_signal_name(bad).error_code() == code::invalid_argument);
  }
}
