#pragma once
// Operations on an agent's ledger as a whole: audit, replay, fork source,
// import, compaction and retention. Reached through node::ledgers(); the
// node owns it and it lives as long as the node.
//
// Each returns a report struct; the HTTP API renders it (net/api/ledger.cpp).
// None of them starts an effect. They read the store on the caller's thread
// and change an agent only through its shell (which owns its directory
// entry): blocking, so call them from threads of your own, never from a
// node callback. After node::stop() every call fails with code::unavailable.

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "actors/node.hpp"
#include "agent/replay.hpp"
#include "base/status.hpp"
#include "ledger/audit.hpp"

namespace keel::actors {

struct runtime;

// An agent's hash chain as audited (ledger_ops::audit).
struct audit_report {
  std::string agent;
  verify_report chain;  // what the stored records say
  // Imported without its chain (keel import --unverified): the chain was
  // made at the import, so it proves the ledger unchanged since, not
  // faithful to its source. Such a ledger is never intact.
  bool unverified = false;
  // Events up to compacted_seq were archived (0: none); `anchor` is the
  // hash of the last archived event, where the live chain continues.
  uint64_t compacted_seq = 0;
  std::string anchor;

  bool intact() const { return chain.intact && !unverified; }
};

// A replay of an agent's ledger (ledger_ops::replay): strict, or a what-if
// when the options gave overrides.
struct replay_report {
  std::string agent;
  // The hash of a candidate spec that stood in for every version the
  // ledger ran ("" when the ledger's own versions replayed).
  std::string spec;
  uint64_t from_seq = 1;  // the first seq replayed: after a compaction, compacted_seq + 1
  // A strict replay: whether decide() made exactly the recorded events.
  // Unset for a what-if (whose `prefix` says the same up to the first override).
  std::optional<agent::strict_result> strict;
  // A what-if: what the agent would have done with the overrides, and the
  // policy that answered its calls.
  std::optional<agent::what_if_result> what_if;
  agent::mock_policy policy = agent::mock_policy::recorded;

  // Whether the replay reproduced the ledger (a what-if: up to its first override).
  bool identical() const { return strict ? strict->identical : what_if->prefix.identical; }
};

// What a fork of an agent at seq `at` starts from (ledger_ops::fork_source_of).
struct fork_source {
  std::string type;
  json events = json::array();  // export lines (ledger/audit.hpp) of the copied prefix
  json replaced;                // the export line of the event at `at` (null without override)
  uint64_t bytes = 0;           // size of the copied prefix as exported
};

// A compaction done (ledger_ops::compact).
struct compaction_report {
  std::string agent;
  std::string archive;  // the archive file's path
  uint64_t archived = 0;
  uint64_t compacted_seq = 0;  // the last seq archived
  std::string head;            // the hash of that event: the live chain's anchor
};

// What a retention pass did (ledger_ops::apply_retention): a compaction, or
// why there was none.
struct retention_report {
  std::optional<compaction_report> compaction;
  std::string why;  // when no compaction: a sentence
};

class ledger_ops {
 public:
  // REQUIRES: `rt` outlives this object; `stopped` turns true at node::stop().
  ledger_ops(runtime& rt, const std::atomic<bool>& stopped) : rt_(rt), stopped_(stopped) {}
  ledger_ops(const ledger_ops&) = delete;
  ledger_ops& operator=(const ledger_ops&) = delete;

  // Checks the agent's hash chain. Errors: invalid_argument (name),
  // not_found, the store's.
  result<audit_report> audit(std::string_view name);
  // The seq of the agent's last event (0: none). Errors: not_found.
  result<uint64_t> ledger_end(std::string_view name);
  // options: {"overrides"?: {"SEQ": replacement}, "policy"?: "recorded" |
  // "scripted" | "stop", "script"?: {...}, "spec"?: spec} (agent/replay.hpp).
  // Without overrides a strict replay, with them a what-if. Errors:
  // not_found, invalid_argument (bad options), conflict (the type is
  // unknown here).
  result<replay_report> replay(std::string_view name, const json& options);
  // The prefix a fork at `at` copies: seqs 1..at-1 and the event at `at`
  // to replace when `with_override`, else seqs 1..at. Errors: not_found,
  // invalid_argument (at is 0, past the ledger or compacted away).
  result<fork_source> fork_source_of(std::string_view name, uint64_t at, bool with_override);
  // Creates agent `name` from export lines: body {"events": [line...],
  // "origin"?: "import" (default) | "fork", "parent"?, "at"?, "by"?,
  // "replacement"?, "replaced"?, "unverified"?}. An import is read-only; a
  // fork goes on live (agent/replay.hpp override_input). Asynchronous:
  // `done` runs on a node thread. Errors: invalid_argument (bad lines,
  // hashes that do not match), already_exists.
  void import(std::string name, const json& body, callback<agent_view> done);
  // Folds the events before `before` into a snapshot, writes them to an
  // archive file in <data_dir>/archive (fsynced) and deletes them from
  // the ledger; the chain stays verifiable from the archive's last hash.
  // Errors: not_found, conflict (an imported ledger), invalid_argument
  // (`before` not after the last compaction, or past the last seq: the
  // last event always stays).
  result<compaction_report> compact(std::string_view name, uint64_t before);
  // Applies the retention policy of the agent's type (its latest version's
  // agent_spec retention): compacts before the newest step start that
  // leaves at least keep_events events and every event younger than
  // keep_ms live, when that archives at least 32 events. Errors: as compact().
  result<retention_report> apply_retention(std::string_view name);

 private:
  // The runtime, or null once the node is stopping.
  runtime* live();
  runtime& rt_;
  const std::atomic<bool>& stopped_;
};

}  // namespace keel::actors
