#include "ledger/retention.hpp"

#include "agent/loop.hpp"

namespace keel::actors {

retention_worker::retention_worker(persistence::store& db, const agent::type_registry& types,
                                   options o, std::function<bool(const std::string&)> apply,
                                   std::function<bool(const std::string&)> is_local)
    : db_(db),
      types_(types),
      opts_(o),
      apply_(std::move(apply)),
      is_local_(std::move(is_local)),
      thread_([this] { run(); }) {}

retention_worker::~retention_worker() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::size_t retention_worker::pass() {
  std::lock_guard lk(mu_);
  return pass_locked();
}

std::size_t retention_worker::pass_locked() {
  std::size_t compacted = 0;
  auto page = db_.list_agents("", cursor_, opts_.page);
  if (!page) return 0;  // the store is down: the next pass tries again
  for (const auto& a : *page) {
    if (compacted >= opts_.max_compactions) break;
    cursor_ = a.name;
    if (a.meta.origin == persistence::agent_origin::imported ||
        a.meta.status != agent_status::active)
      continue;
    const auto* loop = dynamic_cast<const agent::loop_type*>(types_.find(a.meta.type));
    if (!loop) continue;
    const auto& r = loop->spec().retention;
    if (r.keep_events == 0 && r.keep_ms == 0) continue;
    if (is_local_ && !is_local_(a.name)) continue;
    if (apply_(a.name)) ++compacted;
  }
  // A short page ends the directory: the next pass starts over.
  if (page->size() < opts_.page) cursor_.clear();
  return compacted;
}

void retention_worker::run() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    wake_.wait_for(lk, std::chrono::milliseconds(opts_.interval_ms), [this] { return stop_; });
    if (stop_) break;
    pass_locked();
  }
}

}  // namespace keel::actors
