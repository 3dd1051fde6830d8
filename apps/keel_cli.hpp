#pragma once
// Internal to the keel CLI (apps/keel*.cpp): the parsed command line, the
// output helpers and the command class, whose commands are split by
// concern across keel.cpp (agents, tasks, cluster), keel_ledger.cpp
// (audit, replay, fork, operator controls), keel_eval.cpp (eval),
// keel_types.cpp (types, upgrade), keel_secrets.cpp (secret) and
// keel_connect.cpp (reaching the node, keel wait). keel_help.cpp holds the
// table of commands that the help, the usage errors, the flag checks and
// the shell completion all read.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/client.hpp"

namespace keel::cli_app {

using json = nlohmann::json;

// Exit codes (keel.cpp's header says what each means): send, signal,
// cancel and the operator controls with --wait also end in exit_parked,
// exit_turn_failed or exit_no_reply.
constexpr int exit_ok = 0, exit_server = 1, exit_usage = 2, exit_parked = 3, exit_turn_failed = 4,
              exit_no_reply = 5;

struct usage_failure {
  std::string message;
  std::string command;  // whose --help the message points to; empty: keel --help
};

// One flag of a command, as its help and the completion show it.
struct flag_help {
  const char* name;     // without "--": "wait"
  const char* value;    // "MS"; nullptr for a switch that takes no value
  const char* meaning;  // one line
  char short_name = 0;  // 'f' for -f; 0: none
};

// One command of the CLI: "send", or a subcommand such as "types show".
struct command_help {
  const char* name;
  const char* group;     // the heading it is listed under in the overview
  const char* synopsis;  // after "keel ": "send NAME BODY_JSON [--id ID] ..."
  const char* summary;   // one line
  const char* details;   // paragraphs for its help; "" when the summary says it all
  std::vector<flag_help> flags;
  std::vector<const char*> examples;
  // A subcommand that also runs without its word: `keel types` is
  // `keel types ls`.
  bool is_default = false;
};

// Every command, in the overview's order.
const std::vector<command_help>& command_table();
// The top-level command words in table order ("spawn", ..., "types", ...);
// with `parent`, its subcommand words ("ls", "versions", ...).
std::vector<std::string> command_words(std::string_view parent = {});
// The entry named `name` ("types show"); nullptr when there is none.
const command_help* find_command(std::string_view name);
// The entry `keel COMMAND ARGS...` runs: "COMMAND ARGS[0]" when that is a
// subcommand, else COMMAND's own entry or its default subcommand.
const command_help* entry_for(const std::string& command, const std::vector<std::string>& args);
// Whether `--name` takes no value for `command` (any command when empty).
bool is_switch(const std::string& command, std::string_view name);
// The flag name of a short flag (-f -> "follow"); nullptr when none.
const char* long_name(const std::string& command, char short_name);
// "unknown command 'spwan'; did you mean 'spawn'?" (the parent command's
// subcommands when `parent` is set).
std::string unknown_command(std::string_view word, std::string_view parent = {});
// keel --help: the commands grouped, one line each, and the global flags.
std::string overview_text();
// keel help COMMAND [SUB]: usage, flags and examples of the entry, or of
// every subcommand of COMMAND. Throws usage_failure for an unknown one.
std::string help_text(const std::vector<std::string>& words);
// keel completion bash: a script that completes commands, subcommands and
// flags from the table.
std::string completion_bash();

struct invocation {
  std::string server;
  std::string token;
  std::string ca;         // trusted for https:// servers instead of the system store
  std::string cert, key;  // a client certificate for https:// servers that ask for one
  bool json_out = false;
  bool help = false;     // --help or -h: the command's help instead of running it
  bool version = false;  // --version
  std::string command;
  std::vector<std::string> args;            // positional, after the command
  std::map<std::string, std::string> opts;  // command flags, without "--" (the last value)
  std::vector<std::pair<std::string, std::string>> all_opts;  // every flag, in order
};

[[noreturn]] void usage_fail(const std::string& message);
// "usage: keel SYNOPSIS" of the entry the invocation runs.
[[noreturn]] void usage_of(const invocation& inv);
invocation parse_command_line(int argc, char** argv);
// Between `min` and `max` positional arguments (a subcommand counts), and
// only the flags the command's entry in the table lists; a usage error
// with the entry's synopsis otherwise.
void expect_args(const invocation& inv, std::size_t min, std::size_t max);
const std::string* opt(const invocation& inv, const std::string& name);
// Every value of a flag given more than once (--override 3=a.json --override 7=b.json).
std::vector<std::string> opt_all(const invocation& inv, const std::string& name);
std::string number_opt(const invocation& inv, const std::string& name);
json parse_json_arg(const std::string& text, const std::string& what);
// Reads and parses a JSON file; a usage error naming it when it cannot.
json read_json_file(const std::string& path, const std::string& what);
std::string dump(const json& j);
std::string iso_time(int64_t ms);
std::string text_of(const json& j);
void print_table(const std::vector<std::string>& head,
                 const std::vector<std::vector<std::string>>& rows);
std::string wait_query(const invocation& inv);
// An agent-type spec file as a node takes it over the API: a scripted
// model's script file read in (apps/keel_types.cpp).
json read_spec_file(const std::string& path);
// Who an operator command is by when --by is not given: $USER, or "cli".
std::string who_default();

class cli {
 public:
  explicit cli(invocation inv) : inv_(std::move(inv)) {}

