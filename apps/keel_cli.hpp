#pragma once
// Internal to the keel CLI (apps/keel*.cpp): the parsed command line, the
// output helpers and the command class, whose commands are split by
// concern across keel.cpp (agents, tasks, cluster), keel_ledger.cpp
// (audit, replay, fork, operator controls), keel_eval.cpp (eval),
// keel_types.cpp (types, upgrade) and keel_secrets.cpp (secret).

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/http_client.hpp"

namespace keel::cli_app {

using json = nlohmann::json;

// Exit codes (keel.cpp's header says what each means): send, signal,
// cancel and the operator controls with --wait also end in exit_parked,
// exit_turn_failed or exit_no_reply.
constexpr int exit_ok = 0, exit_server = 1, exit_usage = 2, exit_parked = 3, exit_turn_failed = 4,
              exit_no_reply = 5;

struct usage_failure {
  std::string message;
};

struct invocation {
  std::string server;
  std::string token;
  std::string ca;         // trusted for https:// servers instead of the system store
  std::string cert, key;  // a client certificate for https:// servers that ask for one
  bool json_out = false;
  std::string command;
  std::vector<std::string> args;            // positional, after the command
  std::map<std::string, std::string> opts;  // command flags, without "--" (the last value)
  std::vector<std::pair<std::string, std::string>> all_opts;  // every flag, in order
};

[[noreturn]] void usage_fail(const std::string& message);
invocation parse_command_line(int argc, char** argv);
void expect_args(const invocation& inv, std::size_t min, std::size_t max, const char* shape,
                 std::set<std::string> allowed_opts);
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

  // Connects on first use; false after printing why it could not.
  bool connect();
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
