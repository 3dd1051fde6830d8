#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "config/agent_spec.hpp"
#include "support/temp_dir.hpp"

using keel::code;
using nlohmann::json;
namespace cfg = keel::config;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// A minimal valid spec: an openai model and no tools.
json minimal() {
  return json::parse(R"({"name": "support", "model": {"provider": "openai",
                          "base_url": "http://127.0.0.1:8000/v1"}})");
}

json with_tool(json tool) {
  json j = minimal();
  j["tools"] = json::array({std::move(tool)});
  return j;
}

json http_tool(const std::string& name = "lookup") {
  return {{"name", name}, {"kind", "http"}, {"url", "https://example.test/lookup"}};
}

// The error message of parsing `j` as "spec.json", or "" when it parses.
std::string parse_error(const json& j, const std::string& base_dir = ".") {
  auto r = cfg::parse_agent_spec(j, "spec.json", base_dir);
  if (r) return "";
  CHECK(r.error().error_code() == code::invalid_argument);
  CHECK(contains(r.error().message(), "spec.json: "));
  return r.error().message();
}

}  // namespace

TEST_CASE("a spec using every field parses into the matching struct") {
  keel::test::temp_dir dir("spec");
  std::filesystem::create_directories(dir.path() / "scripts");
  write_file(dir.path() / "scripts" / "replies.jsonl", R"({"replies": [{"content": "hi"}]})");
  json j = json::parse(R"({
    "name": "refund-desk",
    "description": "handles refunds",
    "instructions": "Be careful.",
    "model": {"provider": "scripted", "model": "demo", "script": "scripts/replies.jsonl",
              "temperature": 0.5, "max_tokens": 512, "timeout_ms": 20000,
              "retry": {"attempts": 5, "backoff_ms": 100, "multiplier": 1.5,
                        "max_backoff_ms": 2000, "jitter": 0.1}},
    "tools": [
      {"name": "refund", "description": "issue a refund", "kind": "http",
       "url": "https://pay.test/refund", "headers": {"X-Team": "support"},
       "parameters": {"type": "object", "required": ["amount"], "additionalProperties": false,
                      "properties": {"amount": {"type": "number"}}},
       "idempotent": true, "require_approval": true, "compensate": "unrefund",
       "retry": {"attempts": 2, "timeout_ms": 5000}},
      {"name": "unrefund", "kind": "http", "url": "http://pay.test/unrefund"},
      {"name": "grep", "kind": "exec", "argv": ["sh", "-c", "cat"],
       "parameters": {"type": "object", "additionalProperties": false,
                      "properties": {"sql": {"type": "string"}}},
       "limits": {"cpu_seconds": 2, "memory_bytes": 1048576, "max_open_files": 8,
                  "max_processes": 1, "max_output_bytes": 4096, "allow_network": true}},
      {"name": "render", "kind": "worker", "queue": "renders", "lease_ms": 60000},
      {"name": "tell", "kind": "send_message", "idempotent": false},
      {"name": "ask", "kind": "ask_human"}
    ],
    "guardrails": {
      "allow_tools": ["refund", "unrefund", "tell", "ask", "grep", "render"],
      "deny_tools": ["render"],
      "rules": [
        {"name": "big", "tool": "refund", "pointer": "/amount", "above": 100,
         "action": "require_approval", "reason": "refunds over 100 need a human"},
        {"name": "no-drop", "tool": "grep", "pointer": "/sql", "pattern": "(?i)\\bdrop\\b"}
      ]
    },
    "budgets": {"per_turn": {"model_calls": 8, "tokens": 10000, "tool_calls": 20, "wall_ms": 60000},
                "lifetime": {"tokens": 1000000}},
    "idle_ms": 5000,
    "max_steps_per_turn": 4
  })");
  auto r = cfg::parse_agent_spec(j, "refund.json", dir.str());
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  const cfg::agent_spec& s = **r;
  CHECK(s.name == "refund-desk");
  CHECK(s.description == "handles refunds");
  CHECK(s.instructions == "Be careful.");
  CHECK(s.source == "refund.json");
  CHECK(s.model.provider == "scripted");
  CHECK(s.model.model == "demo");
  CHECK(s.model.script == (dir.path() / "scripts" / "replies.jsonl").string());
  CHECK(s.model.temperature == 0.5);
  CHECK(s.model.max_tokens == 512u);
  CHECK(s.model.retry.timeout_ms == 20000u);
  CHECK(s.model.retry.attempts == 5u);
  CHECK(s.model.retry.backoff_ms == 100u);
  CHECK(s.model.retry.multiplier == 1.5);
  CHECK(s.model.retry.max_backoff_ms == 2000u);
  CHECK(s.model.retry.jitter == 0.1);

  REQUIRE(s.tools.size() == 6);
  const cfg::tool_spec& refund = s.tools[0];
  CHECK(refund.kind == cfg::tool_kind::http);
  CHECK(refund.description == "issue a refund");
  CHECK(refund.url == "https://pay.test/refund");
  CHECK(refund.headers.at("X-Team") == "support");
  CHECK(refund.parameters["required"] == json::array({"amount"}));
  CHECK(refund.idempotent);
  CHECK(refund.require_approval);
  CHECK(refund.compensate == "unrefund");
  CHECK(refund.retry.attempts == 2u);
  CHECK(refund.retry.timeout_ms == 5000u);
  CHECK(refund.retry.backoff_ms == 200u);  // default kept

  const cfg::tool_spec& grep = s.tools[2];
  CHECK(grep.kind == cfg::tool_kind::exec);
  REQUIRE(grep.argv.size() == 3);
  CHECK(grep.argv[0].front() == '/');  // resolved on PATH at load
  CHECK(std::filesystem::path(grep.argv[0]).filename() == "sh");
  CHECK(grep.argv[2] == "cat");
  CHECK(grep.limits.cpu_seconds == 2u);
  CHECK(grep.limits.memory_bytes == 1048576u);
  CHECK(grep.limits.max_open_files == 8u);
  CHECK(grep.limits.max_processes == 1u);
  CHECK(grep.limits.max_output_bytes == 4096u);
  CHECK(grep.limits.allow_network);

  CHECK(s.tools[3].kind == cfg::tool_kind::worker);
  CHECK(s.tools[3].queue == "renders");
  CHECK(s.tools[3].lease_ms == 60000u);
  CHECK(s.tools[4].idempotent);  // built-in kinds are idempotent regardless
  CHECK(s.tools[5].kind == cfg::tool_kind::ask_human);

  CHECK(s.guardrails.allow_tools.size() == 6);
  CHECK(s.guardrails.deny_tools == std::vector<std::string>{"render"});
  REQUIRE(s.guardrails.rules.size() == 2);
  const cfg::arg_rule& big = s.guardrails.rules[0];
  CHECK(big.name == "big");
  CHECK(big.tool == "refund");
  CHECK(big.pointer == "/amount");
  CHECK(big.above == 100.0);
  CHECK_FALSE(big.below);
  CHECK_FALSE(big.pattern);
  CHECK(big.action == cfg::arg_rule::action_kind::require_approval);
  CHECK(big.reason == "refunds over 100 need a human");
  const cfg::arg_rule& drop = s.guardrails.rules[1];
  CHECK(drop.tool == "grep");
  CHECK(drop.pattern == "(?i)\\bdrop\\b");
  CHECK(drop.action == cfg::arg_rule::action_kind::deny);

  CHECK(s.budgets.per_turn.model_calls == 8u);
  CHECK(s.budgets.per_turn.tokens == 10000u);
  CHECK(s.budgets.per_turn.tool_calls == 20u);
  CHECK(s.budgets.per_turn.wall_ms == 60000u);
  CHECK(s.budgets.lifetime.tokens == 1000000u);
  CHECK(s.budgets.lifetime.model_calls == 0u);
  CHECK(s.idle_ms == 5000u);
  CHECK(s.max_steps_per_turn == 4u);
}

