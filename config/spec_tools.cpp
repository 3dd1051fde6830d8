// How an agent-type spec's "model" and "tools" are read (agent_spec.cpp
// reads the rest): names, kinds, exec argv, paths, env and limits, http
// urls, retries, and the checks between tools (compensations).

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "base/names.hpp"
#include "config/json_schema.hpp"
#include "config/model_script.hpp"
#include "config/secret_refs.hpp"
#include "config/spec_reader.hpp"

namespace keel::config {

namespace {

constexpr std::pair<tool_kind, const char*> tool_kind_names[] = {
    {tool_kind::http, "http"},
    {tool_kind::exec, "exec"},
    {tool_kind::worker, "worker"},
    {tool_kind::send_message, "send_message"},
    {tool_kind::spawn_agent, "spawn_agent"},
    {tool_kind::sleep, "sleep"},
    {tool_kind::ask_human, "ask_human"},
};

}  // namespace

const char* to_string(tool_kind k) {
  for (const auto& [kind, name] : tool_kind_names)
    if (kind == k) return name;
  return "unknown";
}

namespace spec_detail {

namespace fs = std::filesystem;

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

// [a-z0-9][a-z0-9_.-]{0,63}
bool is_agent_type_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || !is_lower_alnum(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_lower_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

// [A-Za-z0-9_-]{1,64}, what OpenAI accepts as a function name.
bool is_tool_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '-'; });
}

// [A-Za-z_][A-Za-z0-9_]*
bool is_env_name(const std::string& s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '_'; });
}

bool is_http_url(const std::string& s) {
  auto rest = [&](std::size_t n) { return s.size() > n; };
  return (s.rfind("http://", 0) == 0 && rest(7)) || (s.rfind("https://", 0) == 0 && rest(8));
}

bool is_executable_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
}

// The absolute path of `program` on this node's PATH, or empty. Empty PATH
// entries (the current directory, in old shells) are skipped on purpose:
// where keeld was started must not decide which binary runs.
std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (!path) return {};
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty() || dir.front() != '/') continue;
    fs::path candidate = fs::path(dir) / program;
    if (is_executable_file(candidate)) return candidate.string();
  }
  return {};
}

// Compiled as agent/guardrails.cpp runs it (config/patterns.hpp), so that
// what loads also runs.
status compile_rule_pattern(const fields& f, const std::string& pattern) {
  if (auto re = compile_pattern(pattern); !re) return f.fail_key("pattern", re.error().message());
  return status::ok();
}

status parse_retry(const fields& f, retry_policy& r, bool with_timeout) {
  KEEL_TRY(f.expect_object());
  if (with_timeout)
    KEEL_TRY(
        f.only({"attempts", "backoff_ms", "multiplier", "max_backoff_ms", "jitter", "timeout_ms"}));
  else
    KEEL_TRY(f.only({"attempts", "backoff_ms", "multiplier", "max_backoff_ms", "jitter"}));
  KEEL_TRY(f.uint("attempts", r.attempts, 1));
  KEEL_TRY(f.uint("backoff_ms", r.backoff_ms));
  KEEL_TRY(f.number("multiplier", r.multiplier, 1, std::numeric_limits<double>::infinity()));
  KEEL_TRY(f.uint("max_backoff_ms", r.max_backoff_ms));
  KEEL_TRY(f.number("jitter", r.jitter, 0, 1));
  if (with_timeout) KEEL_TRY(f.uint("timeout_ms", r.timeout_ms, 1));
  return status::ok();
}

// An object of strings (headers, env) whose values may refer to secrets:
// each reference must be well-formed, the value itself is kept as written.
status parse_string_map(const fields& f, const char* key, std::map<std::string, std::string>& out) {
  const json* m = f.find(key);
  if (!m) return status::ok();
  if (!m->is_object()) return f.fail_key(key, "must be an object of strings");
  for (auto it = m->begin(); it != m->end(); ++it) {
    const std::string where = pointer_child(f.at(key), it.key());
    if (!it.value().is_string()) return f.fail(where, "must be a string");
    auto refs = secret_references(it.value().get_ref<const std::string&>());
    if (!refs) return f.fail(where, refs.error().message());
    out[it.key()] = it.value().get<std::string>();
  }
  return status::ok();
}

// The openai model's key: a reference to a secret, so that no key is ever
// stored, hashed or shown with the spec.
status parse_api_key(const fields& f, model_spec& m) {
  if (!f.find("api_key")) return status::ok();
  KEEL_TRY(f.string("api_key", m.api_key));
  auto refs = secret_references(m.api_key);
  if (!refs) return f.fail_key("api_key", refs.error().message());
  if (refs->empty())
    return f.fail_key("api_key",
                      "must refer to a secret (\"${secret:NAME}\"); a key written into the spec "
                      "would be stored and shown with it");
  if (f.find("api_key_env")) return f.fail_key("api_key", "give api_key or api_key_env, not both");
  return status::ok();
}

