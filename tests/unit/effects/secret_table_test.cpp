// effects/secret_table.hpp: a node's secrets from its config and its store,
// expanded into a call's spec and redacted from what the call returns.

#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/node_config.hpp"
#include "effects/secret_table.hpp"
#include "persistence/store.hpp"
#include "support/temp_dir.hpp"

using namespace keel;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A store in a temp dir and a secret table over it.
class table_fixture {
 public:
  explicit table_fixture(config::node_config cfg = {}) : cfg_(std::move(cfg)) {
    cfg_.data_dir = (dir_.path() / "data").string();
    auto db = persistence::store::open({cfg_.data_dir, 8 << 20, true});
    REQUIRE_MESSAGE(db.is_ok(), db.error().to_string());
    db_ = std::move(*db);
  }
  result<std::unique_ptr<actors::secret_table>> open() {
    notes.clear();
    return actors::secret_table::open(cfg_, *db_, notes);
  }
  std::unique_ptr<actors::secret_table> open_ok() {
    auto t = open();
    REQUIRE_MESSAGE(t.is_ok(), t.error().to_string());
    return std::move(*t);
  }
  fs::path write_file(const std::string& name, const std::string& content) {
    fs::path p = dir_.path() / name;
    std::ofstream(p, std::ios::binary) << content;
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    return p;
  }
  config::node_config& cfg() { return cfg_; }
  std::vector<std::string> notes;

 private:
  test::temp_dir dir_{"keel-secret-table"};
  config::node_config cfg_;
  std::unique_ptr<persistence::store> db_;
};

config::tool_spec http_tool(std::map<std::string, std::string> headers) {
  config::tool_spec t;
  t.name = "crm";
  t.kind = config::tool_kind::http;
  t.url = "http://127.0.0.1:9/crm";
  t.headers = std::move(headers);
  return t;
}

}  // namespace

TEST_CASE("config secrets come from a file (one trailing newline dropped) or a variable") {
  table_fixture f;
  const fs::path file = f.write_file("crm", "crm-token-123\n");
  const fs::path pem = f.write_file("pem", "line one\nline two\r\n");
  ::setenv("KEEL_TEST_SECRET_TOK", "tok-from-env", 1);
  f.cfg().secrets["crm"] = {config::secret_origin::kind::file, file.string()};
  f.cfg().secrets["pem"] = {config::secret_origin::kind::file, pem.string()};
  f.cfg().secrets["tok"] = {config::secret_origin::kind::env, "KEEL_TEST_SECRET_TOK"};
  auto t = f.open_ok();
  ::unsetenv("KEEL_TEST_SECRET_TOK");

  auto tool = http_tool({{"A", "${secret:crm}"}, {"B", "${secret:pem}"}, {"C", "x ${secret:tok}"}});
  tool.headers.erase("B");  // a header cannot take the line break
  auto r = t->scope().resolve(tool);
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  REQUIRE(r->has_value());
  CHECK((*r)->headers.at("A") == "crm-token-123");
  CHECK((*r)->headers.at("C") == "x tok-from-env");
  config::tool_spec exec;
  exec.kind = config::tool_kind::exec;
  exec.env = {{"PEM", "${secret:pem}"}};
  auto e = t->scope().resolve(exec);
  REQUIRE(e.is_ok());
  CHECK((*e)->env.at("PEM") == "line one\nline two");

  auto listed = t->list();
  REQUIRE(listed.size() == 3);
  CHECK(listed[0].name == "crm");
  CHECK(listed[0].source == actors::secret_source::file);
  CHECK(listed[0].from == file.string());
  CHECK(listed[2].source == actors::secret_source::env);
  CHECK(listed[2].from == "KEEL_TEST_SECRET_TOK");

  // The config's own cannot be changed or removed through the API.
  auto set = t->set("crm", "other-value");
  REQUIRE_FALSE(set.is_ok());
  CHECK(set.error().error_code() == code::conflict);
  CHECK(t->remove("tok").error_code() == code::conflict);
}

TEST_CASE("a config secret whose file or variable is missing fails the start, naming it") {
  table_fixture f;
  SUBCASE("a missing file") {
    f.cfg().secrets["crm"] = {config::secret_origin::kind::file, "/nonexistent/keel/crm"};
    auto t = f.open();
    REQUIRE_FALSE(t.is_ok());
    CHECK(contains(t.error().message(), "secret \"crm\": cannot read file /nonexistent/keel/crm"));
  }
  SUBCASE("an empty file") {
    f.cfg().secrets["crm"] = {config::secret_origin::kind::file, f.write_file("e", "\n").string()};
    auto t = f.open();
    REQUIRE_FALSE(t.is_ok());
    CHECK(contains(t.error().message(), "is empty"));
  }
  SUBCASE("an unset variable") {
    ::unsetenv("KEEL_TEST_SECRET_UNSET");
    f.cfg().secrets["tok"] = {config::secret_origin::kind::env, "KEEL_TEST_SECRET_UNSET"};
    auto t = f.open();
    REQUIRE_FALSE(t.is_ok());
    CHECK(t.error().message() ==
          "secret \"tok\": the environment variable KEEL_TEST_SECRET_UNSET is not set");
  }
}

