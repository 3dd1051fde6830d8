#pragma once
// Moving agents between nodes: everything one agent has on disk, in a form
// another node can take in. Agent ids are node-local, so keys that embed the
// id (ledger, snapshots, inbox, dedupe, effects, timers) are rewritten to
// the receiving node's id for the same name; blobs are keyed by content and
// travel as they are. CAF-free; blocking store reads and writes.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

struct agent_bundle {
  std::string name;
  // The agent's directory entry, ledger records, snapshots, inbox, dedupe
  // entries, effect markers and timers, keyed as at the source, plus every
  // blob its events and snapshots refer to.
  std::vector<persistence::write_op> kvs;

  std::size_t bytes() const;
};

// Reads one agent's data. Errors: not_found, corruption, io_error.
result<agent_bundle> export_agent(persistence::store& db, std::string_view name);

// A bundle is written on the receiving node, and erased on the sending
// one, by ledger::batch_builder (put_bundle, erase_bundle).

// Names of the agents whose directory entries satisfy `pick`, in name order.
result<std::vector<std::string>> agents_where(persistence::store& db,
                                              const std::function<bool(std::string_view)>& pick);

// Bundles as bytes for the wire: a simple length-prefixed encoding.
std::string encode_bundles(const std::vector<agent_bundle>& bundles);
result<std::vector<agent_bundle>> decode_bundles(std::string_view bytes);

}  // namespace keel::actors