status parse_model(const fields& f, const std::string& base_dir, model_spec& m) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"provider", "model", "base_url", "api_key_env", "api_key", "headers",
                   "temperature", "max_tokens", "timeout_ms", "retry", "script"}));
  KEEL_TRY(f.required("provider"));
  KEEL_TRY(f.string("provider", m.provider));
  if (m.provider != "openai" && m.provider != "scripted")
    return f.fail_key("provider", "must be \"openai\" or \"scripted\"");
  KEEL_TRY(f.string("model", m.model));
  KEEL_TRY(f.string("base_url", m.base_url));
  KEEL_TRY(f.string("api_key_env", m.api_key_env));
  if (f.find("api_key_env") && !is_env_name(m.api_key_env))
    return f.fail_key("api_key_env",
                      "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
  KEEL_TRY(parse_api_key(f, m));
  KEEL_TRY(parse_string_map(f, "headers", m.headers));
  if (f.find("temperature")) {
    double t = 0;
    KEEL_TRY(f.number("temperature", t, 0, 2));
    m.temperature = t;
  }
  KEEL_TRY(f.optional_uint("max_tokens", m.max_tokens, 1));
  KEEL_TRY(f.uint("timeout_ms", m.retry.timeout_ms, 1));
  if (f.find("retry")) KEEL_TRY(parse_retry(f.sub("retry"), m.retry, false));
  if (const json* s = f.find("script"); s && s->is_object()) {
    // Inline (as a stored version holds it).
    m.script = "(inline)";
    auto checked = check_model_script(*s, f.source() + ": " + f.at("script"));
    if (!checked) return checked.error();
    m.script_content = std::move(*checked);
  } else {
    KEEL_TRY(f.string("script", m.script));
  }

  if (m.provider == "openai") {
    if (f.find("script")) return f.fail_key("script", "only applies to provider \"scripted\"");
    KEEL_TRY(f.required("base_url"));
    if (!is_http_url(m.base_url))
      return f.fail_key("base_url", "must start with http:// or https://");
  } else if (m.script_content.is_null()) {
    KEEL_TRY(f.required("script"));
    if (m.script.empty()) return f.fail_key("script", "must not be empty");
    fs::path p(m.script);
    if (p.is_relative()) p = fs::path(base_dir.empty() ? "." : base_dir) / p;
    p = p.lexically_normal();
    std::error_code ec;
    if (!fs::is_regular_file(p, ec))
      return f.fail_key("script", "file " + p.string() + " does not exist");
    m.script = p.string();
    // Checked now: a bad script fails the load, not a running agent.
    auto checked = load_model_script(m.script);
    if (!checked) return f.fail_key("script", checked.error().message());
    m.script_content = std::move(*checked);
  }
  return status::ok();
}

status parse_kind(const fields& f, tool_kind& kind) {
  KEEL_TRY(f.required("kind"));
  std::string k;
  KEEL_TRY(f.string("kind", k));
  std::string known;
  for (const auto& [candidate, name] : tool_kind_names) {
    if (k == name) {
      kind = candidate;
      return status::ok();
    }
    known += (known.empty() ? "" : ", ") + std::string(name);
  }
  return f.fail_key("kind", "must be one of " + known);
}

status parse_limits(const fields& f, exec_limits& l) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"cpu_seconds", "memory_bytes", "max_open_files", "max_processes",
                   "max_output_bytes", "allow_network"}));
  KEEL_TRY(f.uint("cpu_seconds", l.cpu_seconds));
  KEEL_TRY(f.uint("memory_bytes", l.memory_bytes));
  KEEL_TRY(f.uint("max_open_files", l.max_open_files));
  KEEL_TRY(f.uint("max_processes", l.max_processes));
  KEEL_TRY(f.uint("max_output_bytes", l.max_output_bytes));
  KEEL_TRY(f.boolean("allow_network", l.allow_network));
  return status::ok();
}

// An array of integers from `lo` to `hi` at `key` (when present), into
// `out`; `what` names one in errors, `why` says why the range.
template <class T>
status int_list(const fields& f, const char* key, int64_t lo, int64_t hi, const std::string& what,
                const std::string& why, std::vector<T>& out) {
  const json* list = f.find(key);
  if (!list) return status::ok();
  if (!list->is_array()) return f.fail_key(key, "must be an array of " + what + "s");
  for (std::size_t i = 0; i < list->size(); ++i) {
    const json& v = (*list)[i];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      return f.fail(pointer_child(f.at(key), i), "must be a " + what + " from " +
                                                     std::to_string(lo) + " to " +
                                                     std::to_string(hi) + " (" + why + ")");
    out.push_back(v.get<T>());
  }
  return status::ok();
}