TEST_CASE("secrets set through the table are created, replaced, removed and kept") {
  table_fixture f;
  {
    auto t = f.open_ok();
    auto created = t->set("crm", "first-value");
    REQUIRE(created.is_ok());
    CHECK(*created);
    auto replaced = t->set("crm", "second-value");
    REQUIRE(replaced.is_ok());
    CHECK_FALSE(*replaced);
    CHECK(t->set("a b", "v").error().error_code() == code::invalid_argument);
    CHECK(t->set("empty", "").error().error_code() == code::invalid_argument);
    CHECK(t->remove("nope").error_code() == code::not_found);
    REQUIRE(t->set("gone", "gone-value").is_ok());
    REQUIRE(t->remove("gone").is_ok());
  }
  auto t = f.open_ok();
  auto listed = t->list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].name == "crm");
  CHECK(listed[0].source == actors::secret_source::store);
  auto r = t->scope().resolve(http_tool({{"Authorization", "Bearer ${secret:crm}"}}));
  REQUIRE(r.is_ok());
  CHECK((*r)->headers.at("Authorization") == "Bearer second-value");
}

TEST_CASE(
    "a call's spec is expanded only where it refers to secrets, and an unknown one is named") {
  table_fixture f;
  auto t = f.open_ok();
  REQUIRE(t->set("crm", "crm-value").is_ok());
  auto plain = t->scope().resolve(http_tool({{"X-Plain", "$5 ${HOME}"}}));
  REQUIRE(plain.is_ok());
  CHECK_FALSE(plain->has_value());
  auto escaped = t->scope().resolve(http_tool({{"X-Lit", "$${secret:crm}"}}));
  REQUIRE(escaped.is_ok());
  CHECK((*escaped)->headers.at("X-Lit") == "${secret:crm}");

  auto unknown = t->scope().resolve(http_tool({{"Authorization", "Bearer ${secret:erp}"}}));
  REQUIRE_FALSE(unknown.is_ok());
  CHECK(unknown.error().error_code() == code::not_found);
  CHECK(unknown.error().message() ==
        "header Authorization: secret \"erp\" is not set on this node");

  REQUIRE(t->set("multi", "a\r\nInjected: yes").is_ok());
  auto broken = t->scope().resolve(http_tool({{"Authorization", "${secret:multi}"}}));
  REQUIRE_FALSE(broken.is_ok());
  CHECK(contains(broken.error().message(), "line break"));
  CHECK_FALSE(contains(broken.error().message(), "Injected"));

  config::model_spec m;
  m.provider = "openai";
  m.api_key = "${secret:crm}";
  m.headers = {{"X-Org", "org-${secret:crm}"}};
  auto model = t->scope().resolve(m);
  REQUIRE(model.is_ok());
  CHECK((*model)->api_key == "crm-value");
  CHECK((*model)->headers.at("X-Org") == "org-crm-value");
}

TEST_CASE("redaction replaces every known value in a result and its error, longest first") {
  table_fixture f;
  auto t = f.open_ok();
  REQUIRE(t->set("crm", "tok-1234").is_ok());
  REQUIRE(t->set("crm_long", "tok-1234-extended").is_ok());
  REQUIRE(t->set("pin", "123").is_ok());  // too short to redact

  actors::effect_outcome o;
  o.ok = false;
  o.error = "HTTP 401: bad token tok-1234-extended (pin 123)";
  o.result = {{"echo", "Bearer tok-1234"},
              {"list", {"x tok-1234 y", 7, nullptr}},
              {"tok-1234", {{"nested", "tok-1234tok-1234"}}}};
  t->scope().redact(o);
  CHECK(o.error == "HTTP 401: bad token [secret:crm_long] (pin 123)");
  CHECK(o.result["echo"] == "Bearer [secret:crm]");
  CHECK(o.result["list"] == json{"x [secret:crm] y", 7, nullptr});
  REQUIRE(o.result.contains("[secret:crm]"));
  CHECK(o.result["[secret:crm]"]["nested"] == "[secret:crm][secret:crm]");
  CHECK_FALSE(contains(o.result.dump(), "tok-1234"));

  actors::secret_values v{{"k", {"abcd", actors::secret_source::store, "", 0}}};
  CHECK(actors::redact_text("xxabcdabcxabcd", v) == "xx[secret:k]abcx[secret:k]");
  CHECK(actors::redact_text("nothing here", v) == "nothing here");
}

TEST_CASE("a value replaced while a call runs is redacted in its old and new form") {
  table_fixture f;
  auto t = f.open_ok();
  REQUIRE(t->set("crm", "old-value-1").is_ok());
  const actors::secret_scope scope = t->scope();
  REQUIRE(t->set("crm", "new-value-2").is_ok());
  actors::effect_outcome o =
      actors::effect_outcome::success({{"a", "old-value-1"}, {"b", "new-value-2"}});
  scope.redact(o);
  CHECK(o.result == json{{"a", "[secret:crm]"}, {"b", "[secret:crm]"}});
}
