#pragma once
// abort_signal: a one-way flag that tells a blocking call to give up (a node
// that stops leading an agent's group aborts the effect calls it has in
// flight for it, actors/node.hpp abort_effects).
//
// raise() sets it, once and for good, from any thread. A runner that blocks
// either asks raised() between steps, waits on it with wait_for(), or hooks
// a wake-up on it with on_raise() (write to a pipe its poll() watches, post
// a close to its io_context): no polling is needed, a hook runs in the
// raising thread at the moment of raise().
//
// Thread-safety: every member may be called concurrently from any thread.
// Lifetime: a hook must be destroyed before what its callback touches (its
// destructor waits for a callback running in another thread), and before
// the signal.

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>

namespace keel {

class abort_signal {
 public:
  abort_signal() = default;
  abort_signal(const abort_signal&) = delete;
  abort_signal& operator=(const abort_signal&) = delete;

  // Raises the signal and runs the hooks registered so far, in this thread.
  // True for the call that raised it, false when it was already raised.
  bool raise() noexcept { return source_.request_stop(); }
  bool raised() const noexcept { return source_.stop_requested(); }

  // Blocks until the signal is raised or `timeout` passes; returns
  // raised(). For runners (and fakes) that only wait.
  bool wait_for(std::chrono::milliseconds timeout) const;

  // A registered callback; destroying it unregisters it.
  class hook {
   public:
    hook() = default;

   private:
    friend class abort_signal;
    explicit hook(std::unique_ptr<std::stop_callback<std::function<void()>>> cb)
        : cb_(std::move(cb)) {}
    std::unique_ptr<std::stop_callback<std::function<void()>>> cb_;
  };
  // Runs `fn` once when the signal is raised, in the raising thread; right
  // away, in this thread, when it already is. `fn` must be quick and must
  // neither block nor throw: it runs inside raise(). After the hook is
  // destroyed `fn` never runs.
  [[nodiscard]] hook on_raise(std::function<void()> fn) const;

 private:
  std::stop_source source_;
};

}  // namespace keel
