// config/secret_refs.hpp and where agent types and the node config use it.

#include <doctest/doctest.h>

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "config/agent_spec.hpp"
#include "config/node_config.hpp"
#include "config/secret_refs.hpp"

using namespace keel;
using nlohmann::json;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

config::secret_lookup lookup_in(const std::map<std::string, std::string, std::less<>>& values) {
  return [&values](std::string_view name) -> const std::string* {
    auto it = values.find(name);
    return it == values.end() ? nullptr : &it->second;
  };
}

json scripted() {
  return {{"provider", "scripted"}, {"script", {{"replies", {{{"content", "hi"}}}}}}};
}

json spec_with_tool(const json& tool) {
  return {{"name", "desk"}, {"model", scripted()}, {"tools", {tool}}};
}

json http_tool(const json& headers) {
  return {
      {"name", "crm"}, {"kind", "http"}, {"url", "http://127.0.0.1:9/crm"}, {"headers", headers}};
}

json exec_tool(const json& env) {
  return {{"name", "report"}, {"kind", "exec"}, {"argv", {"/bin/sh", "-c", "true"}}, {"env", env}};
}

std::string load_error(const json& spec) {
  auto r = config::parse_agent_spec_body(spec, "desk.json");
  REQUIRE_FALSE(r.is_ok());
  return r.error().message();
}

}  // namespace

TEST_CASE("references are found by name, and $${ is a literal ${") {
  auto refs = config::secret_references("Bearer ${secret:crm} and ${secret:crm.v2-x_y}");
  REQUIRE(refs.is_ok());
  CHECK(*refs == std::vector<std::string>{"crm", "crm.v2-x_y"});

  const std::map<std::string, std::string, std::less<>> values{{"crm", "s3cret"}};
  auto out =
      config::expand_secrets("Bearer ${secret:crm}; $${secret:crm}; $5 ${HOME}", lookup_in(values));
  REQUIRE(out.is_ok());
  CHECK(*out == "Bearer s3cret; ${secret:crm}; $5 ${HOME}");

  CHECK(config::needs_expansion("${secret:crm}"));
  CHECK(config::needs_expansion("cost $${x}"));
  CHECK_FALSE(config::needs_expansion("plain $5 ${HOME}"));
  // An escape is not a reference.
  auto escaped = config::secret_references("$${secret:crm}");
  REQUIRE(escaped.is_ok());
  CHECK(escaped->empty());
}

TEST_CASE("an unclosed reference or a bad name is refused with what is wrong") {
  auto open = config::secret_references("Bearer ${secret:crm");
  REQUIRE_FALSE(open.is_ok());
  CHECK(contains(open.error().message(), "no closing"));
  CHECK(contains(open.error().message(), "$${"));

  for (const char* bad : {"${secret:}", "${secret:a b}", "${secret:crm/x}"}) {
    CAPTURE(bad);
    auto r = config::secret_references(bad);
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "[A-Za-z0-9_.-]"));
  }
  CHECK(config::is_secret_name(std::string(64, 'a')));
  CHECK_FALSE(config::is_secret_name(std::string(65, 'a')));
}

TEST_CASE("expanding names the first secret the node does not have") {
  const std::map<std::string, std::string, std::less<>> values{{"crm", "s3cret"}};
  auto out = config::expand_secrets("${secret:crm}:${secret:erp}", lookup_in(values));
  REQUIRE_FALSE(out.is_ok());
  CHECK(out.error().error_code() == code::not_found);
  CHECK(out.error().message() == "secret \"erp\" is not set on this node");
}

