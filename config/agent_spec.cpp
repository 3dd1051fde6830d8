#include "config/agent_spec.hpp"
#include "config/model_script.hpp"
#include "config/patterns.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "base/names.hpp"
#include "base/sha256.hpp"
#include "config/json_schema.hpp"
#include "config/secret_refs.hpp"

namespace keel::config {

namespace fs = std::filesystem;

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

const tool_spec* agent_spec::find_tool(const std::string& tool_name) const {
  for (const auto& t : tools)
    if (t.name == tool_name) return &t;
  return nullptr;
}

namespace {

std::string format_number(double d) {
  std::ostringstream os;
  os << d;
  return os.str();
}

// One JSON object of the spec being read: typed accessors that name the
// value's pointer in every error, and a check that no key is unknown.
class fields {
 public:
  fields(const std::string& source, const json& obj, std::string ptr)
      : source_(source), obj_(obj), ptr_(std::move(ptr)) {}

  status fail(const std::string& ptr, const std::string& what) const {
    return error(code::invalid_argument, source_ + ": " + (ptr.empty() ? "/" : ptr) + ": " + what);
  }
  status fail_key(const char* key, const std::string& what) const { return fail(at(key), what); }

  std::string at(const char* key) const { return pointer_child(ptr_, key); }
  const std::string& pointer() const { return ptr_; }
  const json* find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }

  status expect_object() const {
    return obj_.is_object() ? status::ok() : fail(ptr_, "must be an object");
  }

  status only(std::initializer_list<const char*> known) const {
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      if (std::any_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; }))
        continue;
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      return fail(pointer_child(ptr_, it.key()), "unknown key; expected one of " + list);
    }
    return status::ok();
  }

  status required(const char* key) const {
    return find(key) ? status::ok() : fail_key(key, "is required");
  }

  status string(const char* key, std::string& out) const {
    const json* v = find(key);
    if (!v) return status::ok();
    if (!v->is_string()) return fail_key(key, "must be a string");
    out = v->get<std::string>();
    return status::ok();
  }

  status boolean(const char* key, bool& out) const {
    const json* v = find(key);
    if (!v) return status::ok();
    if (!v->is_boolean()) return fail_key(key, "must be true or false");
    out = v->get<bool>();
    return status::ok();
  }

  template <class T>
  status uint(const char* key, T& out, uint64_t min = 0) const {
    const json* v = find(key);
    if (!v) return status::ok();
    const auto max = static_cast<uint64_t>(std::numeric_limits<T>::max());
    // 3.0 is an integer too; the float bound keeps the conversion defined.
    bool integral = v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0) ||
                    (v->is_number_float() && v->get<double>() >= 0 &&
                     std::floor(v->get<double>()) == v->get<double>() &&
                     v->get<double>() < 18446744073709551616.0);
    if (!integral || v->get<uint64_t>() < min)
      return fail_key(key, "must be an integer >= " + std::to_string(min));
    if (v->get<uint64_t>() > max)
      return fail_key(key, "must be an integer <= " + std::to_string(max));
    out = static_cast<T>(v->get<uint64_t>());
    return status::ok();
  }

  template <class T>
  status optional_uint(const char* key, std::optional<T>& out, uint64_t min) const {
    if (!find(key)) return status::ok();
    T v{};
    KEEL_TRY(uint(key, v, min));
    out = v;
    return status::ok();
  }

  // A number in [lo, hi]; hi = infinity for no upper bound.
  status number(const char* key, double& out, double lo, double hi) const {
    const json* v = find(key);
    if (!v) return status::ok();
    if (!v->is_number() || v->get<double>() < lo || v->get<double>() > hi) {
      return fail_key(key, std::isinf(hi) ? "must be a number >= " + format_number(lo)
                                          : "must be a number between " + format_number(lo) +
                                                " and " + format_number(hi));
    }
    out = v->get<double>();
    return status::ok();
  }

  fields sub(const char* key) const { return fields(source_, *find(key), at(key)); }
  const std::string& source() const { return source_; }
  fields sub(const json& obj, std::string ptr) const {
    return fields(source_, obj, std::move(ptr));
  }

 private:
  const std::string& source_;
  const json& obj_;
  std::string ptr_;
};

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

