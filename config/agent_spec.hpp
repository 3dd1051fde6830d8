#pragma once
// Agent types declared in JSON: model, instructions, tools, guardrails,
// budgets. Parsed and validated once at load; internals receive the
// immutable result. Every error names the file, the JSON pointer of the
// offending value and what is wrong, e.g.
//   "examples/agents/refund.json: /tools/0/retry/attempts: must be an integer >= 1".
//
// The full format is documented in docs/agent-types.md.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.hpp"

namespace keel::config {

using json = nlohmann::json;

// How one effect (model call, tool call) is retried. Attempt n (1-based)
// that fails retryably waits min(backoff_ms * multiplier^(n-1),
// max_backoff_ms), spread by +-jitter (a fraction), before attempt n+1.
struct retry_policy {
  uint32_t attempts = 3;      // total attempts, >= 1
  uint32_t backoff_ms = 200;  // first wait
  double multiplier = 2.0;    // >= 1
  uint32_t max_backoff_ms = 30'000;
  double jitter = 0.2;           // 0..1
  uint32_t timeout_ms = 30'000;  // per attempt, >= 1
};

struct model_spec {
  std::string provider;     // "openai" | "scripted"
  std::string model;        // sent as "model" (openai); free text (scripted)
  std::string base_url;     // openai: e.g. "http://127.0.0.1:8000/v1" (required)
  std::string api_key_env;  // openai: environment variable with the key (optional)
  // openai: the key, as a reference to a node's secret ("${secret:openai}",
  // config/secret_refs.hpp), sent as "Authorization: Bearer <key>"; not
  // with api_key_env. Extra request headers, whose values may refer to
  // secrets too. Both hold the reference text, never a value.
  std::string api_key;
  std::map<std::string, std::string> headers;
  std::optional<double> temperature;
  std::optional<uint32_t> max_tokens;
  // scripted: the replies (config/model_script.hpp), read and checked at
  // load, from a file named in the spec (resolved against the spec file's
  // folder) or given inline; `script` is the file ("(inline)" when none).
  std::string script;
  json script_content;
  retry_policy retry;  // retry.timeout_ms is the per-call timeout ("timeout_ms" in JSON)
};

enum class tool_kind { http, exec, worker, send_message, spawn_agent, sleep, ask_human };
const char* to_string(tool_kind k);

// Sandbox limits of an exec tool. 0 = no limit of that kind.
struct exec_limits {
  uint32_t cpu_seconds = 10;
  uint64_t memory_bytes = 512ull << 20;
  uint32_t max_open_files = 64;
  uint32_t max_processes = 16;
  uint64_t max_output_bytes = 1 << 20;
  bool allow_network = false;  // false: a new network namespace where the kernel allows
};

struct tool_spec {
  std::string name;  // [A-Za-z0-9_-]{1,64} (what OpenAI accepts), unique in the spec
  std::string description;
  json parameters = json::object();  // JSON schema of the arguments (config/json_schema.hpp)
  tool_kind kind = tool_kind::http;
  // http: POST the arguments as JSON to url, with these extra headers.
  // Header values may refer to secrets (config/secret_refs.hpp).
  std::string url;
  std::map<std::string, std::string> headers;
  // exec: argv[0] is an absolute path or found on the node's PATH at load.
  std::vector<std::string> argv;
  // exec: variables added to the sandbox's environment (names
  // [A-Za-z_][A-Za-z0-9_]*, never PATH); values may refer to secrets.
  std::map<std::string, std::string> env;
  exec_limits limits;
  // exec: host paths shown to the tool at the same path (it sees only the
  // system's directories, read-only, and a private /tmp otherwise):
  // absolute, existing at load. Writable ones must be writable by the
  // tool's uid.
  struct exec_paths {
    std::vector<std::string> read;
    std::vector<std::string> write;
  } paths;
  // worker: the queue external workers poll; a task leased for lease_ms is
  // requeued when not completed in time.
  std::string queue;
  uint32_t lease_ms = 30'000;
  bool idempotent = false;
  // How this tool says a call was not applied, beyond what always proves
  // it (http: no connection, 408, 429, a 503 with Retry-After; exec: the
  // program never started, exit 75): answers of these kinds fail a call
  // of a non-idempotent tool plainly instead of putting it in doubt. A
  // listed 5xx or exit 75 is retried; the others fail the call.
  struct not_applied_spec {
    std::vector<unsigned> http_statuses;  // e.g. 400, 409, 422
    std::vector<int> exit_codes;          // e.g. 64 (EX_USAGE)
  } not_applied;
  // Tool-level approval: every call needs a human's approve signal.
  bool require_approval = false;
  retry_policy retry;
  std::string compensate;  // name of another tool of this spec, or empty
};

// An argument rule: when `tool` (or "*") is called and the value at
// `pointer` in its arguments matches (regex search on strings; numbers
// compared with above/below; numeric strings count as numbers), `action`
// applies. Regexes are ECMAScript; a leading "(?i)" makes one case-insensitive.
struct arg_rule {
  std::string name;     // shown in guardrail_decided events
  std::string tool;     // tool name or "*"
  std::string pointer;  // JSON pointer into the arguments, e.g. "/amount"
  std::optional<std::string> pattern;
  std::optional<double> above;  // matches when value > above
  std::optional<double> below;  // matches when value < below
  enum class action_kind { deny, require_approval } action = action_kind::deny;
  std::string reason;  // told to the model / the approver
};

struct guardrails_spec {
  std::vector<std::string> allow_tools;  // empty: every declared tool is allowed
  std::vector<std::string> deny_tools;
  std::vector<arg_rule> rules;
};

// Limits per turn and per agent lifetime; 0 = unlimited.
struct budget_limits {
  uint64_t model_calls = 0;
  uint64_t tokens = 0;
  uint64_t tool_calls = 0;
  uint64_t wall_ms = 0;
};
struct budgets_spec {
  budget_limits per_turn;
  budget_limits lifetime;
};

// The signals an agent loop interprets itself, in the order messages list
// them: every loop agent takes them, and a spec cannot declare them.
inline constexpr std::array<std::string_view, 6> loop_signals = {"approve", "reject", "resolve",
                                                                 "answer",  "cancel", "retry"};
// The signals of the node itself: pause and resume (an operator's), forked
// and salvaged (recorded by the node). Every agent takes them; a spec
// cannot declare them.
inline constexpr std::array<std::string_view, 4> node_signals = {"pause", "resume", "forked",
                                                                 "salvaged"};

struct agent_spec {
  std::string name;  // the agent type's name: [a-z0-9][a-z0-9_.-]{0,63}
  std::string description;
  std::string instructions;  // the system prompt
  model_spec model;
  std::vector<tool_spec> tools;
  guardrails_spec guardrails;
  budgets_spec budgets;
  std::optional<uint32_t> idle_ms;   // overrides the node's idle_ms
  uint32_t max_steps_per_turn = 16;  // model calls per turn, >= 1
  // Agents of this type move to this version, when it is the latest, as a
  // message reaches them while idle (recorded as upgraded by "keel"; a
  // message queued behind a running turn starts its turn on the version
  // running); else an agent keeps its version until keel upgrade.
  bool follow_latest = false;
  // Overrides the node's dedupe_window_ms for this type's agents (0: keep
  // their processed message ids forever).
  std::optional<uint64_t> dedupe_window_ms;
  // Automatic compaction of this type's agents (the latest version's policy
  // applies): the node archives what falls outside the live ledger, as
  // keel compact does. 0 = no bound of that kind; both 0: off.
  struct retention_spec {
    uint64_t keep_events = 0;  // keep at least the last N events live
    uint64_t keep_ms = 0;      // ... and every event younger than this
  } retention;
  // The signals of its own the type takes ("signals": ["escalate", ...]),
  // besides loop_signals and node_signals: each starts a turn whose input
  // is "[signal NAME] payload". The node refuses any other signal (400)
  // before recording it. Names as signal names (base/names.hpp), unique.
  std::vector<std::string> signals;
  std::string source;  // the file it came from
  // The spec as one self-contained JSON document (a scripted model's replies
  // inline), which parses back to the same spec: what a node stores as this
  // version of the type.
  json canonical;
  // The version: hex SHA-256 of `canonical` (keys sorted, no whitespace, so
  // reformatting a file keeps it). Agents record the version they run.
  std::string hash;

