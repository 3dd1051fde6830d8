#pragma once
// Private to http/server.cpp and http/session.cpp: one server
// connection as the server and the reply paths see it, and the two reply
// paths themselves: `exchange` (the one answer to a request) and
// `stream_channel` (a streamed body's queue). Both may be used from any
// thread and hand their work to the connection's strand, as long as the
// server's gate is open. No Beast or Asio here: the connection's transport
// (plain TCP or TLS) lives in session.cpp.

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/server.hpp"

namespace keel::net::http_detail {

bool iequals(std::string_view a, std::string_view b);
void log_error(const char* what, const std::string& detail);

// Closed by stop() before the io_context stops; respond_fn and run_after go
// through it so nothing reaches an io_context that no longer runs.
struct gate {
  std::mutex mu;
  bool open = true;
};

using write_done = std::function<void(bool ok)>;

// Calls each callback with `ok`; one that throws is logged, never lets an
// exception take a server thread down.
void report(std::vector<write_done> dones, bool ok);

// One accepted connection. The post_* members may be called from any thread
// and run their work on the connection's strand; the others are for the
// server (see each).
class connection : public std::enable_shared_from_this<connection> {
 public:
  virtual ~connection() = default;

  // Reads requests (after the TLS handshake, if any). Called once, on the
  // acceptor's strand, for a connection the server took.
  virtual void start() = 0;
  // Answers 503 without reading a request, then closes. Called instead of
  // start() for a connection past the limit.
  virtual void refuse() = 0;
  // Closes when idle or streaming, otherwise after the current answer.
  virtual void post_shutdown() = 0;
  // Once the server's threads are gone: a stream still open reports closed.
  virtual void abandon() = 0;

  virtual void post_deliver(http_response r) = 0;
  // Sends what the connection's stream channel holds.
  virtual void post_pump() = 0;
};

// A stream's queue, shared by the sink the producer holds and the session
// that sends it. The session drains it on its strand. `scheduled_` is true
// while a drain is posted or running (a write in flight counts), so writes
// from many threads post at most one wake-up between drains and none is
// lost: the drain clears it under the same lock that writes check it.
class stream_channel final : public stream_sink {
 public:
  struct batch {
    std::string data;
    std::vector<write_done> dones;
    bool last = false;  // the body ends after `data`
    bool empty() const { return data.empty() && dones.empty() && !last; }
  };

  stream_channel(std::shared_ptr<gate> g, std::weak_ptr<connection> c)
      : door_(std::move(g)), connection_(std::move(c)) {}

  void write(std::string data, write_done done) override;
  void close() override;
  bool closed() const override;

  // On the session's strand: what to send next. Empty when there is nothing;
  // the next write() or close() then wakes the session again.
  batch take();

  // The stream ended without close(), or close() cannot be honoured: queued
  // writes report false and later ones are refused. Idempotent.
  void fail();

 private:
  void wake();

  const std::shared_ptr<gate> door_;
  // Not the connection's strand itself: a sink may outlive the server, and
  // a strand must not outlive its io_context.
  const std::weak_ptr<connection> connection_;
  mutable std::mutex mu_;
  std::deque<std::pair<std::string, write_done>> queue_;  // guarded by mu_
  bool ended_ = false;                                    // no more writes accepted; guarded by mu_
  bool closing_ = false;     // close() asked for a proper end; guarded by mu_
  bool last_taken_ = false;  // the end was handed to the session; guarded by mu_
  bool scheduled_ = false;   // guarded by mu_
};

// One request's way back to its connection; shared by every copy of the
// respond_fn the handler got. Destroyed unanswered, it answers 500.
class exchange {
 public:
  exchange(std::shared_ptr<gate> g, std::weak_ptr<connection> c)
      : door_(std::move(g)), connection_(std::move(c)) {}
  ~exchange();
  exchange(const exchange&) = delete;
  exchange& operator=(const exchange&) = delete;

  // The first call wins.
  void respond(http_response r);

 private:
  std::shared_ptr<gate> door_;
  std::weak_ptr<connection> connection_;
  std::atomic<bool> done_{false};
};

}  // namespace keel::net::http_detail
