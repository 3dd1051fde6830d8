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
#include <string_view>

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
inline uint32_t incarnation_of(raft_id id) {
  return static_cast<uint32_t>(id >> 16);
}
// A new incarnation: the seconds since 2020-01-01 UTC (at least 1), so a
// member's later incarnation has a higher number than its earlier ones as
// long as its clock does not go back by more than the time between them.
uint32_t new_incarnation();

// The raft id this member's store is bound to (the meta family's
// "raft/self"); nullopt when none was saved. corruption for a value that
// is not one.
result<std::optional<raft_id>> load_identity(persistence::store& db);
// Saves it, synced, before any group runs under it.
status save_identity(persistence::store& db, raft_id id);

// Whether the store holds any group's raft state (a member of a version
// that saved no identity: it bootstrapped under its original id).
result<bool> holds_groups(persistence::store& db);

// What a member answers another that asks whether the cluster ran:
//   empty    its own store holds no group yet (it is asking too): it
//            knows nothing;
//   fresh    it bootstrapped under its original id and none of its groups
//            ever held an election (every term is the bootstrap's 1);
//   history  one of its groups held an election, or it runs under an
//            incarnation.
enum class cluster_memory { empty, fresh, history };
const char* to_string(cluster_memory m);
std::optional<cluster_memory> cluster_memory_from(std::string_view s);

// What a member with an empty store does with the answers of the `others`
// (every member but itself; it does not count: it is the one that may have
// forgotten):
//   rejoin    some member has history: the cluster ran, so this member may
//             have voted and forgotten;
//   bootstrap every other member answered, and none has history: a vote is
//             given only to a candidate whose higher term is durable on
//             it, and none has one, so this member never voted and no
//             entry was ever committed;
//   wait      some have not answered yet: ask again.
// So a new cluster starts once all its members are up.
enum class start_choice { bootstrap, rejoin, wait };
start_choice choose_start(std::size_t others, std::size_t empty, std::size_t fresh,
                          std::size_t history);

}  // namespace keel::raft
