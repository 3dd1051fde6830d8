#include "net/raft/identity.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "base/bytes.hpp"
#include "net/raft/keys.hpp"

namespace keel::raft {

using persistence::family;

namespace {
constexpr std::string_view identity_key = "raft/self";
}  // namespace

result<std::optional<raft_id>> load_identity(persistence::store& db) {
  auto v = db.get(family::meta, identity_key);
  if (!v) return v.error();
  if (!v->has_value()) return std::optional<raft_id>{};
  if ((*v)->size() != 8 || get_u64_be((*v)->data()) == 0)
    return error(code::corruption, "the raft identity of this member's store is not a raft id");
  return std::optional<raft_id>{get_u64_be((*v)->data())};
}

status save_identity(persistence::store& db, raft_id id) {
  std::string value;
  put_u64_be(value, id);
  return db.write(
      {persistence::write_op{family::meta, false, std::string(identity_key), std::move(value)}},
      true);
}

result<bool> holds_groups(persistence::store& db) {
  auto first = db.scan(family::raft, {}, {}, 1);
  if (!first) return first.error();
  return !first->empty();
}

const char* to_string(cluster_memory m) {
  switch (m) {
    case cluster_memory::empty:
      return "empty";
    case cluster_memory::fresh:
      return "fresh";
    default:
      return "history";
  }
}

std::optional<cluster_memory> cluster_memory_from(std::string_view s) {
  for (auto m : {cluster_memory::empty, cluster_memory::fresh, cluster_memory::history})
    if (s == to_string(m)) return m;
  return std::nullopt;
}

uint32_t new_incarnation() {
  constexpr int64_t epoch_2020 = 1'577'836'800;  // 2020-01-01T00:00:00Z
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return static_cast<uint32_t>(std::clamp<int64_t>(now - epoch_2020, 1, UINT32_MAX));
}

start_choice choose_start(std::size_t others, std::size_t empty, std::size_t fresh,
                          std::size_t history) {
  if (history > 0) return start_choice::rejoin;
  if (empty + fresh >= others) return start_choice::bootstrap;
  return start_choice::wait;
}

}  // namespace keel::raft
