#pragma once
// Every replicated group of one node, driven on one raft loop: each group's
// io, state machine and libraft instance; proposals batched into entries;
// leadership (a term is ready once its leader_begin entry is applied here);
// the group's agent-id blocks; read-index barriers; a status snapshot.
//
// Threads: every public method may be called from any thread except stop()
// and the destructor (not from the loop thread, i.e. not from a callback).
// `done` callbacks run on the loop thread, or at once on the caller's thread
// when the answer is known without the loop (not leader, stopped); they must
// be quick and must not block on this object.
//
// Leadership: leading(g) turns to T once this node leads g in term T, the
// term's leader_begin entry is applied here (so is every entry before it)
// and the node holds the group's lease; then ids are reserved and
// on_lead(g, T) runs. As soon as the loop sees the node is no longer
// leader in T (a higher term, a step-down by check-quorum, stop()) or its
// lease lapsed, leading(g) turns false, then on_lose(g) runs. A lapsed
// lease that comes back while the node still leads in T makes it ready
// again (on_lead once more). on_lose runs only after an on_lead for the
// same group.
//
// The lease (io.hpp, "Leader lease"): the leader holds it while a
// majority of voters (itself included) echoed an AppendEntries it sent
// less than lease_ms ago, lease_ms = election timeout - heartbeat -
// election timeout / 10. No other leader can be elected before one
// election timeout after that send, so the lease lapses (the loop looks
// every heartbeat / 2) before any other member can lead: the heartbeat
// covers the loop's look and what on_lose does (abort the group's calls),
// the tenth the clocks' rate drift.
//
// Joining: a member whose spec says `join` starts the group without a
// configuration (it can neither campaign nor vote usefully) and asks every
// other voter of the spec, every election timeout / 2, to take it in. The
// leader, for a request from a member listed in the spec, moves the group
// one step at a time, each a configuration change committed through the
// group's log: it removes the server at the member's address under another
// id (the incarnation that lost its data), adds the new id as a spare,
// makes it a standby (it gets the log, and the group's state streamed
// first when it is far behind), and once its log matches the leader's,
// a voter. A committed step starts the next at once; asks only restart a
// sequence a new leader does not know of.
//
// Lifetime: `db`, the sender and `submit`'s writer must outlive the groups
// object until stop() returns; stop() closes every libraft instance and
// waits for its close, so nothing calls them afterwards.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.hpp"
#include "net/raft/io.hpp"
#include "net/raft/keys.hpp"
#include "net/raft/log_store.hpp"
#include "net/raft/loop.hpp"
#include "net/raft/state_server.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

struct group_spec {
  group_id id = 0;
  // Every voter of the group as bootstrapped: raft id and address (the
  // member id). The first is the group's preferred leader.
  std::vector<std::pair<raft_id, std::string>> voters;
  // This member lost its copy of the group and runs it under a new raft id
  // (identity.hpp): it does not bootstrap, and asks the group's leader to
  // take it in (see "Joining" below) until it is a voter.
  bool join = false;
};

