#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/registry.hpp"
#include "config/agent_spec.hpp"
#include "ledger/type_catalog.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using json = nlohmann::json;

namespace {

std::shared_ptr<const config::agent_spec> greeter(int n) {
  json j = {
      {"name", "greeter"},
      {"description", "version " + std::to_string(n)},
      {"model", {{"provider", "scripted"}, {"script", {{"replies", {{{"content", "hi"}}}}}}}}};
  auto r = config::parse_agent_spec(j, "greeter.json", "");
  REQUIRE_MESSAGE(r, r.error().message());
  return *r;
}

std::vector<std::string> hashes_in_order(const agent::type_registry& types) {
  std::vector<std::string> out;
  for (const auto& v : types.versions("greeter")) out.push_back(v.hash);
  return out;
}

}  // namespace

TEST_CASE(
    "versions registered within one millisecond list in the order they came, also after a "
    "restart") {
  test::temp_dir dir("keel-types");
  std::vector<std::string> registered;
  {
    auto db = persistence::store::open({dir.str(), 8 << 20, true});
    REQUIRE(db);
    agent::type_registry types;
    actors::type_catalog catalog(**db, types);
    std::vector<std::string> notes;
    REQUIRE(catalog.open({}, notes));
    // Twenty versions in a tight loop: most share a millisecond.
    for (int n = 0; n < 20; ++n) {
      auto put = catalog.put(greeter(n));
      REQUIRE_MESSAGE(put, put.error().message());
      registered.push_back(put->hash);
    }
    CHECK(hashes_in_order(types) == registered);
    int64_t last = 0;
    for (const auto& v : types.versions("greeter")) {
      CHECK(v.added_ms > last);
      last = v.added_ms;
    }
  }
  auto db = persistence::store::open({dir.str(), 8 << 20, true});
  REQUIRE(db);
  agent::type_registry types;
  actors::type_catalog catalog(**db, types);
  std::vector<std::string> notes;
  REQUIRE(catalog.open({}, notes));
  CHECK(hashes_in_order(types) == registered);
  REQUIRE(types.find("greeter"));
  CHECK(types.find("greeter")->version() == registered.back());
}
