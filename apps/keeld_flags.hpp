#pragma once
// Internal to keeld (apps/keeld*.cpp): its command line, and the node
// config built from the config file, the environment and the flags.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"
#include "config/node_config.hpp"

namespace keel::keeld {

struct flags {
  bool help = false;
  bool version = false;
  bool print_config = false;
  bool join = false;
  bool salvage = false;
  bool forget_secrets = false;
  std::optional<std::string> data, http, config, token, token_file, idle_ms, cluster, node_id,
      anonymous, tls_cert, tls_key, tls_client_ca, log_level, log_format;
  std::vector<std::string> agents;
  // --recover-group G@INDEX, each as given.
  std::vector<std::string> recover_groups;
};

// The groups of --recover-group G@INDEX: group -> the index its log ends
// at. Errors: invalid_argument for a value that is not G@INDEX, or a group
// given twice.
result<std::map<uint32_t, uint64_t>> parse_recover_groups(const std::vector<std::string>& given);

// Exit codes: 2 a bad command line or config, 1 a failed start, 3 a store
// that needs an operator (a damaged write-ahead log or table files).
constexpr int exit_failed = 1, exit_usage = 2, exit_needs_operator = 3;

// keeld --help: the flags, then every config key with its default.
std::string usage_text();

// Prints "keeld: MESSAGE" and the way to the usage on stderr; returns 2.
int usage_error(const std::string& message);

// Accepts "--name value" and "--name=value". Errors: invalid_argument.
result<flags> parse_flags(const std::vector<std::string_view>& args);

// The config file first, then $KEEL_TOKEN (or $KEEL_TOKEN_FILE), then the
// flags; validated. What keeld should warn about (a token file others may
// read) goes to `warnings`, for once the log is set up.
result<config::node_config> build_config(const flags& f, std::vector<std::string>& warnings);

}  // namespace keel::keeld