  int run();

 private:
  // The parsed JSON body of a successful answer; nullopt after printing the
  // error of a failed one.
  std::optional<json> call(const char* method, const std::string& target,
                           const std::string& body = {});
  int done(const json& j);  // prints raw JSON in --json mode

  int spawn();
  int send();
  int signal();
  int show();
  int ls();
  int ledger();
  int rm();
  int query();
  int health();
  int wait();  // apps/keel_connect.cpp
  int cancel();
  int tasks();
  int cluster();
  int print_ack(const json& j);
  // What a turn's standing means for a caller that waited: a phase that
  // waits for a person (exit_parked, with the commands that move it on),
  // or one still running (exit_no_reply). `s` holds "phase", "wait"?,
  // "paused"?.
  int print_standing(const json& s, bool timed_out);

  // apps/keel_ledger.cpp: audit, replay, fork, operator controls.
  int follow(const std::string& name, uint64_t from);
  int audit();
  int replay();
  int fork();
  int import();
  int compact();
  int control(const std::string& action);
  // apps/keel_eval.cpp
  int eval();
  // apps/keel_types.cpp
  int types();
  int upgrade();
  // apps/keel_tokens.cpp
  int token();
  int whoami();
  // apps/keel_secrets.cpp
  int secret();

  std::string agent_path(const std::string& name) const {
    return "/v1/agents/" + net::percent_encode(name);
  }

  // Connects on first use; false after printing why it could not. A node
  // that refuses the connection (starting up) is tried again for up to
  // $KEEL_CONNECT_WAIT_MS (default 5000 ms), saying so on stderr once it
  // has taken half a second.
  bool connect();
  // Connects to `server`, trying again while it refuses the connection,
  // for up to `budget`; `announce`: say so on stderr after half a second.
  status connect_waiting(const net::server_address& server, std::chrono::milliseconds budget,
                         bool announce);
  // The server as a URL, for messages: "http://127.0.0.1:7070".
  std::string server_url() const;
  // Gives `c` the token and the TLS files of the command line.
  void set_up(net::http_client& c) const;
  // Prints why a connection or request of `c` failed, with the flag that
  // fixes a TLS failure.
  void print_failure(const status& s, const net::http_client& c) const;

  invocation inv_;
  net::http_client client_;
  bool connected_ = false;
};

}  // namespace keel::cli_app