// "not_applied": {"http_statuses": [400, 409], "exit_codes": [64]}.
status parse_not_applied(const fields& f, tool_kind kind, tool_spec::not_applied_spec& n) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"http_statuses", "exit_codes"}));
  if (f.find("http_statuses") && kind != tool_kind::http)
    return f.fail_key("http_statuses", "only applies to kind http");
  if (f.find("exit_codes") && kind != tool_kind::exec)
    return f.fail_key("exit_codes", "only applies to kind exec");
  KEEL_TRY(
      int_list(f, "http_statuses", 400, 599, "status code", "a 2xx is a success", n.http_statuses));
  return int_list(f, "exit_codes", 1, 255, "exit code", "0 is a success", n.exit_codes);
}

// check_schema reports "<pointer in the schema>: <what>" with the root as
// "/"; re-root it under the tool's "parameters".
status parse_parameters(const fields& f, json& parameters) {
  const json& p = *f.find("parameters");
  if (auto s = check_schema(p); !s) {
    const std::string& m = s.message();
    auto sep = m.find(": ");
    std::string ptr = m.substr(0, sep);
    std::string what = sep == std::string::npos ? m : m.substr(sep + 2);
    return f.fail(f.at("parameters") + (ptr == "/" ? "" : ptr), what);
  }
  if (auto t = p.find("type"); t != p.end() && *t != "object")
    return f.fail(pointer_child(f.at("parameters"), "type"),
                  "must be \"object\": tool arguments are a JSON object");
  parameters = p;
  return status::ok();
}

status parse_argv(const fields& f, std::vector<std::string>& argv) {
  const json& a = *f.find("argv");
  if (!a.is_array() || a.empty()) return f.fail_key("argv", "must be a non-empty array of strings");
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_string()) return f.fail(pointer_child(f.at("argv"), i), "must be a string");
    argv.push_back(a[i].get<std::string>());
  }
  const std::string program = argv[0];
  const std::string where = pointer_child(f.at("argv"), 0);
  if (program.empty()) return f.fail(where, "must not be empty");
  if (program.front() == '/') {
    if (!is_executable_file(program)) return f.fail(where, program + " is not an executable file");
  } else if (program.find('/') != std::string::npos) {
    return f.fail(where, "must be an absolute path or a program name found on PATH");
  } else {
    // Pinned at load: the sandbox runs the child with a clean environment.
    std::string found = find_on_path(program);
    if (found.empty()) return f.fail(where, "program " + program + " is not on PATH");
    argv[0] = found;
  }
  return status::ok();
}

// {"read": [...], "write": [...]}: absolute paths that exist here.
status parse_paths(const fields& f, tool_spec::exec_paths& paths) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"read", "write"}));
  for (auto [key, out] : {std::pair{"read", &paths.read}, std::pair{"write", &paths.write}}) {
    const json* list = f.find(key);
    if (!list) continue;
    if (!list->is_array()) return f.fail_key(key, "must be an array of absolute paths");
    for (std::size_t i = 0; i < list->size(); ++i) {
      const json& p = (*list)[i];
      const std::string where = pointer_child(f.at(key), i);
      if (!p.is_string() || p.get<std::string>().empty() || p.get<std::string>().front() != '/')
        return f.fail(where, "must be an absolute path");
      std::error_code ec;
      const std::string path = p.get<std::string>();
      if (!std::filesystem::exists(path, ec))
        return f.fail(where, path + " does not exist on this node");
      // As written is as shown: no symlink, "." or ".." may redirect a grant
      // (a hidden path is compared by its real path).
      const std::string real = std::filesystem::canonical(path, ec).string();
      if (ec || real != path)
        return f.fail(where, "must be the path itself, without symlinks, \".\" or \"..\" (" +
                                 (ec ? ec.message() : "it is " + real) + ")");
      if (path == "/") return f.fail(where, "must not be / (the whole host)");
      out->push_back(path);
    }
  }
  return status::ok();
}

