#pragma once
// Group commit. Any thread submits a write_set with a completion callback;
// one dedicated thread (never a CAF scheduler thread) takes everything queued
// since its last write, hands it to its sink (journal_sink.hpp; the store:
// one RocksDB WriteBatch with sync=true), then runs each submitter's
// callback with the outcome. Writes are applied in submission order; a
// submitter's callback runs only after its own ops are durable (or failed).
//
// A failed write fails every submitter in it, and only those: what was
// queued meanwhile goes to the sink as the next batch, never merged with the
// failed one. An I/O error (a log write or fsync that failed) comes back
// as code::unavailable: the ops did not become durable (they may still be
// on disk), and a retry is how to find out; no_space stays no_space.
//
// Thread-safety: submit() is thread-safe. Callbacks run on the writer
// thread and must be quick (typically: send a message to an actor).
// Lifetime: `db` (or the sink) must outlive the writer; stop() drains the queue.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "base/histogram.hpp"
#include "persistence/journal_sink.hpp"
#include "persistence/store.hpp"

namespace keel::persistence {

struct journal_stats {
  std::atomic<uint64_t> submits{0};  // write_sets submitted
  std::atomic<uint64_t> ops{0};      // keys written or erased
  std::atomic<uint64_t> batches{0};  // RocksDB writes (= fsyncs when sync)
  std::atomic<uint64_t> failures{0};
  histogram batch_submits;  // write_sets per batch
  histogram commit_ns;      // submit -> durable, per write_set
  histogram write_ns;       // time of each RocksDB write (incl. fsync)
};

class journal_writer {
 public:
  using callback = std::function<void(const status&)>;

  // sync: fsync each batch. max_batch_ops bounds one batch's size.
  journal_writer(store& db, bool sync, std::size_t max_batch_ops = 16384);
  // Writes through `sink` instead of straight to a store.
  journal_writer(std::unique_ptr<journal_sink> sink, bool sync, std::size_t max_batch_ops = 16384);
  ~journal_writer();
  journal_writer(const journal_writer&) = delete;
  journal_writer& operator=(const journal_writer&) = delete;

  // Queues `ops`; `done` runs once they are durable or failed. After stop(),
  // `done` runs at once with an unavailable error.
  void submit(write_set ops, callback done);

  // Writes everything queued, then joins the thread. Idempotent.
  void stop();

  const journal_stats& stats() const { return stats_; }

 private:
  struct pending {
    write_set ops;
    callback done;
    int64_t submitted_ns;
  };
  void run();

  std::unique_ptr<journal_sink> sink_;
  const bool sync_;
  const std::size_t max_batch_ops_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<pending> queue_;
  bool stopping_ = false;
  journal_stats stats_;
  std::thread thread_;
};

}  // namespace keel::persistence