TEST_CASE("a minimal spec gets the documented defaults") {
  auto r = cfg::parse_agent_spec(
      with_tool({{"name", "lookup"}, {"kind", "http"}, {"url", "http://x.test"}}), "m.json", ".");
  REQUIRE(r.is_ok());
  const cfg::agent_spec& s = **r;
  CHECK(s.model.base_url == "http://127.0.0.1:8000/v1");
  CHECK_FALSE(s.model.temperature);
  CHECK_FALSE(s.model.max_tokens);
  CHECK(s.model.retry.attempts == 3u);
  CHECK(s.model.retry.timeout_ms == 30000u);
  CHECK_FALSE(s.idle_ms);
  CHECK(s.max_steps_per_turn == 16u);
  CHECK(s.guardrails.rules.empty());
  REQUIRE(s.tools.size() == 1);
  CHECK(s.tools[0].parameters == json{{"type", "object"}});
  CHECK_FALSE(s.tools[0].idempotent);
  CHECK_FALSE(s.tools[0].require_approval);
  CHECK(s.tools[0].retry.attempts == 3u);
}

TEST_CASE("find_tool finds declared tools only") {
  auto r = cfg::parse_agent_spec(with_tool(http_tool("lookup")), "m.json", ".");
  REQUIRE(r.is_ok());
  REQUIRE((*r)->find_tool("lookup") != nullptr);
  CHECK((*r)->find_tool("lookup")->url == "https://example.test/lookup");
  CHECK((*r)->find_tool("Lookup") == nullptr);
}