struct groups_options {
  std::string self;                // this node's member id (its raft address)
  raft_id self_id = 0;             // this node's raft id (the same in every group)
  std::vector<group_spec> groups;  // the groups this node is a replica of
  persistence::store* db = nullptr;
  submit_fn submit;       // the journal writer's submit (synced)
  sender* out = nullptr;  // where messages go (the cluster transport)
  uint32_t election_timeout_ms = 1000;
  uint32_t heartbeat_ms = 100;
  // A leader that is not its group's preferred replica (the first voter of
  // its spec) hands leadership to it once it is a caught-up voter heard
  // from recently, this long after becoming ready and at most once per this
  // long: load spreads again after a failed member returns. 0: never.
  uint32_t transfer_back_ms = 10'000;
  unsigned snapshot_threshold = 512;
  unsigned snapshot_trailing = 256;
  // How long a leader waits for a follower to install a snapshot before it
  // sends it again (the follower fetches the group's state meanwhile and
  // drops the copies; the snapshot itself is a marker of a few bytes). It
  // is also how long a follower that restarted while a snapshot was on its
  // way waits: the leader ignores its answers until then. Short, so such a
  // follower is not left behind for long.
  uint32_t install_snapshot_timeout_ms = 3'000;
  // Groups to recover before they start (an operator's last resort for a
  // group that lost a majority of its replicas' data): group -> the index
  // its log here ends at, which must match, so a recovery given again
  // after the group moved on is refused. Its configuration becomes this
  // member alone, as a voter, through a configuration entry appended to
  // its log; the others join again (see "Joining").
  std::map<group_id, uint64_t> recover;
  // Which group an agent name is in: a fetch copies and erases the agents
  // family by it. Unset: no agent records are copied.
  group_of_fn group_of;
  // A page of a state fetch (state_stream.hpp): its size, and how long a
  // follower waits for one.
  std::size_t fetch_page_bytes = 1 << 20;
  uint32_t fetch_page_timeout_ms = 30'000;
  // Leadership changes, on the loop thread, quick (the node wakes the
  // group's agents / evicts them). on_lead runs once leading(g) is T;
  // on_lose once leading(g) is already false again.
  std::function<void(group_id, uint64_t term)> on_lead;
  std::function<void(group_id)> on_lose;
};

struct group_status {
  group_id id = 0;
  std::string role;  // "leader", "follower", "candidate", "unavailable"
  uint64_t term = 0;
  std::string leader;  // member id of the leader this node knows ("" none)
  uint64_t last_index = 0, commit_index = 0, applied_index = 0;
  // A member that joins under a new raft id: "" once it is a voter (or it
  // never joined), else what the leader last answered it.
  std::string joining;
  std::optional<uint64_t> leading;  // = leading(id)
  struct replica {
    std::string member;
    raft_id id = 0;
    uint64_t match_index = 0;
    std::string role;  // "voter", "standby" (catching up to be one), "spare"
  };
  std::vector<replica> replicas;  // on the leader: each server's match index
  fetch_progress fetch;           // catching up from another replica's state
};

// Agent ids are handed out from blocks of this many, reserved through the
// group's log.
inline constexpr uint64_t id_block = 4096;

class groups {
 public:
  // Opens every group (io, group_fsm, raft_init), bootstraps a group whose
  // store holds no state for it with its voters (the same configuration on
  // every replica, so concurrent bootstraps agree), recovers those listed
  // in `recover`, and starts it. Errors: what loading a group's log or
  // state machine met (corruption, io_error), naming the group;
  // invalid_argument for options that cannot work, or a recovery whose
  // index is not where the group's log ends.
  static result<std::unique_ptr<groups>> start(groups_options o);
  ~groups();
  groups(const groups&) = delete;
  groups& operator=(const groups&) = delete;

  // Closes every group and waits for libraft's close callbacks, then stops
  // the loop. Proposals, barriers and id waits still pending end
  // unavailable. Idempotent. REQUIRES: not on the loop thread, and not
  // called from two threads at once.
  void stop();

  // A message for group g from member `from`: handed to that group's io on
  // the loop. A group this node is not a replica of: dropped.
  void recv(std::string from, group_id g, std::string bytes);
  // A batch of messages from `from` (frames, io.hpp append_frame): handed
  // to their groups' ios in one task of the loop. A malformed tail is
  // dropped (Raft sends again).
  void recv_frames(std::string from, std::string frames);

  // The term this node leads g in once ready and while it holds g's lease;
  // nullopt otherwise.
  std::optional<uint64_t> leading(group_id g) const;
  // The member id of g's leader as this node last saw it ("" unknown).
  std::string leader_of(group_id g) const;

  // Proposes `ops` written by shells activated in `term`. done(ok) once the
  // entry is applied on this node. unavailable (naming the group and why)
  // when this node is not a replica or not ready as leader in `term`
  // (at once), when libraft refuses or loses the entry, when the entry is
  // fenced (the group's term of record is not `term`), or on stop().
  void propose(group_id g, uint64_t term, persistence::write_set ops,
               std::function<void(const status&)> done);

