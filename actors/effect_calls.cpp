#include "actors/effect_calls.hpp"

#include <algorithm>

namespace keel::actors {

effect_calls::registration::registration(effect_calls& calls, std::string agent)
    : calls_(calls), agent_(std::move(agent)) {}

effect_calls::registration::~registration() {
  calls_.remove(agent_, signal_.get());
}

std::shared_ptr<effect_calls::registration> effect_calls::add(std::string agent) {
  auto r = std::make_shared<registration>(*this, std::move(agent));
  std::lock_guard lk(mu_);
  calls_[r->agent()].push_back(r->signal().get());
  ++count_;
  return r;
}

void effect_calls::remove(const std::string& agent, const abort_signal* signal) {
  std::lock_guard lk(mu_);
  auto it = calls_.find(agent);
  if (it == calls_.end()) return;
  auto& signals = it->second;
  auto at = std::find(signals.begin(), signals.end(), signal);
  if (at == signals.end()) return;
  signals.erase(at);
  --count_;
  if (signals.empty()) calls_.erase(it);
}

// Raising runs the signals' hooks (a write to a pipe, a post to an
// io_context) here, under the lock: they are quick, and the raw pointers
// stay valid, since a registration leaves the map (under the lock) before
// its signal can go.
std::size_t effect_calls::abort(const std::function<bool(std::string_view)>& pick) {
  std::size_t raised = 0;
  std::lock_guard lk(mu_);
  for (auto& [agent, signals] : calls_) {
    if (!pick(agent)) continue;
    for (abort_signal* s : signals) raised += s->raise() ? 1 : 0;
  }
  aborted_.fetch_add(raised, std::memory_order_relaxed);
  return raised;
}

std::size_t effect_calls::in_flight() const {
  std::lock_guard lk(mu_);
  return count_;
}

}  // namespace keel::actors
