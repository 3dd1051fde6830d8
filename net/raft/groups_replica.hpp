#pragma once
// Private to groups.cpp and groups_propose.cpp: the state of one group on
// one node, and the heap requests that carry callbacks through libraft.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.hpp"
#include "net/raft/entry.hpp"
#include "net/raft/group_fsm.hpp"
#include "net/raft/groups.hpp"
#include "net/raft/io.hpp"

namespace keel::raft {

using done_fn = std::function<void(const status&)>;

// The clock of lease stamps and lease_until (io_options.clock_ms).
inline uint64_t lease_clock_ms() {
  return static_cast<uint64_t>(mono_ns() / 1'000'000);
}

struct groups::replica {
  group_spec spec;
  std::unique_ptr<raft::io> io;
  std::unique_ptr<group_fsm> fsm;
  struct ::raft r {};

  // Loop thread only.
  bool initialised = false;      // raft_init succeeded: raft_close is owed
  bool started = false;          // raft_start succeeded
  bool closing = false;          // raft_close called
  uint64_t lead_term = 0;        // the term whose leader_begin this node proposed
  bool begun = false;            // ... and it is applied here
  bool ready = false;            // on_lead ran for lead_term (and no on_lose since)
  bool transferring = false;     // handing the group to its preferred replica ...
  bool transfer_called = false;  // ... and raft_transfer is in flight
  std::chrono::steady_clock::time_point transfer_at{};  // when to call it
  std::chrono::steady_clock::time_point ready_since{};
  std::chrono::steady_clock::time_point last_transfer{};
  bool barrier_in_flight = false;
  // Joining (groups.hpp): on a join spec, whether this node is a voter of
  // the group's configuration yet and when it asks next; on a leader, a
  // configuration change it started is in flight.
  bool joined = false;
  std::chrono::steady_clock::time_point next_ask{};
  bool changing = false;
  // On a leader: a member catching up as a standby, made a voter from
  // observe() as soon as its log matches (not at its next ask).
  raft_id catching_up = 0;
  std::string catching_up_address;
  // What the leader last answered a join ask (status); shared with the
  // answers' callbacks, which may come after this object is gone.
  struct join_note {
    std::mutex mu;
    std::string answer;
  };
  std::shared_ptr<join_note> joining = std::make_shared<join_note>();
  uint64_t next_proposal = 1;       // proposal ids inside this group's entries
  std::function<void()> on_closed;  // set by stop() before raft_close

  // Any thread.
  std::atomic<uint64_t> leading{0};      // 0: not ready as leader
  std::atomic<uint64_t> lease_until{0};  // clock_ms at which the lease runs out

  // Guards everything below; never held while calling out.
  mutable std::mutex mu;
  std::condition_variable ids_changed;
  bool stopped = false;
  std::string leader;  // as last observed on the loop
  struct queued {
    uint64_t term;
    persistence::write_set ops;
    done_fn done;
  };
  std::vector<queued> queue;
  bool drain_posted = false;
  std::vector<done_fn> barrier_waiting;
  bool barrier_posted = false;
  // Agent ids of the ready term `ids_term` (0: none): next <= usable, ids
  // below `usable` are this term's to hand out; `requesting` while a
  // reserve_ids entry is proposed and not yet applied or failed.
  uint64_t ids_term = 0;
  uint64_t next_id = 0;
  uint64_t usable = 0;
  bool requesting = false;
  bool reserve_posted = false;  // a reserve task is queued on the loop
};

// What a raft_apply carries: the request libraft holds, and what its
// callback needs. Heap-allocated; the callback deletes it.
struct pending_entry {
  apply_request req{};
  groups* owner = nullptr;
  groups::replica* group = nullptr;
  entry_kind kind = entry_kind::writes;
  uint64_t term = 0;
  uint64_t limit = 0;          // reserve_ids
  std::vector<done_fn> dones;  // writes
};

// A configuration change of a join (groups_join.cpp).
struct pending_change {
  raft_change req{};
  groups* owner = nullptr;
  groups::replica* group = nullptr;
  raft_id id = 0;       // the joining server
  std::string address;  // its member id
  std::string step;
};

// A leadership transfer to the preferred replica (groups.cpp).
struct pending_transfer {
  transfer_request req{};
  groups* owner = nullptr;
  groups::replica* group = nullptr;
};

struct pending_barrier {
  barrier_request req{};
  groups* owner = nullptr;
  groups::replica* group = nullptr;
  std::vector<done_fn> dones;
};

// "voter", "standby", "spare" (libraft's RAFT_VOTER ...).
const char* server_role_name(int role);

// "group 3: <why>", unavailable.
status group_unavailable(group_id g, const std::string& why);

}  // namespace keel::raft