  // (uint64(g) + 1) << 48 | n, with n never handed out before in the group
  // by any leader: below the limit committed in this leader's term and at
  // or above the limit the previous leaders committed. Waits up to 5 s for
  // a block to be reserved when the current one is used up. unavailable
  // when not ready as leader, or no block was reserved in time.
  result<uint64_t> allocate_agent_id(group_id g);

  // Read index: done(ok) once everything committed before the call is
  // applied here while this node still leads g; unavailable otherwise.
  // Callers that arrive while a barrier is in flight share the next one.
  void barrier(group_id g, std::function<void(const status&)> done);

  // A state fetch request (state_stream.hpp) from member `from`, served off
  // the loop from a consistent view of the store; `respond` (any thread)
  // gets the encoded page or why not (unavailable).
  void serve_fetch(std::string from, std::string request,
                   std::function<void(result<std::string>)> respond);

  // A join request (encode_join_request) from member `from`: on the
  // group's ready leader, the next step for it (see "Joining") and, as the
  // answer, what that step is ("voter" once it is one); unavailable when
  // not the leader or a change is in flight, unauthorized for a member
  // the group's spec does not list.
  void serve_join(std::string from, std::string request,
                  std::function<void(result<std::string>)> respond);

  // Whether any group here had an election (a term past the bootstrap's):
  // the cluster ran, so a member with an empty store must join, not
  // bootstrap (identity.hpp).
  bool had_election() const { return had_election_.load(); }

  // One consistent copy per group, taken on the loop (waits up to 5 s;
  // after stop() or on a timeout every group reads "unavailable").
  std::vector<group_status> status() const;

  struct replica;  // one group's state (groups_replica.hpp)

 private:
  friend struct groups_callbacks;  // libraft's C callbacks (groups_propose.cpp)
  explicit groups(groups_options o);
  replica* find(group_id g) const;

  // On the loop.
  keel::status open_all();
  keel::status recover(replica& r, uint64_t at);
  void observe_all();
  void observe(replica& r);
  void begin_leading(replica& r, uint64_t term);
  void begin_failed(replica& r, uint64_t term);
  void become_ready(replica& r, uint64_t term);
  void make_ready(replica& r);
  void unready(replica& r);
  void stop_leading(replica& r);
  // When r's lease runs out (clock_ms), from what its voters echoed.
  uint64_t lease_until(const replica& r) const;
  void maybe_hand_back(replica& r);
  void start_transfer(replica& r);
  void drain(replica& r);
  void reserve_ids(replica& r, uint64_t term);
  void start_barrier(replica& r);
  void ask_to_join(replica& r);
  void promote_caught_up(replica& r);
  // The leader's next step for the server `id` at `address`; what it is.
  result<std::string> advance_join(replica& r, raft_id id, const std::string& address);
  // The raft id the group's preferred replica has in its configuration now
  // (0: none).
  raft_id preferred_id(const replica& r) const;
  group_status status_of(const replica& r) const;

  // Gathers the messages every group sends in one turn of the loop into one
  // send per member (heartbeats of all groups tick together). Declared
  // before the loop: it outlives the loop's thread.
  class batcher;
  std::unique_ptr<batcher> batch_;
  groups_options opts_;
  std::unique_ptr<loop> loop_;
  std::unique_ptr<state_server> server_;
  std::vector<std::unique_ptr<replica>> replicas_;
  loop::timer_id observer_ = 0;
  bool stopped_ = false;  // stop() ran; touched by stop() only
  std::atomic<bool> had_election_{false};
};

// A join request: the group and the raft id the asking member runs it under.
std::string encode_join_request(group_id g, raft_id id);
result<std::pair<group_id, raft_id>> decode_join_request(std::string_view bytes);

}  // namespace keel::raft
