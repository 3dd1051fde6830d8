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
// Lifetime: the store, the loop and the sender outlive the io; after
// raft_close's callback (which the io runs only once every request it
// accepted has completed) the io may be destroyed.

#include <cstdint>
#include <functional>
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

namespace keel::raft {

// Where the io hands encoded messages: the cluster transport in the node,
// an in-process switchboard in tests. `to_address` is the receiver's member
// id (raft_server.address). Called on the loop thread; must not block, and
// must not call back into the io synchronously (deliver by posting).
class sender {
 public:
  virtual ~sender() = default;
  virtual void send(std::string_view to_address, group_id g, std::string bytes) = 0;
};

struct io_options {
  group_id group = 0;
  persistence::store* db = nullptr;
  submit_fn submit;
  sender* out = nullptr;
  loop* on = nullptr;
  // Milliseconds of a monotonic clock (raft_io.time).
  std::function<uint64_t()> clock_ms;
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

 private:
  friend struct io_methods;
  void begin_request() { ++pending_; }
  // Runs on the loop after a request's callback: finishes a close that was
  // waiting for it.
  void end_request();
  void finish_close_if_idle();

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
};

}  // namespace keel::raft
