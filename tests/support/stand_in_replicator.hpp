#pragma once
// A replicator (actors/replicator.hpp) in process, for tests of what a
// node's shells do with its answers: it applies accepted proposals through
// the node's journal (what a group of one does), and a test can make it
// stop leading (every group at once) or fence the next proposals. The real
// one is net/raft's.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/node.hpp"
#include "actors/replicator.hpp"
#include "config/cluster_config.hpp"

namespace keel::test {

class stand_in_replicator final : public actors::replicator {
 public:
  struct proposal {
    uint32_t group;
    uint64_t term;
    std::size_t ops;
  };

  actors::node* n = nullptr;  // applies accepted proposals through its journal
  std::atomic<bool> lead{true};
  std::atomic<uint64_t> term{5};
  std::atomic<int> fence_next{0};

  uint32_t group_of(std::string_view name) const override {
    return config::group_of_shard(config::shard_of(name, 256), 4);
  }
  std::optional<uint64_t> leading(uint32_t) const override {
    if (!lead) return std::nullopt;
    return term.load();
  }
  result<uint64_t> allocate_agent_id(uint32_t group) override {
    return (uint64_t{group} + 1) << 48 | ++next_id_;
  }
  void propose(uint32_t group, uint64_t t, persistence::write_set ops, done_fn done) override {
    {
      std::lock_guard lk(mu_);
      seen_.push_back({group, t, ops.size()});
    }
    if (fence_next > 0) {
      --fence_next;
      done(error(code::unavailable, "fenced: group " + std::to_string(group) + " moved past term " +
                                        std::to_string(t)));
      return;
    }
    n->commit(std::move(ops), std::move(done));
  }
  std::vector<proposal> seen() {
    std::lock_guard lk(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  std::vector<proposal> seen_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace keel::test