// exec "env": added to the sandbox's fixed environment. PATH stays the
// sandbox's: argv[0] was resolved against the node's PATH at load, and a
// tool's PATH could point programs it starts anywhere.
status parse_env(const fields& f, std::map<std::string, std::string>& env) {
  KEEL_TRY(parse_string_map(f, "env", env));
  for (const auto& [name, value] : env) {
    const std::string where = pointer_child(f.at("env"), name);
    if (!is_env_name(name))
      return f.fail(where, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    if (name == "PATH")
      return f.fail(where, "PATH is the sandbox's (/usr/bin:/bin) and cannot be set");
    if (value.find('\0') != std::string::npos) return f.fail(where, "must not hold a NUL byte");
  }
  return status::ok();
}

status parse_tool(const fields& f, tool_spec& t) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"name", "description", "parameters", "kind", "url", "headers", "argv", "env",
                   "limits", "paths", "queue", "lease_ms", "idempotent", "not_applied",
                   "require_approval", "retry", "compensate"}));
  KEEL_TRY(f.required("name"));
  KEEL_TRY(f.string("name", t.name));
  if (!is_tool_name(t.name)) return f.fail_key("name", "must match [A-Za-z0-9_-]{1,64}");
  KEEL_TRY(f.string("description", t.description));
  KEEL_TRY(parse_kind(f, t.kind));

  // A key of another kind is most likely a wrong "kind": refuse it.
  auto only_for = [&](const char* key, tool_kind kind) -> status {
    if (f.find(key) && t.kind != kind)
      return f.fail_key(key, std::string("only applies to kind ") + to_string(kind) +
                                 " (this tool is " + to_string(t.kind) + ")");
    return status::ok();
  };
  KEEL_TRY(only_for("url", tool_kind::http));
  KEEL_TRY(only_for("headers", tool_kind::http));
  KEEL_TRY(only_for("argv", tool_kind::exec));
  KEEL_TRY(only_for("env", tool_kind::exec));
  KEEL_TRY(only_for("limits", tool_kind::exec));
  KEEL_TRY(only_for("paths", tool_kind::exec));
  KEEL_TRY(only_for("queue", tool_kind::worker));
  KEEL_TRY(only_for("lease_ms", tool_kind::worker));

  t.parameters = json{{"type", "object"}};
  if (f.find("parameters")) KEEL_TRY(parse_parameters(f, t.parameters));

  if (t.kind == tool_kind::http) {
    KEEL_TRY(f.required("url"));
    KEEL_TRY(f.string("url", t.url));
    if (!is_http_url(t.url)) return f.fail_key("url", "must start with http:// or https://");
    KEEL_TRY(parse_string_map(f, "headers", t.headers));
  } else if (t.kind == tool_kind::exec) {
    KEEL_TRY(f.required("argv"));
    KEEL_TRY(parse_argv(f, t.argv));
    KEEL_TRY(parse_env(f, t.env));
    if (f.find("limits")) KEEL_TRY(parse_limits(f.sub("limits"), t.limits));
    if (f.find("paths")) KEEL_TRY(parse_paths(f.sub("paths"), t.paths));
  } else if (t.kind == tool_kind::worker) {
    KEEL_TRY(f.required("queue"));
    KEEL_TRY(f.string("queue", t.queue));
    if (t.queue.empty()) return f.fail_key("queue", "must not be empty");
    KEEL_TRY(f.uint("lease_ms", t.lease_ms, 1));
  }

  KEEL_TRY(f.boolean("idempotent", t.idempotent));
  // The runtime performs the built-in kinds itself, keyed by the effect id.
  if (t.kind != tool_kind::http && t.kind != tool_kind::exec && t.kind != tool_kind::worker)
    t.idempotent = true;
  if (f.find("not_applied")) {
    if (t.kind != tool_kind::http && t.kind != tool_kind::exec)
      return f.fail_key("not_applied", "only applies to kinds http and exec");
    KEEL_TRY(parse_not_applied(f.sub("not_applied"), t.kind, t.not_applied));
  }
  KEEL_TRY(f.boolean("require_approval", t.require_approval));
  if (f.find("retry")) KEEL_TRY(parse_retry(f.sub("retry"), t.retry, true));
  KEEL_TRY(f.string("compensate", t.compensate));
  return status::ok();
}

status parse_tools(const fields& top, std::vector<tool_spec>& tools) {
  const json* arr = top.find("tools");
  if (!arr) return status::ok();
  if (!arr->is_array()) return top.fail_key("tools", "must be an array of tools");
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    fields f = top.sub((*arr)[i], pointer_child(top.at("tools"), i));
    tool_spec t;
    KEEL_TRY(parse_tool(f, t));
    auto [it, fresh] = index.emplace(t.name, i);
    if (!fresh)
      return f.fail_key("name", "duplicate tool name \"" + t.name + "\" (also /tools/" +
                                    std::to_string(it->second) + ")");
    tools.push_back(std::move(t));
  }
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const std::string& c = tools[i].compensate;
    if (c.empty()) continue;
    std::string where = pointer_child(pointer_child(top.at("tools"), i), "compensate");
    if (c == tools[i].name) return top.fail(where, "a tool cannot compensate itself");
    if (!index.count(c)) return top.fail(where, "\"" + c + "\" is not a tool of this spec");
    const tool_kind k = tools[index.at(c)].kind;
    if (k == tool_kind::sleep || k == tool_kind::ask_human)
      return top.fail(where, "\"" + c + "\" is a " + to_string(k) +
                                 " tool, which cannot undo anything; compensate with an http, "
                                 "exec, worker, send_message or spawn_agent tool");
  }
  return status::ok();
}

}  // namespace spec_detail

}  // namespace keel::config
