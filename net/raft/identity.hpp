#pragma once
// Which raft id a member uses in its groups, and how a member whose store
// holds no group decides whether it may bootstrap them.
//
// Raft's vote safety assumes a voter never forgets its term, its vote or
// its log. A member whose data directory was lost has forgotten all three,
// so it must not come back as the voter it was: it takes a new raft id (an
// incarnation of its member) and joins its groups as a new server, which
// their leaders add as a voter only once it has caught up, removing the
// id it had (groups.hpp, "Joining"). The original ids, 1..members in
// member id order, are used only by members that bootstrapped the groups.
//
// A member with an empty store cannot tell by itself whether the cluster
// is new or it lost its directory; it asks the others (choose_start).

#include <cstddef>
#include <cstdint>
#include <optional>

#include "base/status.hpp"
#include "net/raft/io.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

// The raft id of incarnation `incarnation` (0: the original) of the member
// whose original id is `original` (1..65535).
inline raft_id incarnation_id(raft_id original, uint32_t incarnation) {
  return static_cast<raft_id>(incarnation) << 16 | original;
}
inline raft_id original_id(raft_id id) {
  return id & 0xFFFF;
}

// The raft id this member's store is bound to; nullopt when none was
// saved. corruption for a value that is not one.
result<std::optional<raft_id>> load_identity(persistence::store& db);
// Saves it, synced, before any group runs under it.
status save_identity(persistence::store& db, raft_id id);

// Whether the store holds any group's raft state (a member of a version
// that saved no identity: it bootstrapped under its original id).
result<bool> holds_groups(persistence::store& db);

// What a member with an empty store does with what the others answered
// (`members` includes itself; it has no history):
//   rejoin    some member has history (an election happened in one of its
//             groups, or it joined under a new incarnation): the cluster
//             ran before, so this member may have voted and forgotten;
//   bootstrap a majority of the members, this one included, answered
//             that they have none: no election can have been won yet;
//   wait      neither: ask again.
enum class start_choice { bootstrap, rejoin, wait };
start_choice choose_start(std::size_t members, std::size_t without_history,
                          std::size_t with_history);

}  // namespace keel::raft
