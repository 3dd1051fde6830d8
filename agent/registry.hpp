#pragma once
// The agent types a node knows: the built-in ones (counter), and every
// version of every agent-type spec it has loaded (from --agents at start,
// from its store, or registered at run time). A version is a spec's hash;
// each name has a latest version, which new agents get. Versions are only
// added, never replaced or removed, so a type found once stays valid for
// the registry's life: lookups take a shared lock, and the agent_type
// pointers they return may be kept without one.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/core.hpp"
#include "config/agent_spec.hpp"

namespace keel::agent {

class loop_type;

class type_registry {
 public:
  type_registry();  // the built-in types
  ~type_registry();
  type_registry(const type_registry&) = delete;
  type_registry& operator=(const type_registry&) = delete;

  struct added {
    const agent_type* type = nullptr;
    bool is_new = false;  // false: that version was known already
  };
  // Adds `spec` as a version of its type (a known hash is not added twice)
  // and, with `make_latest`, makes it the version new agents get. Errors:
  // already_exists (a built-in type has that name).
  // `added_ms`: when the node first had it (shown in listings).
  result<added> add(std::shared_ptr<const config::agent_spec> spec, bool make_latest = true,
                    int64_t added_ms = 0);

  // The latest version of `name`, or the built-in type; nullptr when unknown.
  const agent_type* find(std::string_view name) const;
  // Version `version` of `name` ("" for a built-in type); nullptr when
  // unknown.
  const agent_type* find(std::string_view name, std::string_view version) const;
  std::vector<std::string> names() const;
  // Whether any version added asks agents to follow it (follow_latest):
  // a lock-free check, so agents pay no lookup per message when none does.
  bool any_follows() const { return any_follows_.load(std::memory_order_acquire); }

  struct version_info {
    std::string hash;
    std::shared_ptr<const config::agent_spec> spec;
    bool latest = false;
    uint64_t order = 0;  // the order versions were added in (1, 2, ...)
    int64_t added_ms = 0;
  };
  // The hash `version` names among the versions of `name`: "" or "latest"
  // the latest, else a hash or a unique prefix of one (callers check the
  // prefix's length). Errors: not_found, invalid_argument (ambiguous).
  result<std::string> resolve(std::string_view name, std::string_view version) const;

  // Every version of `name`, in the order added; empty for a built-in or
  // unknown type.
  std::vector<version_info> versions(std::string_view name) const;

 private:
  struct versions_of_name {
    std::map<std::string, std::unique_ptr<loop_type>, std::less<>> by_hash;
    std::map<uint64_t, std::string> by_order;
    std::map<std::string, int64_t, std::less<>> added_ms;
    std::string latest;
  };
  mutable std::shared_mutex mu_;
  std::map<std::string, versions_of_name, std::less<>> types_;
  uint64_t added_ = 0;
  std::atomic<bool> any_follows_{false};
};

// A spec standing in for every version of its type: each recorded version
// is answered by a loop of `spec` that records that version (loop_type's
// as_version), so a replay runs the edited spec against a ledger written
// by older versions and shows only where its decisions differ.
class stand_in_versions final : public type_versions {
 public:
  explicit stand_in_versions(std::shared_ptr<const config::agent_spec> spec);
  ~stand_in_versions() override;
  const agent_type* find(std::string_view version) const override;

 private:
  std::shared_ptr<const config::agent_spec> spec_;
  mutable std::map<std::string, std::unique_ptr<loop_type>, std::less<>> loops_;
};

}  // namespace keel::agent