bool declares(const std::vector<tool_spec>& tools, const std::string& name) {
  return std::any_of(tools.begin(), tools.end(),
                     [&](const tool_spec& t) { return t.name == name; });
}

status parse_tool_names(const fields& f, const char* key, const std::vector<tool_spec>& tools,
                        std::vector<std::string>& out) {
  const json* arr = f.find(key);
  if (!arr) return status::ok();
  if (!arr->is_array()) return f.fail_key(key, "must be an array of tool names");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const json& n = (*arr)[i];
    std::string where = pointer_child(f.at(key), i);
    if (!n.is_string()) return f.fail(where, "must be a string");
    std::string name = n.get<std::string>();
    if (!declares(tools, name)) return f.fail(where, "\"" + name + "\" is not a declared tool");
    out.push_back(std::move(name));
  }
  return status::ok();
}

// A rule holds only where the tool's schema pins its place down: a loose
// schema lets the same amount through as "1_000", [1000] or a lookalike
// key. So a rule whose place a schema leaves loose is refused, as is one
// comparing numbers on a string (or matching patterns on a non-string).
status check_rule_pinned(const fields& f, const std::vector<tool_spec>& tools, const arg_rule& r) {
  const bool numeric = r.above || r.below;
  bool anywhere = false;
  for (const auto& t : tools) {
    if (r.tool != "*" && r.tool != t.name) continue;
    const pinned_place place = pin_of(t.parameters, r.pointer);
    if (place.state == pinned_place::kind::absent) continue;
    if (place.state == pinned_place::kind::loose)
      return f.fail_key("pointer", "the parameters of tool " + t.name + " do not pin down " +
                                       r.pointer + " (" + place.why +
                                       "): a rule there could be passed by another form of the "
                                       "same value; give every object on the way "
                                       "\"additionalProperties\": false and the value one "
                                       "\"type\"");
    if (numeric && place.type != "number" && place.type != "integer")
      return f.fail_key(r.above ? "above" : "below", "compares numbers, but tool " + t.name +
                                                         " takes " + r.pointer + " as type " +
                                                         place.type);
    if (r.pattern && place.type != "string")
      return f.fail_key("pattern", "matches text, but tool " + t.name + " takes " + r.pointer +
                                       " as type " + place.type);
    anywhere = true;
  }
  if (!anywhere)
    return f.fail_key("pointer",
                      (r.tool == "*" ? "no tool's parameters allow "
                                     : "the parameters of tool " + r.tool + " allow no ") +
                          r.pointer + ", so the rule never matches");
  return status::ok();
}

status parse_rule(const fields& f, const std::vector<tool_spec>& tools, arg_rule& r) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"name", "tool", "pointer", "pattern", "above", "below", "action", "reason"}));
  KEEL_TRY(f.required("name"));
  KEEL_TRY(f.string("name", r.name));
  if (r.name.empty()) return f.fail_key("name", "must not be empty");

  r.tool = "*";
  KEEL_TRY(f.string("tool", r.tool));
  if (r.tool != "*" && !declares(tools, r.tool))
    return f.fail_key("tool", "\"" + r.tool + "\" is neither \"*\" nor a declared tool");

  KEEL_TRY(f.required("pointer"));
  KEEL_TRY(f.string("pointer", r.pointer));
  if (r.pointer.empty() || r.pointer.front() != '/')
    return f.fail_key("pointer", "must be a JSON pointer starting with \"/\"");
  try {
    json::json_pointer p(r.pointer);
  } catch (const json::exception&) {
    return f.fail_key("pointer", "is not a valid JSON pointer (escape ~ as ~0 and / as ~1)");
  }

  if (f.find("pattern")) {
    std::string pattern;
    KEEL_TRY(f.string("pattern", pattern));
    KEEL_TRY(compile_rule_pattern(f, pattern));
    r.pattern = pattern;
  }
  const double inf = std::numeric_limits<double>::infinity();
  if (f.find("above")) {
    double d = 0;
    KEEL_TRY(f.number("above", d, -inf, inf));
    r.above = d;
  }
  if (f.find("below")) {
    double d = 0;
    KEEL_TRY(f.number("below", d, -inf, inf));
    r.below = d;
  }
  if (!r.pattern && !r.above && !r.below)
    return f.fail(f.pointer(), "needs at least one of pattern, above, below");
  if (r.above && r.below && *r.above >= *r.below)
    return f.fail_key("below", "must be greater than above, or the rule never matches");

  std::string action = "deny";
  KEEL_TRY(f.string("action", action));
  if (action == "deny")
    r.action = arg_rule::action_kind::deny;
  else if (action == "require_approval")
    r.action = arg_rule::action_kind::require_approval;
  else
    return f.fail_key("action", "must be \"deny\" or \"require_approval\"");
  KEEL_TRY(f.string("reason", r.reason));
  return check_rule_pinned(f, tools, r);
}

