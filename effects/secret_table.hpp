#pragma once
// The secrets a node knows, by name: from its config (node_config::secrets,
// a file's content or an environment variable, read once at start) and
// set through the API (persistence/secret_store.hpp, sealed on disk).
// Config-sourced secrets win over stored ones of the same name and cannot
// be changed or removed through the API.
//
// Effects use them through a secret_scope taken when the call starts:
// references (config/secret_refs.hpp) in an http tool's headers, an exec
// tool's env or an openai model's api_key and headers are expanded for
// that call only, and what the call returns is redacted before it is
// recorded or returned. Values live in memory only, and in no log.
//
// Thread-safety: every member may be called from any thread; set and
// remove block on a synced write (never call them on a scheduler thread).
// Lifetime: the store passed to open() must outlive the table.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"
#include "config/agent_spec.hpp"
#include "config/node_config.hpp"
#include "effects/contexts.hpp"
#include "persistence/secret_store.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

// Substrings shorter than this are not redacted: they would match
// unrelated text everywhere (and a value that short is guessed anyway).
inline constexpr std::size_t min_redacted_bytes = 4;
// Largest value a secret may have.
inline constexpr std::size_t max_secret_bytes = 64 << 10;

enum class secret_source { store, file, env };
const char* to_string(secret_source s);

struct secret_listing {
  std::string name;
  secret_source source = secret_source::store;
  std::string from;        // the file or variable of a config-sourced secret; "" for store
  int64_t updated_ms = 0;  // when it was set (store) or read (config)
};

struct secret_entry {
  std::string value;
  secret_source source = secret_source::store;
  std::string from;
  int64_t updated_ms = 0;
};
using secret_values = std::map<std::string, secret_entry, std::less<>>;

// What one effect call may use and must not leak. Cheap to copy.
class secret_scope {
 public:
  secret_scope() = default;

  // A copy of `tool` with its header (http) and env (exec) values
  // expanded; nullopt when none refers to a secret. Errors: not_found
  // (`header H: secret "crm" is not set on this node`),
  // invalid_argument (a header value that would hold a line break).
  result<std::optional<config::tool_spec>> resolve(const config::tool_spec& tool) const;
  // The same for a model's api_key and headers.
  result<std::optional<config::model_spec>> resolve(const config::model_spec& model) const;

  // Replaces, in o.error and in every string (and object key) of
  // o.result, each occurrence of a value this scope saw or the table
  // holds now with "[secret:NAME]"; values shorter than
  // min_redacted_bytes are left alone.
  void redact(effect_outcome& o) const;

 private:
  friend class secret_table;
  secret_scope(std::shared_ptr<const secret_values> values,
               std::function<std::shared_ptr<const secret_values>()> now)
      : values_(std::move(values)), now_(std::move(now)) {}
  result<std::string> expand(std::string_view text) const;
  // Expands the values that refer to secrets; a value must stay one line.
  status expand_headers(std::map<std::string, std::string>& headers) const;

  std::shared_ptr<const secret_values> values_;
  std::function<std::shared_ptr<const secret_values>()> now_;
};

class secret_table {
 public:
  // Reads the config's secrets and the store's. `notes` gets lines for
  // the log (a secret shadowed by the config, a file others may read).
  // Errors: invalid_argument naming the secret whose file or variable
  // cannot be read or is empty; the secret store's (the key file).
  static result<std::unique_ptr<secret_table>> open(const config::node_config& cfg,
                                                    persistence::store& db,
                                                    std::vector<std::string>& notes);

  // Sets `name` in the store; true when it was not set before. Errors:
  // invalid_argument (name, an empty or too large value), conflict (the
  // name comes from the node config), the store's.
  result<bool> set(std::string_view name, std::string_view value);
  // Errors: invalid_argument (name), not_found, conflict (from the
  // config), the store's.
  status remove(std::string_view name);
  // Every secret by name; never a value.
  std::vector<secret_listing> list() const;

  secret_scope scope() const;

  // The key file the store's secrets are sealed with.
  const std::string& key_file() const { return store_->key_file(); }

 private:
  secret_table() = default;
  std::shared_ptr<const secret_values> snapshot() const;

  mutable std::mutex mu_;
  std::shared_ptr<const secret_values> values_;  // replaced whole, guarded by mu_
  std::mutex write_mu_;                          // one set or remove at a time
  std::unique_ptr<persistence::secret_store> store_;
};

// `text` with every occurrence of a value of `values` (of at least
// min_redacted_bytes) replaced by "[secret:NAME]", the longest first.
std::string redact_text(std::string_view text, const secret_values& values);

}  // namespace keel::actors
