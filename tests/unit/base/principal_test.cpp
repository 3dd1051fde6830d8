#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "base/principal.hpp"

using keel::principal;
using keel::scope;

namespace {

uint32_t bits(std::initializer_list<scope> list) {
  uint32_t b = 0;
  for (scope s : list) b |= static_cast<uint32_t>(s);
  return b;
}

}  // namespace

TEST_CASE("scopes parse from a comma list and a JSON array, and name the one that is not") {
  CHECK(keel::parse_scopes("read,approve") == bits({scope::read, scope::approve}));
  CHECK(keel::parse_scopes("") == 0u);
  std::string bad;
  CHECK_FALSE(keel::parse_scopes("read,aprove", &bad));
  CHECK(bad == "aprove");

  auto ok = keel::scopes_from_json(nlohmann::json{"send", "work"});
  REQUIRE(ok);
  CHECK(*ok == bits({scope::send, scope::work}));
  auto wrong = keel::scopes_from_json(nlohmann::json{"read", "delete"});
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().message().find("unknown scope \"delete\"") != std::string::npos);
  CHECK_FALSE(keel::scopes_from_json(nlohmann::json("read")));
  CHECK(keel::scope_names(bits({scope::operate, scope::read})) ==
        std::vector<std::string>{"read", "operate"});
}

TEST_CASE("a principal may what its scopes allow, admin everything, within its agent limits") {
  principal approver{"maria", bits({scope::approve}), {"ticket/*", "vip/7"}};
  CHECK(approver.may(scope::approve, "ticket/1"));
  CHECK(approver.may(scope::approve, "vip/7"));
  CHECK_FALSE(approver.may(scope::approve, "vip/70"));
  CHECK_FALSE(approver.may(scope::approve, "other/1"));
  CHECK_FALSE(approver.may(scope::operate, "ticket/1"));
  // Node-wide routes: a limited principal only reads them.
  CHECK_FALSE(approver.may(scope::approve, ""));

  principal admin{"admin", keel::all_scopes, {}};
  for (scope s :
       {scope::read, scope::send, scope::approve, scope::operate, scope::admin, scope::work})
    CHECK(admin.may(s, ""));
  principal limited_admin{"ops", bits({scope::admin}), {"ticket/*"}};
  CHECK(limited_admin.may(scope::operate, "ticket/2"));
  CHECK(limited_admin.may(scope::read, ""));
  CHECK_FALSE(limited_admin.may(scope::admin, ""));

  CHECK(keel::valid_agent_pattern("ticket/*"));
  CHECK_FALSE(keel::valid_agent_pattern("*"));
  CHECK_FALSE(keel::valid_agent_pattern("ti*ket"));
  CHECK(keel::same_secret("abc", "abc"));
  CHECK_FALSE(keel::same_secret("abc", "abd"));
  CHECK_FALSE(keel::same_secret("abc", "abcd"));
}
