#pragma once
// Internal to actors/: the blocking effect calls (models, http and exec
// tools) a node has handed to its effect pool and not yet finished, queued
// or running, by agent, each with an abort signal of its own that its
// runner gets (effects/contexts.hpp). node::abort_effects raises the
// signals of the agents it picks. CAF-free.
//
// Thread-safety: every member may be called from any thread.
// Lifetime: the registry must outlive every registration it handed out
// (the runtime owns it; the effect pool, which holds them, stops first).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/abort_signal.hpp"

namespace keel::actors {

class effect_calls {
 public:
  // One call in the registry, from add() until it is destroyed.
  class registration {
   public:
    registration(effect_calls& calls, std::string agent);
    ~registration();
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;

    const std::string& agent() const { return agent_; }
    // Raised by effect_calls::abort; never null.
    const std::shared_ptr<abort_signal>& signal() const { return signal_; }

   private:
    effect_calls& calls_;
    const std::string agent_;
    const std::shared_ptr<abort_signal> signal_ = std::make_shared<abort_signal>();
  };

  effect_calls() = default;
  effect_calls(const effect_calls&) = delete;
  effect_calls& operator=(const effect_calls&) = delete;

  // Registers a call of `agent`, with a fresh signal, until the returned
  // registration is destroyed.
  std::shared_ptr<registration> add(std::string agent);

  // Raises the signal of every registered call whose agent `pick` selects
  // (asked once per agent, with the registry's lock held: it must be quick
  // and must not call back into the node). Returns how many signals this
  // raised: a call aborted before counts once.
  std::size_t abort(const std::function<bool(std::string_view)>& pick);

  // Calls registered now (queued or running).
  std::size_t in_flight() const;
  // Signals abort() has raised since the start.
  uint64_t aborted() const { return aborted_.load(std::memory_order_relaxed); }

 private:
  void remove(const std::string& agent, const abort_signal* signal);

  mutable std::mutex mu_;
  std::map<std::string, std::vector<abort_signal*>, std::less<>> calls_;  // guarded by mu_
  std::size_t count_ = 0;                                                 // guarded by mu_
  std::atomic<uint64_t> aborted_{0};
};

}  // namespace keel::actors