status parse_guardrails(const fields& f, const std::vector<tool_spec>& tools, guardrails_spec& g) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"allow_tools", "deny_tools", "rules"}));
  KEEL_TRY(parse_tool_names(f, "allow_tools", tools, g.allow_tools));
  KEEL_TRY(parse_tool_names(f, "deny_tools", tools, g.deny_tools));
  const json* rules = f.find("rules");
  if (!rules) return status::ok();
  if (!rules->is_array()) return f.fail_key("rules", "must be an array of rules");
  std::map<std::string, std::size_t> names;
  for (std::size_t i = 0; i < rules->size(); ++i) {
    fields rf = f.sub((*rules)[i], pointer_child(f.at("rules"), i));
    arg_rule r;
    KEEL_TRY(parse_rule(rf, tools, r));
    auto [it, fresh] = names.emplace(r.name, i);
    if (!fresh)
      return rf.fail_key("name", "duplicate rule name \"" + r.name + "\" (also " +
                                     pointer_child(f.at("rules"), it->second) + ")");
    g.rules.push_back(std::move(r));
  }
  return status::ok();
}

// "signals": the type's own signal names; the built-in ones are refused,
// so that a declaration never changes what approve or pause do.
status parse_signals(const fields& f, std::vector<std::string>& out) {
  const json* arr = f.find("signals");
  if (!arr) return status::ok();
  if (!arr->is_array()) return f.fail_key("signals", "must be an array of signal names");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const json& n = (*arr)[i];
    const std::string where = pointer_child(f.at("signals"), i);
    if (!n.is_string()) return f.fail(where, "must be a string");
    const std::string name = n.get<std::string>();
    if (status ok = validate_signal_name(name); !ok) return f.fail(where, ok.message());
    auto built_in = [&name](const auto& list) {
      return std::find(list.begin(), list.end(), name) != list.end();
    };
    if (built_in(loop_signals) || built_in(node_signals))
      return f.fail(where, "\"" + name + "\" is a built-in signal; every agent loop takes it");
    if (std::find(out.begin(), out.end(), name) != out.end())
      return f.fail(where, "\"" + name + "\" is declared twice");
    out.push_back(name);
  }
  return status::ok();
}

status parse_budget_limits(const fields& f, budget_limits& b) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"model_calls", "tokens", "tool_calls", "wall_ms"}));
  KEEL_TRY(f.uint("model_calls", b.model_calls));
  KEEL_TRY(f.uint("tokens", b.tokens));
  KEEL_TRY(f.uint("tool_calls", b.tool_calls));
  KEEL_TRY(f.uint("wall_ms", b.wall_ms));
  return status::ok();
}

status parse_budgets(const fields& f, budgets_spec& b) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"per_turn", "lifetime"}));
  if (f.find("per_turn")) KEEL_TRY(parse_budget_limits(f.sub("per_turn"), b.per_turn));
  if (f.find("lifetime")) KEEL_TRY(parse_budget_limits(f.sub("lifetime"), b.lifetime));
  return status::ok();
}

