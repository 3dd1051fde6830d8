#pragma once
// Keel's own struct raft_io (libraft 0.15, io version 2) for one group:
// the log and the term and vote in the node's RocksDB (log_store), the
// messages through a sender the cluster transport implements, completions
// and ticks on the raft loop.
//
// Threads:
// - libraft calls every raft_io method on the loop thread, and every
//   callback the io makes (tick, recv, append/send/snapshot/async-work
//   completions, close) runs on the loop thread too, posted there, never
//   inside the libraft call that started it.
// - submit's `done` (the journal thread) and async work (a helper thread)
//   only post back to the loop.
// - recv() is called by the owner on the loop thread.
//
// Durability: append, truncate and snapshot_put go through `submit` (the
// journal writer, synced) in call order, so a truncate never overtakes an
// append before it; set_term, set_vote and bootstrap write synchronously
// with fsync before they return, as libraft requires.
//
// Catching up from another replica (docs/replication.md, "Snapshots and
// catch-up"): an InstallSnapshot is not handed to libraft at once. The io
// first replaces the group's data with the sender's (state_fetch.hpp, on a
// thread of its own), then delivers the held message; libraft then stores
// the snapshot's meta (snapshot_put) and restores the marker, which finds
// the data already there. While a fetch runs, and after one failed (the
// group's data is then incomplete, marked in the store so a restart knows
// it too), every message for the group is dropped, which Raft tolerates
// as message loss, so nothing is applied over incomplete data; the next
// AppendEntries or InstallSnapshot starts a fetch from scratch from its
// sender. A later InstallSnapshot during a fetch takes the held one's
// place (delivered only if the fetched data covers what it names).
//
// Leader lease (docs/replication.md, "The leader lease"): every
// AppendEntries leaves with a stamp, the sender's clock_ms at sending. A
// follower that hands one to libraft (which then resets its election
// timer) echoes the newest such stamp of that leader and term in the
// AppendEntriesResults it sends back; echoed() tells the leader what each
// follower echoed. libraft grants no vote while a follower knows a leader,
// and forgets the leader only when its election timer (at least the
// election timeout) runs out, so no other leader can be elected before
// stamp + election timeout for a majority's echoed stamp. A restarted
// member has forgotten whom it heard: it drops vote requests for
// `hold_votes_ms` after start.
//
// Lifetime: the store, the loop and the sender outlive the io; after
// raft_close's callback (which the io runs only once every request it
// accepted has completed) the io may be destroyed.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.hpp"
#include "net/raft/log_store.hpp"
#include "net/raft/loop.hpp"
#include "net/raft/raft_c.hpp"
#include "net/raft/state_fetch.hpp"
#include "net/raft/state_stream.hpp"

namespace keel::raft {

// Where the io hands encoded messages: the cluster transport in the node,
// an in-process switchboard in tests. `to_address` is the receiver's member
// id (raft_server.address). Called on the loop thread; must not block, and
// must not call back into the io synchronously (deliver by posting).
class sender {
 public:
  virtual ~sender() = default;
  virtual void send(std::string_view to_address, group_id g, std::string bytes) = 0;
  // A request to member `to_address` that is answered (an encoded
  // fetch_request of state_stream.hpp; the answer an encoded page). Called
  // on a fetch's own thread; `done` runs once, on any thread, also after
  // the caller stopped waiting. The default has no way to ask.
  virtual void fetch(std::string_view to_address, std::string request,
                     std::function<void(result<std::string>)> done) {
    (void)to_address;
    (void)request;
    done(error(code::unavailable, "this transport cannot fetch a group's state"));
  }
  // A join request (groups.hpp, "Joining") to member `to_address`,
  // answered with what its leader did; `done` as for fetch.
  virtual void join(std::string_view to_address, std::string request,
                    std::function<void(result<std::string>)> done) {
    (void)to_address;
    (void)request;
    done(error(code::unavailable, "this transport cannot carry a join request"));
  }
  // Several messages to one member at once, as frames (append_frame): a
  // transport sends them as one. The default sends each on its own.
  virtual void send_frames(std::string_view to_address, std::string frames);
};

// A batch of messages for one member: per message its group (4 bytes big
// endian), its length (4) and its bytes.
void append_frame(std::string& frames, group_id g, std::string_view message);
// Calls fn(group, message) for each frame; false (and stops) at a frame
// that does not fit what is left.
bool for_each_frame(std::string_view frames,
                    const std::function<void(group_id, std::string_view)>& fn);

// A group's catching up from another replica, as status shows it.
struct fetch_progress {
  bool fetching = false;         // a fetch is under way
  bool incomplete = false;       // the group's data is incomplete (fetching, or one failed)
  uint64_t bytes = 0, keys = 0;  // of the fetch under way
  uint64_t installed = 0;        // fetches that completed since start
  uint64_t failed = 0;           // fetches that failed since start
};

struct io_options {
  group_id group = 0;
  persistence::store* db = nullptr;
  submit_fn submit;
  sender* out = nullptr;
  loop* on = nullptr;
  // Milliseconds of a monotonic clock (raft_io.time).
  std::function<uint64_t()> clock_ms;
  // Catch up by fetching the group's data before a snapshot is installed
  // (groups' state machine: its snapshot is only a marker). false: an
  // InstallSnapshot goes to libraft as it is, for a state machine whose
  // snapshot holds its whole state. Default false.
  bool fetch_state = false;
  // Which group an agent name is in (the agents family is keyed by name).
  group_of_fn group_of;
  // On the loop: the index of the last command the state machine applied;
  // a fetch asks for at least that much state, and at least what the
  // snapshot's marker names (its applied index, not the snapshot's raft
  // index, which may be a configuration change's). Unset: 0.
  std::function<uint64_t()> applied_floor;
  // On the loop, after a fetch wrote the group's data and before the held
  // message reaches libraft (the state machine rereads its keys).
  std::function<void()> on_fetched;
  std::chrono::milliseconds page_timeout = std::chrono::seconds(30);
  // Vote requests (and pre-votes) that arrive sooner than this after the
  // io started are dropped (the leader lease above). 0: none are.
  uint32_t hold_votes_ms = 0;
};

class io {
 public:
  explicit io(io_options opts);
  ~io();
  io(const io&) = delete;
  io& operator=(const io&) = delete;

