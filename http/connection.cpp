#include "http/connection.hpp"

#include <cstdio>
#include <exception>

#include "base/log.hpp"

namespace keel::net::http_detail {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

void log_error(const char* what, const std::string& detail) {
  log::error(std::string("http: ") + what + ": " + detail);
}

void report(std::vector<write_done> dones, bool ok) {
  for (auto& done : dones) {
    try {
      done(ok);
    } catch (const std::exception& e) {
      log_error("stream write callback threw", e.what());
    }
  }
}

void stream_channel::write(std::string data, write_done done) {
  bool refused = false;
  {
    std::lock_guard lock(mu_);
    if (ended_) {
      refused = true;
    } else {
      queue_.emplace_back(std::move(data), std::move(done));
      if (std::exchange(scheduled_, true)) return;
    }
  }
  if (!refused) return wake();
  if (done) done(false);
}

void stream_channel::close() {
  {
    std::lock_guard lock(mu_);
    if (ended_) return;
    ended_ = true;
    closing_ = true;
    if (std::exchange(scheduled_, true)) return;
  }
  wake();
}

bool stream_channel::closed() const {
  std::lock_guard lock(mu_);
  return ended_;
}

stream_channel::batch stream_channel::take() {
  // Queued writes are sent together up to about this many bytes: fewer
  // system calls for a fast producer, bounded copies for a backlog.
  constexpr std::size_t batch_bytes = 64 * 1024;
  std::lock_guard lock(mu_);
  batch b;
  while (!queue_.empty() && b.data.size() < batch_bytes) {
    auto& [data, done] = queue_.front();
    b.data += data;
    if (done) b.dones.push_back(std::move(done));
    queue_.pop_front();
  }
  if (queue_.empty() && closing_ && !last_taken_) b.last = last_taken_ = true;
  if (b.empty()) scheduled_ = false;
  return b;
}

void stream_channel::fail() {
  std::deque<std::pair<std::string, write_done>> dropped;
  {
    std::lock_guard lock(mu_);
    ended_ = true;
    last_taken_ = true;
    dropped.swap(queue_);
  }
  std::vector<write_done> dones;
  for (auto& [data, done] : dropped)
    if (done) dones.push_back(std::move(done));
  report(std::move(dones), false);
}

void stream_channel::wake() {
  std::lock_guard lock(door_->mu);
  // After stop() closed the door it fails every channel still open itself.
  if (!door_->open) return;
  if (auto c = connection_.lock()) c->post_pump();
}

exchange::~exchange() {
  if (!done_.load())
    respond({500,
             "application/json",
             error_json("internal", "the request was dropped without an answer"),
             {}});
}

void exchange::respond(http_response r) {
  if (done_.exchange(true)) return;
  std::lock_guard lock(door_->mu);
  if (!door_->open) return;
  if (auto c = connection_.lock()) c->post_deliver(std::move(r));
}

}  // namespace keel::net::http_detail
