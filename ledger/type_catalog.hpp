#pragma once
// Agent-type versions kept in the node's store, so that every agent keeps
// running the version it was spawned with (or upgraded to) across restarts
// and edits, and replay finds the version each step ran. In the meta family:
//   type/<name>/<hash>   -> {"spec": the spec's canonical JSON, "source", "added_ms"}
//   type_latest/<name>   -> {"hash"}: the version new agents of <name> get
// Versions are only added. The registry (agent/registry.hpp) holds every
// version in memory; one missing there (it came with an agent handed over
// by another node) is read from the store on first use. CAF-free.

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/registry.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

class type_catalog {
 public:
  type_catalog(persistence::store& db, agent::type_registry& types) : db_(db), types_(types) {}

  // At start: every stored version (a version that no longer loads, e.g.
  // an exec tool's program is gone, is skipped with a line in `notes`),
  // then `files` (--agents), each made its type's latest; new ones are
  // stored (when the store takes no writes, a line in `notes`). Errors: the
  // store's, reading.
  status open(const std::vector<std::shared_ptr<const config::agent_spec>>& files,
              std::vector<std::string>& notes);

  struct put_result {
    std::string hash;
    bool is_new = false;      // a version the node did not have
    bool was_latest = false;  // it was the latest already: nothing changed
  };
  // Registers `spec` at run time (PUT /v1/types/{name}) as its type's
  // latest version, durably before it is used. Errors: already_exists (a
  // built-in type's name), io_error, no_space.
  result<put_result> put(std::shared_ptr<const config::agent_spec> spec);

  // Version `version` of `name`: the registry's, else the store's (loaded
  // into the registry). nullptr when neither has it.
  const agent::agent_type* find(std::string_view name, std::string_view version);

  // A version of `name` to fold an agent's history with (folding does not
  // depend on the version; the agent then runs its own): the latest, else
  // the newest the node has; nullptr when it has none.
  const agent::agent_type* for_folding(std::string_view name) const;

  // Every stored version of `name` as write ops: what travels with an agent
  // handed to another node (which keeps its own latest).
  result<persistence::write_set> version_ops(std::string_view name);

  const agent::type_registry& registry() const { return types_; }

 private:
  // Writes the version (when `version`) and makes it the latest (when
  // `latest`), synced.
  status store_version(const config::agent_spec& spec, bool version, bool latest, int64_t now);
  // When a new version of `name` is added: now, but after every version
  // the node has of it, so that versions list in the order they came (a
  // restart sorts them by this time) even within one millisecond.
  int64_t next_added_ms(std::string_view name) const;
  persistence::store& db_;
  agent::type_registry& types_;
  std::mutex mu_;  // one registration at a time: the stored latest follows the registry's
};

// Why agent `agent` of type `type` cannot be loaded: no version of its type
// is on this node (keeld started without the --agents folder of its spec).
// A conflict (409), not a corruption: the data is whole, the node lacks
// the code to run it.
status type_not_loaded(std::string_view agent, std::string_view type);

std::string type_version_key(std::string_view name, std::string_view hash);
bool is_type_version_key(std::string_view key);
// The meta key of the version new agents of a type get: type_latest/<name>.
std::string type_latest_key(std::string_view name);

// The versions of one type, as a replay looks them up (type_catalog::find).
class catalog_versions final : public agent::type_versions {
 public:
  catalog_versions(type_catalog& c, std::string name) : c_(c), name_(std::move(name)) {}
  const agent::agent_type* find(std::string_view version) const override {
    return c_.find(name_, version);
  }

 private:
  type_catalog& c_;
  std::string name_;
};

}  // namespace keel::actors
