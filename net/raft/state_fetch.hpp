#pragma once
// A follower's side of catching up from another replica's state
// (state_stream.hpp): on its own thread, marks the group's data incomplete
// and erases it, then asks `from` for the group's state page by page and
// writes each page as it arrives (so memory holds one page), and ends
// with a synced write that clears the incomplete mark.
//
// Threads: the fetch runs on a thread of its own; `done` runs there, once,
// as its last act. progress() may be read from any thread.
// Lifetime: the store and the sender outlive the fetch; the destructor
// cancels it (it stops within about 50 ms, done(unavailable)) and joins.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "base/status.hpp"
#include "net/raft/state_stream.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

class sender;

struct state_fetch_options {
  persistence::store* db = nullptr;
  group_id group = 0;
  group_of_fn group_of;
  sender* out = nullptr;
  std::string from;           // the member asked (the snapshot's sender)
  uint64_t marker_index = 0;  // the state must be applied this far
  std::chrono::milliseconds page_timeout = std::chrono::seconds(30);
};

class state_fetch {
 public:
  state_fetch(state_fetch_options o, std::function<void(const status&)> done);
  ~state_fetch();
  state_fetch(const state_fetch&) = delete;
  state_fetch& operator=(const state_fetch&) = delete;

  // Makes the fetch stop soon (done(unavailable)); any thread.
  void cancel() { cancel_.store(true); }

  uint64_t bytes() const { return bytes_.load(); }
  uint64_t keys() const { return keys_.load(); }

 private:
  status run();
  result<std::string> ask(const std::string& request);

  state_fetch_options opts_;
  std::atomic<bool> cancel_{false};
  std::atomic<uint64_t> bytes_{0}, keys_{0};
  std::thread thread_;
};

}  // namespace keel::raft