// nlohmann keeps the last of two equal keys in an object without a word;
// in a spec that is a copy-paste mistake, so it is reported with the
// pointer of the repeated key.
class duplicate_key_finder {
 public:
  bool on_event(json::parse_event_t event, const json& parsed) {
    using ev = json::parse_event_t;
    switch (event) {
      case ev::object_start:
        frames_.push_back({true, {}, {}, 0});
        break;
      case ev::array_start:
        frames_.push_back({false, {}, {}, 0});
        break;
      case ev::key: {
        frame& top = frames_.back();
        top.key = parsed.get<std::string>();
        if (!top.keys.insert(top.key).second && !found_) found_ = pointer();
        break;
      }
      case ev::object_end:
      case ev::array_end:
        frames_.pop_back();
        element_done();
        break;
      case ev::value:
        element_done();
        break;
    }
    return true;
  }
  const std::optional<std::string>& found() const { return found_; }

 private:
  struct frame {
    bool object;
    std::set<std::string> keys;
    std::string key;
    std::size_t index;
  };
  void element_done() {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  }
  std::string pointer() const {
    std::string p;
    for (const frame& f : frames_)
      p = f.object ? pointer_child(p, f.key) : pointer_child(p, f.index);
    return p;
  }
  std::vector<frame> frames_;
  std::optional<std::string> found_;
};

}  // namespace

result<std::shared_ptr<const agent_spec>> parse_agent_spec(const json& j, const std::string& source,
                                                           const std::string& base_dir) {
  fields top(source, j, "");
  KEEL_TRY(top.expect_object());
  KEEL_TRY(top.only({"name", "description", "instructions", "model", "tools", "guardrails",
                     "budgets", "idle_ms", "max_steps_per_turn", "follow_latest",
                     "dedupe_window_ms", "retention", "signals"}));
  auto spec = std::make_shared<agent_spec>();
  KEEL_TRY(top.required("name"));
  KEEL_TRY(top.string("name", spec->name));
  if (!is_agent_type_name(spec->name))
    return top.fail_key("name", "must match [a-z0-9][a-z0-9_.-]{0,63}");
  if (spec->name == "counter")
    return top.fail_key("name", "\"counter\" is reserved for the built-in agent type");
  KEEL_TRY(top.string("description", spec->description));
  KEEL_TRY(top.string("instructions", spec->instructions));
  KEEL_TRY(top.required("model"));
  KEEL_TRY(parse_model(top.sub("model"), base_dir, spec->model));
  KEEL_TRY(parse_tools(top, spec->tools));
  if (top.find("guardrails"))
    KEEL_TRY(parse_guardrails(top.sub("guardrails"), spec->tools, spec->guardrails));
  if (top.find("budgets")) KEEL_TRY(parse_budgets(top.sub("budgets"), spec->budgets));
  KEEL_TRY(top.optional_uint("idle_ms", spec->idle_ms, 1));
  KEEL_TRY(top.uint("max_steps_per_turn", spec->max_steps_per_turn, 1));
  KEEL_TRY(top.boolean("follow_latest", spec->follow_latest));
  KEEL_TRY(top.optional_uint("dedupe_window_ms", spec->dedupe_window_ms, 0));
  if (top.find("retention")) {
    fields rf = top.sub("retention");
    KEEL_TRY(rf.expect_object());
    KEEL_TRY(rf.only({"keep_events", "keep_ms"}));
    KEEL_TRY(rf.uint("keep_events", spec->retention.keep_events));
    KEEL_TRY(rf.uint("keep_ms", spec->retention.keep_ms));
    if (spec->retention.keep_events == 0 && spec->retention.keep_ms == 0)
      return rf.fail(rf.pointer(), "needs keep_events or keep_ms (at least one above 0)");
  }
  KEEL_TRY(parse_signals(top, spec->signals));
  spec->source = source;
  // Self-contained: the scripted model's replies inline, so that the stored
  // version needs no file, and a new script is a new version.
  spec->canonical = j;
  if (!spec->model.script_content.is_null())
    spec->canonical["model"]["script"] = spec->model.script_content;
  // dump() is canonical: nlohmann's objects keep keys sorted and the dump
  // has no whitespace, so reformatting a file keeps its hash.
  spec->hash = to_hex(sha256(spec->canonical.dump(-1, ' ', false, json::error_handler_t::replace)));
  return std::shared_ptr<const agent_spec>(std::move(spec));
}

