#include "persistence/journal_writer.hpp"

#include "base/clock.hpp"

namespace keel::persistence {

journal_writer::journal_writer(store& db, bool sync, std::size_t max_batch_ops)
    : journal_writer(std::make_unique<store_sink>(db), sync, max_batch_ops) {}

journal_writer::journal_writer(std::unique_ptr<journal_sink> sink, bool sync,
                               std::size_t max_batch_ops)
    : sink_(std::move(sink)),
      sync_(sync),
      max_batch_ops_(max_batch_ops),
      thread_([this] { run(); }) {}

journal_writer::~journal_writer() {
  stop();
}

void journal_writer::submit(write_set ops, callback done) {
  {
    std::lock_guard lk(mu_);
    if (!stopping_) {
      queue_.push_back({std::move(ops), std::move(done), mono_ns()});
      cv_.notify_one();
      return;
    }
  }
  done(error(code::unavailable, "node is shutting down"));
}

void journal_writer::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void journal_writer::run() {
  std::vector<pending> group;
  write_set merged;
  for (;;) {
    group.clear();
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      // Take everything queued while the previous batch was being synced:
      // that is what makes the fsync shared.
      std::size_t ops = 0;
      while (!queue_.empty() &&
             (group.empty() || ops + queue_.front().ops.size() <= max_batch_ops_)) {
        ops += queue_.front().ops.size();
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    merged.clear();
    for (auto& p : group)
      for (auto& op : p.ops) merged.push_back(std::move(op));
    int64_t t0 = mono_ns();
    status s = merged.empty() ? status::ok() : sink_->write(merged, sync_);
    int64_t t1 = mono_ns();
    stats_.write_ns.record(static_cast<uint64_t>(t1 - t0));
    stats_.batches.fetch_add(1, std::memory_order_relaxed);
    stats_.submits.fetch_add(group.size(), std::memory_order_relaxed);
    stats_.ops.fetch_add(merged.size(), std::memory_order_relaxed);
    stats_.batch_submits.record(group.size());
    if (!s) stats_.failures.fetch_add(1, std::memory_order_relaxed);
    for (auto& p : group) {
      stats_.commit_ns.record(static_cast<uint64_t>(t1 - p.submitted_ns));
      p.done(s);
    }
  }
}

}  // namespace keel::persistence