  // The struct to pass to raft_init. Its impl points at this object.
  raft_io* get() { return &io_; }

  // Delivers a message that arrived from member `from_address`: decodes it
  // and calls libraft's recv callback. Malformed bytes are refused
  // (corruption) and nothing reaches libraft; before start or after close
  // the message is dropped (ok). REQUIRES: on the loop thread.
  status recv(std::string_view from_address, std::string_view bytes);

  // The server this io was initialised as (raft_init's id and address).
  raft_id id() const { return id_; }

  // REQUIRES: on the loop thread.
  fetch_progress progress() const;

  // The newest lease stamp server `id` echoed in `term`: an AppendEntries
  // of this server sent at that clock_ms reached it in that term. 0: none.
  // REQUIRES: on the loop thread.
  uint64_t echoed(raft_id id, uint64_t term) const;

 private:
  friend struct io_methods;
  void begin_request() { ++pending_; }
  // Runs on the loop after a request's callback: finishes a close that was
  // waiting for it.
  void end_request();
  void finish_close_if_idle();
  // Whether the message is the io's to handle (a fetch to start, or
  // dropped while the data is incomplete) rather than libraft's.
  bool intercept(std::string_view from_address, raft_message& msg);
  // The applied index an InstallSnapshot's marker names, and the one the
  // store holds (0: none, or unreadable).
  static uint64_t snapshot_holds(const raft_message& msg);
  uint64_t stored_applied() const;
  // The lease stamp `msg` leaves with; what an arriving one carried.
  uint64_t stamp_for(const raft_message& msg) const;
  void note_stamp(const raft_message& msg, raft_id from, uint64_t stamp);
  void fetch_ended(const status& st);

  io_options opts_;
  raft_io io_{};
  log_store log_;
  raft_id id_ = 0;
  std::string address_;
  raft_index next_index_ = 1;  // where the next append goes
  raft_io_tick_cb tick_ = nullptr;
  raft_io_recv_cb recv_ = nullptr;
  loop::timer_id ticker_ = 0;
  bool closing_ = false;
  bool close_posted_ = false;
  raft_io_close_cb close_cb_ = nullptr;
  std::size_t pending_ = 0;
  std::mt19937_64 random_;
  std::vector<std::thread> workers_;
  // Catching up (loop thread only).
  bool incomplete_ = false;
  std::unique_ptr<state_fetch> fetch_;
  raft_message held_{};  // the InstallSnapshot the running fetch is for
  bool holding_ = false;
  std::string held_from_;
  uint64_t installed_ = 0, failed_ = 0;
  // Leader lease (loop thread only): what followers echoed, per server;
  // as a follower, the newest stamp taken from a leader and term.
  struct echo {
    uint64_t term = 0, stamp = 0;
  };
  std::map<raft_id, echo> echoes_;
  raft_id heard_from_ = 0;
  echo heard_;
  uint64_t votes_from_ = 0;  // clock_ms before which vote requests are dropped
};

}  // namespace keel::raft