TEST_CASE("every tool kind has a name that parses back") {
  for (auto k : {cfg::tool_kind::http, cfg::tool_kind::exec, cfg::tool_kind::worker,
                 cfg::tool_kind::send_message, cfg::tool_kind::spawn_agent, cfg::tool_kind::sleep,
                 cfg::tool_kind::ask_human}) {
    json tool = {{"name", "t"}, {"kind", cfg::to_string(k)}};
    if (k == cfg::tool_kind::http) tool["url"] = "http://x.test";
    if (k == cfg::tool_kind::exec) tool["argv"] = {"sh"};
    if (k == cfg::tool_kind::worker) tool["queue"] = "q";
    auto r = cfg::parse_agent_spec(with_tool(tool), "k.json", ".");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK((*r)->tools[0].kind == k);
  }
  CHECK(std::string(cfg::to_string(cfg::tool_kind::send_message)) == "send_message");
}

TEST_CASE("a typo in any key is an error naming its pointer") {
  SUBCASE("top level") {
    json j = minimal();
    j["instruction"] = "x";
    std::string e = parse_error(j);
    CHECK(contains(e, "spec.json: /instruction: unknown key"));
    CHECK(contains(e, "instructions"));  // the known keys are listed
  }
  SUBCASE("model") {
    json j = minimal();
    j["model"]["temprature"] = 1;
    CHECK(contains(parse_error(j), "/model/temprature: unknown key"));
  }
  SUBCASE("model retry (timeout_ms belongs to the model itself)") {
    json j = minimal();
    j["model"]["retry"] = {{"timeout_ms", 5}};
    CHECK(contains(parse_error(j), "/model/retry/timeout_ms: unknown key"));
  }
  SUBCASE("tool") {
    json t = http_tool();
    t["idempotant"] = true;
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/idempotant: unknown key"));
  }
  SUBCASE("tool retry") {
    json t = http_tool();
    t["retry"] = {{"attempt", 2}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/attempt: unknown key"));
  }
  SUBCASE("exec limits") {
    json t = {{"name", "t"}, {"kind", "exec"}, {"argv", {"sh"}}, {"limits", {{"cpu", 1}}}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/limits/cpu: unknown key"));
  }
  SUBCASE("guardrails and rules") {
    json j = with_tool(http_tool());
    j["guardrails"] = {{"deny", json::array()}};
    CHECK(contains(parse_error(j), "/guardrails/deny: unknown key"));
    j["guardrails"] = {{"rules", {{{"name", "r"}, {"pointer", "/a"}, {"above", 1}, {"why", ""}}}}};
    CHECK(contains(parse_error(j), "/guardrails/rules/0/why: unknown key"));
  }
  SUBCASE("budgets") {
    json j = minimal();
    j["budgets"] = {{"per_turn", {{"tool_call", 1}}}};
    CHECK(contains(parse_error(j), "/budgets/per_turn/tool_call: unknown key"));
    j["budgets"] = {{"per_call", json::object()}};
    CHECK(contains(parse_error(j), "/budgets/per_call: unknown key"));
  }
}

TEST_CASE("the top level needs a valid, unreserved name and a model") {
  json j = minimal();
  j.erase("name");
  CHECK(contains(parse_error(j), "/name: is required"));
  j = minimal();
  j.erase("model");
  CHECK(contains(parse_error(j), "/model: is required"));
  for (const char* bad : {"", "Support", "-x", "a b", "a/b"}) {
    j = minimal();
    j["name"] = bad;
    CHECK_MESSAGE(contains(parse_error(j), "/name: must match"), bad);
  }
  j = minimal();
  j["name"] = std::string(65, 'a');
  CHECK(contains(parse_error(j), "/name: must match"));
  j["name"] = std::string(64, 'a');
  CHECK(parse_error(j) == "");
  j["name"] = "counter";
  CHECK(contains(parse_error(j), "/name: \"counter\" is reserved"));
  CHECK(contains(parse_error(json::array()), "spec.json: /: must be an object"));
  j = minimal();
  j["name"] = 7;
  CHECK(contains(parse_error(j), "/name: must be a string"));
}

TEST_CASE("a spec declares signals of its own, never a built-in one") {
  json j = minimal();
  auto plain = cfg::parse_agent_spec(j, "spec.json", ".");
  REQUIRE(plain);
  CHECK((*plain)->signals.empty());
  j["signals"] = {"escalate", "remind.later", "ops:wake"};
  auto r = cfg::parse_agent_spec(j, "spec.json", ".");
  REQUIRE_MESSAGE(r, r.error().to_string());
  CHECK((*r)->signals == std::vector<std::string>{"escalate", "remind.later", "ops:wake"});
  // A declaration is part of the version.
  CHECK((*r)->hash != (*plain)->hash);

  j["signals"] = "escalate";
  CHECK(contains(parse_error(j), "/signals: must be an array of signal names"));
  j["signals"] = {"escalate", 3};
  CHECK(contains(parse_error(j), "/signals/1: must be a string"));
  j["signals"] = {"has space"};
  CHECK(contains(parse_error(j), "/signals/0: signal name must be 1 to 64"));
  j["signals"] = {"escalate", "escalate"};
  CHECK(contains(parse_error(j), "/signals/1: \"escalate\" is declared twice"));
  for (const char* built_in : {"approve", "retry", "cancel", "pause", "forked"}) {
    j["signals"] = {built_in};
    CHECK_MESSAGE(contains(parse_error(j),
                           "/signals/0: \"" + std::string(built_in) + "\" is a built-in signal"),
                  built_in);
  }
}

TEST_CASE("the model section is checked per provider") {
  json j = minimal();
  SUBCASE("provider is required and known") {
    j["model"].erase("provider");
    CHECK(contains(parse_error(j), "/model/provider: is required"));
    j["model"]["provider"] = "anthropic";
    CHECK(contains(parse_error(j), "/model/provider: must be \"openai\" or \"scripted\""));
  }
  SUBCASE("openai needs an http(s) base_url") {
    j["model"].erase("base_url");
    CHECK(contains(parse_error(j), "/model/base_url: is required"));
    j["model"]["base_url"] = "ftp://x";
    CHECK(contains(parse_error(j), "/model/base_url: must start with http:// or https://"));
  }
  SUBCASE("temperature is 0..2") {
    j["model"]["temperature"] = 2.5;
    CHECK(contains(parse_error(j), "/model/temperature: must be a number between 0 and 2"));
    j["model"]["temperature"] = "1";
    CHECK(contains(parse_error(j), "/model/temperature:"));
  }
  SUBCASE("max_tokens and timeout_ms are at least 1") {
    j["model"]["max_tokens"] = 0;
    CHECK(contains(parse_error(j), "/model/max_tokens: must be an integer >= 1"));
    j["model"].erase("max_tokens");
    j["model"]["timeout_ms"] = 0;
    CHECK(contains(parse_error(j), "/model/timeout_ms: must be an integer >= 1"));
  }
  SUBCASE("api_key_env is a variable name") {
    j["model"]["api_key_env"] = "OPENAI KEY";
    CHECK(contains(parse_error(j), "/model/api_key_env:"));
    j["model"]["api_key_env"] = "OPENAI_API_KEY";
    auto r = cfg::parse_agent_spec(j, "spec.json", ".");
    REQUIRE(r.is_ok());
    CHECK((*r)->model.api_key_env == "OPENAI_API_KEY");
  }
  SUBCASE("scripted needs a script file that exists, relative to the spec's folder") {
    keel::test::temp_dir dir("spec");
    j["model"] = {{"provider", "scripted"}};
    CHECK(contains(parse_error(j, dir.str()), "/model/script: is required"));
    j["model"]["script"] = "replies.jsonl";
    std::string e = parse_error(j, dir.str());
    CHECK(contains(e, "/model/script: file "));
    CHECK(contains(e, "does not exist"));
    write_file(dir.path() / "replies.jsonl", R"({"replies": [{"content": "hi"}]})");
    auto r = cfg::parse_agent_spec(j, "spec.json", dir.str());
    REQUIRE(r.is_ok());
    CHECK((*r)->model.script == (dir.path() / "replies.jsonl").string());
    j["model"]["script"] = (dir.path() / "replies.jsonl").string();  // absolute stays
    CHECK(parse_error(j, "/nonexistent") == "");
  }
}

TEST_CASE("unsigned numbers refuse negatives, fractions and strings with the bound") {
  json t = http_tool();
  t["retry"] = {{"attempts", 0}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/attempts: must be an integer >= 1"));
  t["retry"] = {{"attempts", -2}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/attempts: must be an integer >= 1"));
  t["retry"] = {{"attempts", 2.5}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/attempts: must be an integer >= 1"));
  t["retry"] = {{"backoff_ms", "100"}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/backoff_ms: must be an integer >= 0"));
  t["retry"] = {{"backoff_ms", -1}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/backoff_ms: must be an integer >= 0"));
  t["retry"] = {{"backoff_ms", 5000000000ull}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/backoff_ms: must be an integer <= "));
  t["retry"] = {{"multiplier", 0.5}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/multiplier: must be a number >= 1"));
  t["retry"] = {{"jitter", 1.5}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/retry/jitter: must be a number between 0"));
  t["retry"] = {{"attempts", 4.0}};  // a whole number written as a float is fine
  auto r = cfg::parse_agent_spec(with_tool(t), "spec.json", ".");
  REQUIRE(r.is_ok());
  CHECK((*r)->tools[0].retry.attempts == 4u);

  json j = minimal();
  j["max_steps_per_turn"] = 0;
  CHECK(contains(parse_error(j), "/max_steps_per_turn: must be an integer >= 1"));
  j.erase("max_steps_per_turn");
  j["idle_ms"] = -5;
  CHECK(contains(parse_error(j), "/idle_ms: must be an integer >= 1"));
  j.erase("idle_ms");
  j["budgets"] = {{"lifetime", {{"tokens", -1}}}};
  CHECK(contains(parse_error(j), "/budgets/lifetime/tokens: must be an integer >= 0"));
  j["budgets"] = {{"lifetime", {{"tokens", true}}}};
  CHECK(contains(parse_error(j), "/budgets/lifetime/tokens: must be an integer >= 0"));
}

TEST_CASE("tools need a valid unique name and a known kind") {
  json t = http_tool();
  t.erase("name");
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/name: is required"));
  for (const char* bad : {"", "has space", "dot.ted", "\xc3\xa9"}) {
    t["name"] = bad;
    CHECK_MESSAGE(contains(parse_error(with_tool(t)), "/tools/0/name: must match"), bad);
  }
  t["name"] = std::string(65, 'x');
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/name: must match"));

  json j = minimal();
  j["tools"] = {http_tool("a"), http_tool("b"), http_tool("a")};
  std::string e = parse_error(j);
  CHECK(contains(e, "/tools/2/name: duplicate tool name \"a\""));
  CHECK(contains(e, "/tools/0"));

  t = http_tool();
  t.erase("kind");
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/kind: is required"));
  t["kind"] = "shell";
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/kind: must be one of"));
  j = minimal();
  j["tools"] = json::object();
  CHECK(contains(parse_error(j), "/tools: must be an array"));
}

TEST_CASE("each kind requires its own fields and refuses another kind's") {
  SUBCASE("http needs an http(s) url") {
    json t = {{"name", "t"}, {"kind", "http"}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/url: is required"));
    t["url"] = "file:///etc/passwd";
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/url: must start with http:// or https://"));
    t["url"] = "http://x.test";
    t["headers"] = {{"X-N", 1}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/headers/X-N: must be a string"));
  }
  SUBCASE("exec paths are real, existing, absolute paths, never / or through a symlink") {
    auto dir =
        std::filesystem::temp_directory_path() / ("keel-grant-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir / "real");
    std::filesystem::create_symlink(dir / "real", dir / "link");
    json t = {{"name", "t"}, {"kind", "exec"}, {"argv", {"sh"}}};
    t["paths"] = {{"read", {(dir / "link").string()}}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/paths/read/0: must be the path itself"));
    t["paths"] = {{"write", {(dir / "real" / ".." / "real").string()}}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/paths/write/0: must be the path itself"));
    t["paths"] = {{"read", {"/"}}};
    CHECK(contains(parse_error(with_tool(t)), "must not be /"));
    t["paths"] = {{"read", {"relative/dir"}}};
    CHECK(contains(parse_error(with_tool(t)), "must be an absolute path"));
    t["paths"] = {{"read", {(dir / "missing").string()}}};
    CHECK(contains(parse_error(with_tool(t)), "does not exist on this node"));
    t["paths"] = {{"read", {(dir / "real").string()}}};
    CHECK(parse_error(with_tool(t)).empty());
    std::filesystem::remove_all(dir);
  }
  SUBCASE("exec needs a non-empty argv whose program exists") {
    json t = {{"name", "t"}, {"kind", "exec"}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/argv: is required"));
    t["argv"] = json::array();
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/argv: must be a non-empty array"));
    t["argv"] = {"sh", 3};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/argv/1: must be a string"));
    t["argv"] = {"keel-no-such-program-xyz"};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/argv/0: program keel-no-such-program-xyz"));
    t["argv"] = {"/nonexistent/keel-tool"};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/argv/0: /nonexistent/keel-tool is not"));
    t["argv"] = {"bin/tool"};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/argv/0: must be an absolute path"));
    t["argv"] = {"/bin/sh"};
    CHECK(parse_error(with_tool(t)) == "");
  }
  SUBCASE("worker needs a queue") {
    json t = {{"name", "t"}, {"kind", "worker"}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/queue: is required"));
    t["queue"] = "q";
    t["lease_ms"] = 0;
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/lease_ms: must be an integer >= 1"));
  }
  SUBCASE("a field of another kind is refused") {
    json t = http_tool();
    t["queue"] = "q";
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/queue: only applies to kind worker"));
    t = {{"name", "t"}, {"kind", "sleep"}, {"url", "http://x.test"}};
    CHECK(contains(parse_error(with_tool(t)), "/tools/0/url: only applies to kind http"));
  }
}

TEST_CASE("tool parameters are a checked schema of an object, re-rooted in errors") {
  json t = http_tool();
  t["parameters"] = json::parse(R"({"type": "object", "properties": {"n": {"minimum": "0"}}})");
  CHECK(contains(parse_error(with_tool(t)),
                 "spec.json: /tools/0/parameters/properties/n/minimum: must be a number"));
  t["parameters"] = json::parse(R"({"type": "object", "oneOf": []})");
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/parameters/oneOf: unsupported"));
  t["parameters"] = json::parse(R"({"properties": {"id": {"pattern": "(("}}})");
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/parameters/properties/id/pattern:"));
  t["parameters"] = "object";
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/parameters: must be a schema object"));
  t["parameters"] = json{{"type", "string"}};
  CHECK(contains(parse_error(with_tool(t)), "/tools/0/parameters/type: must be \"object\""));
}

TEST_CASE("compensate must name another tool of the spec") {
  json j = minimal();
  json a = http_tool("a");
  a["compensate"] = "b";
  j["tools"] = {a};
  CHECK(contains(parse_error(j), "/tools/0/compensate: \"b\" is not a tool of this spec"));
  a["compensate"] = "a";
  j["tools"] = {a};
  CHECK(contains(parse_error(j), "/tools/0/compensate: a tool cannot compensate itself"));
  j["tools"] = {http_tool("b"), a};
  j["tools"][1]["compensate"] = "b";
  CHECK(parse_error(j) == "");
}

TEST_CASE("guardrails refer only to declared tools") {
  json j = with_tool(http_tool("lookup"));
  j["guardrails"] = {{"allow_tools", {"lookup", "refund"}}};
  CHECK(contains(parse_error(j), "/guardrails/allow_tools/1: \"refund\" is not a declared tool"));
  j["guardrails"] = {{"deny_tools", {"nope"}}};
  CHECK(contains(parse_error(j), "/guardrails/deny_tools/0: \"nope\" is not a declared tool"));
  j["guardrails"] = {{"deny_tools", "lookup"}};
  CHECK(contains(parse_error(j), "/guardrails/deny_tools: must be an array"));
  j["guardrails"] = {
      {"rules", {{{"name", "r"}, {"tool", "nope"}, {"pointer", "/a"}, {"above", 1}}}}};
  CHECK(contains(parse_error(j), "/guardrails/rules/0/tool: \"nope\" is neither"));
}

TEST_CASE("argument rules are validated when the spec loads") {
  json tool = http_tool("lookup");
  tool["parameters"] = json::parse(R"({"type": "object", "additionalProperties": false,
      "properties": {"a": {"type": "number"}, "b": {"type": "number"},
                     "c": {"type": "array", "items": {"type": "number"}}}})");
  json j = with_tool(tool);
  auto rule_error = [&](json rule) {
    j["guardrails"] = {{"rules", {std::move(rule)}}};
    return parse_error(j);
  };
  CHECK(contains(rule_error({{"pointer", "/a"}, {"above", 1}}),
                 "/guardrails/rules/0/name: is required"));
  CHECK(contains(rule_error({{"name", "r"}, {"above", 1}}),
                 "/guardrails/rules/0/pointer: is required"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "a"}, {"above", 1}}),
                 "/guardrails/rules/0/pointer: must be a JSON pointer"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a~2"}, {"above", 1}}),
                 "/guardrails/rules/0/pointer: is not a valid JSON pointer"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a"}}),
                 "/guardrails/rules/0: needs at least one of pattern, above, below"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a"}, {"pattern", "(?i)(drop"}}),
                 "/guardrails/rules/0/pattern: is not a valid ECMAScript regex"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a"}, {"pattern", "(a)\\1"}}),
                 "/guardrails/rules/0/pattern: is not a valid ECMAScript regex"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a"}, {"above", "100"}}),
                 "/guardrails/rules/0/above: must be a number"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a"}, {"above", 10}, {"below", 5}}),
                 "/guardrails/rules/0/below: must be greater than above"));
  CHECK(contains(rule_error({{"name", "r"}, {"pointer", "/a"}, {"above", 1}, {"action", "warn"}}),
                 "/guardrails/rules/0/action: must be \"deny\" or \"require_approval\""));
  CHECK(rule_error({{"name", "r"}, {"pointer", "/c/0"}, {"above", 1}, {"below", 5}}) == "");

  j["guardrails"] = {{"rules",
                      {{{"name", "r"}, {"pointer", "/a"}, {"above", 1}},
                       {{"name", "r"}, {"pointer", "/b"}, {"above", 1}}}}};
  std::string e = parse_error(j);
  CHECK(contains(e, "/guardrails/rules/1/name: duplicate rule name \"r\""));
  CHECK(contains(e, "/guardrails/rules/0"));
}

TEST_CASE("the hash fingerprints the content, not the formatting") {
  json a = json::parse(R"({"name": "x", "model": {"provider": "openai", "base_url": "http://h"}})");
  json b = json::parse(R"({"model": {"base_url": "http://h",   "provider": "openai"},
                           "name": "x"})");
  auto ra = cfg::parse_agent_spec(a, "a.json", ".");
  auto rb = cfg::parse_agent_spec(b, "b.json", ".");
  REQUIRE(ra.is_ok());
  REQUIRE(rb.is_ok());
  CHECK((*ra)->hash == (*rb)->hash);
  CHECK((*ra)->hash.size() == 64);
  CHECK((*ra)->hash.find_first_not_of("0123456789abcdef") == std::string::npos);
  a["description"] = "changed";
  auto rc = cfg::parse_agent_spec(a, "a.json", ".");
  REQUIRE(rc.is_ok());
  CHECK((*rc)->hash != (*ra)->hash);
}

TEST_CASE("load_agent_spec reads a file and resolves the script beside it") {
  keel::test::temp_dir dir("spec");
  write_file(dir.path() / "replies.jsonl", R"({"replies": [{"content": "hi"}]})");
  write_file(dir.path() / "bot.json",
             R"({"name": "bot", "model": {"provider": "scripted", "script": "replies.jsonl"}})");
  auto r = cfg::load_agent_spec((dir.path() / "bot.json").string());
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK((*r)->name == "bot");
  CHECK((*r)->source == (dir.path() / "bot.json").string());
  CHECK((*r)->model.script == (dir.path() / "replies.jsonl").string());
}

TEST_CASE("load_agent_spec reports unreadable files, bad JSON and repeated keys") {
  keel::test::temp_dir dir("spec");
  SUBCASE("a missing file is an io_error naming it") {
    std::string path = (dir.path() / "missing.json").string();
    auto r = cfg::load_agent_spec(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::io_error);
    CHECK(contains(r.error().message(), path));
  }
  SUBCASE("a folder is an io_error") {
    auto r = cfg::load_agent_spec(dir.str());
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::io_error);
  }
  SUBCASE("invalid JSON names the file and the position") {
    write_file(dir.path() / "bad.json", "{\"name\": \"x\",\n  \"model\": }");
    auto r = cfg::load_agent_spec((dir.path() / "bad.json").string());
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), "bad.json: not valid JSON"));
    CHECK(contains(r.error().message(), "line 2"));
  }
  SUBCASE("a key written twice is an error at its pointer") {
    write_file(dir.path() / "dup.json", R"({"name": "x", "model": {"provider": "openai",
        "base_url": "http://h"}, "tools": [{"name": "a", "kind": "http", "url": "http://h"},
        {"name": "b", "kind": "http", "url": "http://h", "retry": {"attempts": 1, "attempts": 9}}]})");
    auto r = cfg::load_agent_spec((dir.path() / "dup.json").string());
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), "dup.json: /tools/1/retry/attempts: key appears twice"));
  }
  SUBCASE("a validation error names the file") {
    write_file(dir.path() / "v.json", R"({"name": "x", "model": {"provider": "openai"}})");
    auto r = cfg::load_agent_spec((dir.path() / "v.json").string());
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "v.json: /model/base_url: is required"));
  }
}

TEST_CASE("load_agent_specs loads every json file of a folder in file-name order") {
  keel::test::temp_dir dir("specs");
  auto spec_text = [](const std::string& name) {
    return R"({"name": ")" + name +
           R"(", "model": {"provider": "openai", "base_url": "http://h"}})";
  };
  write_file(dir.path() / "b.json", spec_text("beta"));
  write_file(dir.path() / "a.json", spec_text("zeta"));
  write_file(dir.path() / "c.json", spec_text("alpha"));
  write_file(dir.path() / "notes.txt", "not a spec");
  write_file(dir.path() / "c.json~", "{");
  std::filesystem::create_directories(dir.path() / "sub");
  write_file(dir.path() / "sub" / "d.json", "{");  // not recursive

  auto r = cfg::load_agent_specs(dir.str());
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  REQUIRE(r->specs.size() == 3);
  CHECK(r->specs[0]->name == "zeta");
  CHECK(r->specs[1]->name == "beta");
  CHECK(r->specs[2]->name == "alpha");
  CHECK(r->skipped.empty());

  SUBCASE("a script or other JSON beside the specs is skipped, saying why") {
    write_file(dir.path() / "bot.script.json", R"({"replies": [{"content": "hi"}]})");
    write_file(dir.path() / "suite.json", R"([1, 2])");
    auto mixed = cfg::load_agent_specs(dir.str());
    REQUIRE_MESSAGE(mixed.is_ok(), mixed.error().to_string());
    CHECK(mixed->specs.size() == 3);
    REQUIRE(mixed->skipped.size() == 2);
    CHECK(mixed->skipped[0].first == (dir.path() / "bot.script.json").string());
    CHECK(contains(mixed->skipped[0].second, "a scripted model's script"));
    CHECK(contains(mixed->skipped[1].second, "not an agent-type spec"));
  }
  SUBCASE("a file with a name is a spec: its errors fail the load") {
    write_file(dir.path() / "d.json", R"({"name": "delta", "replies": []})");
    auto bad = cfg::load_agent_specs(dir.str());
    REQUIRE_FALSE(bad.is_ok());
    CHECK(contains(bad.error().message(), "d.json"));
  }

  SUBCASE("a broken file fails the whole load, naming it") {
    write_file(dir.path() / "d.json", "{\"name\": 1}");
    auto bad = cfg::load_agent_specs(dir.str());
    REQUIRE_FALSE(bad.is_ok());
    CHECK(contains(bad.error().message(), "d.json: /name: must be a string"));
  }
  SUBCASE("two files declaring one type name are an error naming both") {
    write_file(dir.path() / "d.json", spec_text("beta"));
    auto dup = cfg::load_agent_specs(dir.str());
    REQUIRE_FALSE(dup.is_ok());
    CHECK(dup.error().error_code() == code::invalid_argument);
    CHECK(contains(dup.error().message(), "\"beta\""));
    CHECK(contains(dup.error().message(), (dir.path() / "b.json").string()));
    CHECK(contains(dup.error().message(), (dir.path() / "d.json").string()));
  }
}

TEST_CASE("load_agent_specs reports a missing folder as an io_error naming it") {
  keel::test::temp_dir dir("specs");
  std::string missing = (dir.path() / "agents").string();
  auto r = cfg::load_agent_specs(missing);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::io_error);
  CHECK(contains(r.error().message(), missing));

  auto empty = cfg::load_agent_specs(dir.str());
  REQUIRE(empty.is_ok());
  CHECK(empty->specs.empty());
}

TEST_CASE("a tool declares the answers that prove a call did nothing, each checked at load") {
  json h = http_tool();
  h["not_applied"] = {{"http_statuses", {400, 409, 503}}};
  auto spec = cfg::parse_agent_spec(with_tool(h), "spec.json", ".");
  REQUIRE_MESSAGE(spec, spec.error().to_string());
  CHECK((*spec)->tools[0].not_applied.http_statuses == std::vector<unsigned>{400, 409, 503});

  json bad_status = http_tool();
  bad_status["not_applied"] = {{"http_statuses", {200}}};
  CHECK(contains(parse_error(with_tool(bad_status)), "/tools/0/not_applied/http_statuses/0"));
  json wrong_kind = http_tool();
  wrong_kind["not_applied"] = {{"exit_codes", {3}}};
  CHECK(contains(parse_error(with_tool(wrong_kind)), "only applies to kind exec"));
  json worker = {
      {"name", "w"}, {"kind", "worker"}, {"queue", "q"}, {"not_applied", json::object()}};
  CHECK(contains(parse_error(with_tool(worker)), "only applies to kinds http and exec"));
}

TEST_CASE("a scripted model's replies are checked at load and are part of the type's version") {
  keel::test::temp_dir dir("spec");
  write_file(dir.path() / "r.json", R"({"replies": [{"content": "one"}]})");
  json j = json::parse(R"({"name": "bot", "model": {"provider": "scripted", "script": "r.json"}})");
  auto a = cfg::parse_agent_spec(j, "bot.json", dir.str());
  REQUIRE_MESSAGE(a, a.error().to_string());
  CHECK((*a)->model.script_content["replies"][0]["content"] == "one");
  // Self-contained: the canonical form holds the replies and parses back
  // to the same version, with no file.
  CHECK((*a)->canonical["model"]["script"] == (*a)->model.script_content);
  auto again = cfg::parse_agent_spec((*a)->canonical, "stored", "/nonexistent");
  REQUIRE_MESSAGE(again, again.error().to_string());
  CHECK((*again)->hash == (*a)->hash);
  // Another script is another version.
  write_file(dir.path() / "r.json", R"({"replies": [{"content": "two"}]})");
  auto b = cfg::parse_agent_spec(j, "bot.json", dir.str());
  REQUIRE(b);
  CHECK((*b)->hash != (*a)->hash);
  // A typo in the script fails the load, naming the file and the place.
  write_file(dir.path() / "r.json", R"({"replies": [{"contnet": "x"}]})");
  std::string e = parse_error(j, dir.str());
  CHECK(contains(e, "/model/script"));
  CHECK(contains(e, "r.json: /replies/0/contnet: unknown key"));
}

TEST_CASE("retention, the dedupe window and follow_latest parse, and bad values are refused") {
  json j = minimal();
  auto parsed = [&j] {
    auto r = cfg::parse_agent_spec(j, "spec.json", ".");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    return *r;
  };
  auto s = parsed();
  CHECK_FALSE(s->follow_latest);
  CHECK_FALSE(s->dedupe_window_ms);
  CHECK(s->retention.keep_events == 0);
  CHECK(s->retention.keep_ms == 0);
  j["follow_latest"] = true;
  j["dedupe_window_ms"] = 0;
  j["retention"] = {{"keep_events", 500}, {"keep_ms", 86'400'000}};
  s = parsed();
  CHECK(s->follow_latest);
  CHECK(s->dedupe_window_ms == 0u);
  CHECK(s->retention.keep_events == 500u);
  CHECK(s->retention.keep_ms == 86'400'000u);
  j["retention"] = json::object();
  CHECK(contains(parse_error(j), "/retention: needs keep_events or keep_ms"));
  j["retention"] = {{"keep", 3}};
  CHECK(contains(parse_error(j), "/retention/keep: unknown key"));
  j["retention"] = {{"keep_events", -1}};
  CHECK(contains(parse_error(j), "/retention/keep_events"));
  j.erase("retention");
  j["follow_latest"] = "yes";
  CHECK(contains(parse_error(j), "/follow_latest"));
}
