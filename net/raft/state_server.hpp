#pragma once
// Serves groups' state to followers catching up (state_stream.hpp): each
// fetch is a session over one consistent read view of the store, so every
// page of it comes from the same moment; requests run on the server's own
// thread, never on the raft loop.
//
// A session ends when its last page is served, when it is idle for
// `idle_timeout`, or when a fifth one opens (the oldest goes). Refused
// (unavailable) with a reason the follower logs: a group this node is not
// a replica of, a store whose copy of the group is incomplete (a fetch of
// its own is under way) or applied below the marker, a session that ended.
//
// Thread-safety: serve() from any thread (stop() too); `respond` runs on the server's
// thread. Lifetime: the store outlives the server; the destructor answers
// stops.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/status.hpp"
#include "net/raft/state_stream.hpp"
#include "persistence/store.hpp"

namespace keel::raft {

struct state_server_options {
  persistence::store* db = nullptr;
  group_of_fn group_of;
  std::function<bool(group_id)> serves;  // whether this node replicates g
  std::size_t page_bytes = 1 << 20;
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
};

class state_server {
 public:
  using respond_fn = std::function<void(result<std::string>)>;
  explicit state_server(state_server_options o);
  ~state_server();
  state_server(const state_server&) = delete;
  state_server& operator=(const state_server&) = delete;

  // Answers what is queued with unavailable, ends every session and joins
  // the thread; serve() answers unavailable from then on. Idempotent; not
  // from two threads at once.
  void stop();

  // An encoded fetch_request from member `from`; `respond` gets the
  // encoded page or the error.
  void serve(std::string from, std::string request, respond_fn respond);

 private:
  struct session {
    group_id group = 0;
    uint64_t applied = 0;
    std::unique_ptr<persistence::read_view> view;
    std::chrono::steady_clock::time_point used;
  };
  struct job {
    std::string from, request;
    respond_fn respond;
  };
  void run();
  result<std::string> answer(const job& j);
  result<uint64_t> open_session(group_id g, uint64_t marker);

  state_server_options opts_;
  std::map<uint64_t, session> sessions_;  // server thread only
  uint64_t next_session_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<job> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace keel::raft