  const tool_spec* find_tool(const std::string& name) const;
};

// Parses one spec. `source` names it in errors; relative paths (the
// scripted model's file) resolve against `base_dir`. Errors:
// invalid_argument with "<source>: <pointer>: <what>".
result<std::shared_ptr<const agent_spec>> parse_agent_spec(const json& j, const std::string& source,
                                                           const std::string& base_dir);
// Parses a spec that came without a folder (PUT /v1/types, a replay's
// candidate spec): a scripted model's replies must be inline, since no file
// can be named. Errors: invalid_argument.
result<std::shared_ptr<const agent_spec>> parse_agent_spec_body(const json& j,
                                                                const std::string& source);
// Reads and parses a file. Errors: io_error (unreadable), invalid_argument.
result<std::shared_ptr<const agent_spec>> load_agent_spec(const std::string& path);
// What a folder of specs holds: the types it declares, in file-name order,
// and the JSON files beside them that declare none.
struct spec_folder {
  std::vector<std::shared_ptr<const agent_spec>> specs;
  // (file, why): files whose top level is not an object with a "name" (a
  // scripted model's script, say), which are not specs.
  std::vector<std::pair<std::string, std::string>> skipped;
};
// Loads every *.json file of a folder (not recursive) that declares a type
// (an object with "name"), sorted by file name; a file that declares one
// must be a valid spec. Two specs with one name are an error naming both
// files. Errors: io_error (the folder or a file), invalid_argument.
result<spec_folder> load_agent_specs(const std::string& dir);

}  // namespace keel::config