TEST_CASE("an agent type checks its references at load and names the field") {
  SUBCASE("an http tool's header") {
    auto msg = load_error(spec_with_tool(http_tool({{"Authorization", "Bearer ${secret:crm"}})));
    CHECK(contains(msg, "desk.json: /tools/0/headers/Authorization: "));
    CHECK(contains(msg, "no closing"));
  }
  SUBCASE("an exec tool's env: a bad name, PATH, a bad variable name") {
    CHECK(contains(load_error(spec_with_tool(exec_tool({{"TOKEN", "${secret:a b}"}}))),
                   "/tools/0/env/TOKEN: secret name"));
    CHECK(contains(load_error(spec_with_tool(exec_tool({{"PATH", "/opt/bin"}}))),
                   "/tools/0/env/PATH: PATH is the sandbox's"));
    CHECK(contains(load_error(spec_with_tool(exec_tool({{"1X", "v"}}))),
                   "/tools/0/env/1X: must be an environment variable name"));
  }
  SUBCASE("env belongs to exec tools") {
    json tool = http_tool(json::object());
    tool["env"] = {{"TOKEN", "x"}};
    CHECK(contains(load_error(spec_with_tool(tool)), "/tools/0/env: only applies to kind exec"));
  }
  SUBCASE("an openai model's api_key must refer to a secret, and not next to api_key_env") {
    json spec = spec_with_tool(http_tool(json::object()));
    spec["model"] = {{"provider", "openai"},
                     {"base_url", "http://127.0.0.1:9/v1"},
                     {"api_key", "sk-literal-key"}};
    CHECK(contains(load_error(spec), "/model/api_key: must refer to a secret"));
    spec["model"]["api_key"] = "${secret:openai}";
    spec["model"]["api_key_env"] = "OPENAI_KEY";
    CHECK(contains(load_error(spec), "/model/api_key: give api_key or api_key_env, not both"));
    spec["model"].erase("api_key_env");
    spec["model"]["headers"] = {{"OpenAI-Organization", "${secret:org"}};
    CHECK(contains(load_error(spec), "/model/headers/OpenAI-Organization: "));
  }
}

TEST_CASE("a spec keeps the reference text, so its version covers the reference, never a value") {
  json spec = spec_with_tool(http_tool({{"Authorization", "Bearer ${secret:crm}"}}));
  spec["tools"].push_back(exec_tool({{"TOKEN", "${secret:crm}"}, {"HOME", "/tmp/r"}}));
  spec["model"] = {{"provider", "openai"},
                   {"base_url", "http://127.0.0.1:9/v1"},
                   {"api_key", "${secret:openai}"},
                   {"headers", {{"X-Org", "${secret:org}"}}}};
  auto a = config::parse_agent_spec_body(spec, "desk.json");
  REQUIRE_MESSAGE(a.is_ok(), a.error().to_string());
  const auto& s = **a;
  CHECK(s.tools[0].headers.at("Authorization") == "Bearer ${secret:crm}");
  CHECK(s.tools[1].env.at("TOKEN") == "${secret:crm}");
  CHECK(s.model.api_key == "${secret:openai}");
  CHECK(s.model.headers.at("X-Org") == "${secret:org}");
  CHECK(s.canonical["tools"][0]["headers"]["Authorization"] == "Bearer ${secret:crm}");

  auto again = config::parse_agent_spec_body(spec, "desk.json");
  REQUIRE(again.is_ok());
  CHECK((*again)->hash == s.hash);
  spec["tools"][0]["headers"]["Authorization"] = "Bearer ${secret:crm2}";
  auto other = config::parse_agent_spec_body(spec, "desk.json");
  REQUIRE(other.is_ok());
  CHECK((*other)->hash != s.hash);
}

TEST_CASE("node config secrets name a file or a variable, and the key file") {
  auto c = config::from_json(json::parse(R"({"data_dir": "/d", "secret_key_file": "/k/secret.key",
                      "secrets": {"crm": {"file": "/run/crm"}, "tok": {"env": "TOK"}}})"),
                             "n.json");
  REQUIRE_MESSAGE(c.is_ok(), c.error().to_string());
  CHECK(c->secret_key_file == "/k/secret.key");
  REQUIRE(c->secrets.size() == 2);
  CHECK(c->secrets.at("crm").from == config::secret_origin::kind::file);
  CHECK(c->secrets.at("crm").where == "/run/crm");
  CHECK(c->secrets.at("tok").from == config::secret_origin::kind::env);
  CHECK(c->secrets.at("tok").where == "TOK");

  auto bad_name = config::from_json(json::parse(R"({"secrets": {"a b": {"env": "X"}}})"), "n.json");
  REQUIRE_FALSE(bad_name.is_ok());
  CHECK(contains(bad_name.error().message(), "n.json: \"secrets\": \"a b\": secret name"));
  auto bad_shape = config::from_json(
      json::parse(R"({"secrets": {"crm": {"file": "/a", "env": "B"}}})"), "n.json");
  REQUIRE_FALSE(bad_shape.is_ok());
  CHECK(contains(bad_shape.error().message(), "expected {\"file\": \"/path\"} or {\"env\""));
}
