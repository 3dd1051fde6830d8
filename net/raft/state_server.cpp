#include "net/raft/state_server.hpp"

#include <cassert>
#include <utility>

#include "base/bytes.hpp"
#include "net/raft/keys.hpp"

namespace keel::raft {

namespace {
constexpr std::size_t max_sessions = 4;
}  // namespace

state_server::state_server(state_server_options o) : opts_(std::move(o)) {
  assert(opts_.db && opts_.serves);
  thread_ = std::thread([this] { run(); });
}

state_server::~state_server() {
  stop();
}

void state_server::stop() {
  std::deque<job> left;
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    left.swap(queue_);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& j : left) j.respond(error(code::unavailable, "the node is stopping"));
  sessions_.clear();
}

void state_server::serve(std::string from, std::string request, respond_fn respond) {
  {
    std::lock_guard lk(mu_);
    if (!stopping_) {
      queue_.push_back({std::move(from), std::move(request), std::move(respond)});
      cv_.notify_one();
      return;
    }
  }
  respond(error(code::unavailable, "the node is stopping"));
}

void state_server::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait_for(lk, opts_.idle_timeout, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    // Idle sessions end (their snapshots pin old versions in RocksDB).
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(sessions_,
                  [&](const auto& s) { return now - s.second.used > opts_.idle_timeout; });
    if (queue_.empty()) continue;
    job j = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    j.respond(answer(j));
    lk.lock();
  }
}

result<uint64_t> state_server::open_session(group_id g, uint64_t marker) {
  const std::string name = "group " + std::to_string(g) + ": ";
  auto view = opts_.db->view();
  if (!view) return view.error();
  auto fetching = (*view)->get(persistence::family::raft, fetching_key(g));
  if (!fetching) return fetching.error();
  if (fetching->has_value())
    return error(code::unavailable, name + "this replica is itself fetching the group's state");
  auto applied = (*view)->get(persistence::family::raft, applied_key(g));
  if (!applied) return applied.error();
  const uint64_t at =
      applied->has_value() && (*applied)->size() == 8 ? get_u64_be((*applied)->data()) : 0;
  if (at < marker)
    return error(code::unavailable, name + "applied here up to " + std::to_string(at) +
                                        ", below the snapshot's " + std::to_string(marker));
  if (sessions_.size() >= max_sessions) sessions_.erase(sessions_.begin());
  const uint64_t id = next_session_++;
  sessions_[id] = {g, at, std::move(*view), std::chrono::steady_clock::now()};
  return id;
}

result<std::string> state_server::answer(const job& j) {
  auto req = decode_request(j.request);
  if (!req) return req.error();
  if (!opts_.serves(req->group))
    return error(code::unavailable,
                 "group " + std::to_string(req->group) + " has no replica on this node");
  uint64_t id = req->session;
  if (id == 0) {
    auto opened = open_session(req->group, req->marker_index);
    if (!opened) return opened.error();
    id = *opened;
  }
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.group != req->group)
    return error(code::unavailable, "group " + std::to_string(req->group) +
                                        ": the state session ended; start the fetch over");
  session& s = it->second;
  s.used = std::chrono::steady_clock::now();
  auto page = read_state_page(*s.view, req->group, opts_.group_of, req->cursor, opts_.page_bytes);
  if (!page) {
    sessions_.erase(it);
    return page.error();
  }
  page->session = id;
  page->applied = s.applied;
  if (page->done) sessions_.erase(it);
  return encode_page(*page);
}

}  // namespace keel::raft