result<std::shared_ptr<const agent_spec>> parse_agent_spec_body(const json& j,
                                                                const std::string& source) {
  if (j.is_object() && j.contains("model") && j["model"].is_object() &&
      j["model"].contains("script") && j["model"]["script"].is_string())
    return error(code::invalid_argument,
                 source +
                     ": /model/script: give the replies inline ({\"replies\": [...]}): a "
                     "spec sent to a node cannot name a file");
  return parse_agent_spec(j, source, "");
}

namespace {

// A spec file's JSON, with a duplicated key refused.
result<json> read_spec_json(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return error(code::io_error, "cannot read agent spec " + path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return error(code::io_error, "cannot read agent spec " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad())
    return error(code::io_error, "cannot read agent spec " + path + ": " + std::strerror(errno));

  duplicate_key_finder dups;
  json j;
  try {
    j = json::parse(text.str(), [&](int, json::parse_event_t e, json& parsed) {
      return dups.on_event(e, parsed);
    });
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 3, ...".
    std::string what = e.what();
    if (auto close = what.find("] "); close != std::string::npos) what.erase(0, close + 2);
    return error(code::invalid_argument, path + ": not valid JSON: " + what);
  }
  if (dups.found())
    return error(code::invalid_argument, path + ": " + *dups.found() + ": key appears twice");
  return j;
}

result<std::shared_ptr<const agent_spec>> parse_spec_file(const json& j, const std::string& path) {
  fs::path base = fs::path(path).parent_path();
  return parse_agent_spec(j, path, base.empty() ? "." : base.string());
}

// Why a file's JSON declares no type, or "" when it declares one.
std::string not_a_spec(const json& j) {
  if (j.is_object() && j.contains("name")) return {};
  if (j.is_object() && j.contains("replies")) return "a scripted model's script, not a spec";
  return "no \"name\": not an agent-type spec";
}

}  // namespace

result<std::shared_ptr<const agent_spec>> load_agent_spec(const std::string& path) {
  auto j = read_spec_json(path);
  if (!j) return j.error();
  return parse_spec_file(*j, path);
}

result<spec_folder> load_agent_specs(const std::string& dir) {
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    return error(code::io_error, "cannot open agent spec folder " + dir + ": " + ec.message());
  if (!fs::exists(st)) return error(code::io_error, "agent spec folder " + dir + " does not exist");
  if (!fs::is_directory(st))
    return error(code::io_error, "agent spec folder " + dir + " is not a folder");
  std::vector<fs::path> files;
  fs::directory_iterator it(dir, ec), end;
  if (ec)
    return error(code::io_error, "cannot list agent spec folder " + dir + ": " + ec.message());
  for (; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".json") continue;
    std::error_code fec;
    if (fs::is_regular_file(it->path(), fec)) files.push_back(it->path());
  }
  if (ec)
    return error(code::io_error, "cannot list agent spec folder " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });

  spec_folder folder;
  std::map<std::string, std::string> seen;  // type name -> file
  for (const auto& file : files) {
    auto j = read_spec_json(file.string());
    if (!j) return j.error();
    if (std::string why = not_a_spec(*j); !why.empty()) {
      folder.skipped.emplace_back(file.string(), std::move(why));
      continue;
    }
    auto spec = parse_spec_file(*j, file.string());
    if (!spec) return spec.error();
    auto [prev, fresh] = seen.emplace((*spec)->name, file.string());
    if (!fresh)
      return error(code::invalid_argument, "agent type \"" + (*spec)->name +
                                               "\" is declared twice: in " + prev->second +
                                               " and in " + file.string());
    folder.specs.push_back(std::move(*spec));
  }
  return folder;
}

}  // namespace keel::config
