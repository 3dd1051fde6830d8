#include "net/raft/identity.hpp"

#include <string>

#include "base/bytes.hpp"
#include "net/raft/keys.hpp"

namespace keel::raft {

using persistence::family;

result<std::optional<raft_id>> load_identity(persistence::store& db) {
  auto v = db.get(family::raft, identity_key());
  if (!v) return v.error();
  if (!v->has_value()) return std::optional<raft_id>{};
  if ((*v)->size() != 8 || get_u64_be((*v)->data()) == 0)
    return error(code::corruption, "the raft identity of this member's store is not a raft id");
  return std::optional<raft_id>{get_u64_be((*v)->data())};
}

status save_identity(persistence::store& db, raft_id id) {
  std::string value;
  put_u64_be(value, id);
  return db.write({persistence::write_op{family::raft, false, identity_key(), std::move(value)}},
                  true);
}

result<bool> holds_groups(persistence::store& db) {
  // Any key of a data group (every group's keys sort below the metadata
  // group's).
  auto first = db.scan(family::raft, {}, {}, 1);
  if (!first) return first.error();
  return !first->empty() && first->front().first < group_begin(meta_group);
}

start_choice choose_start(std::size_t members, std::size_t without_history,
                          std::size_t with_history) {
  if (with_history > 0) return start_choice::rejoin;
  if (2 * (without_history + 1) > members) return start_choice::bootstrap;
  return start_choice::wait;
}

}  // namespace keel::raft
