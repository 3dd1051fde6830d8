#pragma once
// Where a replicated node's agent writes go instead of the journal
// (docs/replication.md, "The write path"). The cluster layer implements it
// over Raft groups (net/raft); a node without a cluster has none, and its
// shells submit to the journal as before.
//
// Thread-safety: every method may be called from any thread (shells call it
// from CAF threads). `done` callbacks run on the replicator's own thread, or
// at once on the caller's when the answer is known at once (not leading),
// and must be quick (a shell's is one message to itself).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.hpp"
#include "persistence/store.hpp"

namespace keel::actors {

class replicator {
 public:
  using done_fn = std::function<void(const status&)>;

  virtual ~replicator() = default;

  // The group an agent of this name belongs to.
  virtual uint32_t group_of(std::string_view agent_name) const = 0;

  // The term in which this node leads `group` and may run its agents: set
  // once the group is ready (the term's first entry is applied here, so is
  // everything before it); nullopt when this node does not lead it.
  virtual std::optional<uint64_t> leading(uint32_t group) const = 0;

  // A new agent's id in `group`, never handed out before in the group, on
  // any leader: the group's number in the top 16 bits (group + 1), so ids
  // of different groups never meet in one store. unavailable when this
  // node cannot reserve ids for the group now (it does not lead it).
  virtual result<uint64_t> allocate_agent_id(uint32_t group) = 0;

  // Proposes `ops`, written by shells activated in `term`, to `group`.
  // `done` runs once: ok when they are committed and applied on this node;
  // unavailable when they will not be (leadership lost, the group's term
  // moved past `term`, the group stopped). Like a failed journal write, an
  // unavailable proposal may still become durable under a later leader:
  // the shell drops its memory and the next activation reloads.
  virtual void propose(uint32_t group, uint64_t term, persistence::write_set ops, done_fn done) = 0;
};

}  // namespace keel::actors
