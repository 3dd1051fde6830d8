// The store's health: the free-space gate in front of every write, the
// reasons writes are stopped, and the recovery thread (the doctor) that
// reopens RocksDB once whatever stopped them is gone (store.cpp says why a
// reopen and not RocksDB's own recovery).

#include <sys/statvfs.h>

#include <filesystem>

#include "base/clock.hpp"
#include "base/log.hpp"
#include "persistence/store.hpp"
#include "persistence/store_engine.hpp"

namespace keel::persistence {

namespace {

constexpr std::size_t max_warnings = 16;
// Free space the recovery thread waits for before reopening after the disk
// filled (RocksDB flushes what it replays from the log when it opens).
constexpr uint64_t min_reopen_bytes = 16ull << 20;

const char* reason_name(rocksdb::BackgroundErrorReason r) {
  switch (r) {
    case rocksdb::BackgroundErrorReason::kFlush:
    case rocksdb::BackgroundErrorReason::kFlushNoWAL:
      return "a flush";
    case rocksdb::BackgroundErrorReason::kCompaction:
      return "a compaction";
    case rocksdb::BackgroundErrorReason::kWriteCallback:
    case rocksdb::BackgroundErrorReason::kMemTable:
      return "a write";
    case rocksdb::BackgroundErrorReason::kManifestWrite:
    case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL:
      return "a manifest write";
  }
  return "background work";
}

std::string mib(uint64_t bytes) {
  return std::to_string(bytes >> 20) + " MiB";
}

}  // namespace

void store_listener::OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* e) {
  if (!e || e->ok()) return;
  const std::string what = std::string(reason_name(reason)) + " failed: " + e->ToString();
  if (reason == rocksdb::BackgroundErrorReason::kCompaction && e->IsCorruption()) {
    // Left alone, this stops every write for good. The compaction keeps
    // failing over that file, but reads of other data and all writes go
    // on; the file's keys are reported (health) until an operator acts.
    {
      std::lock_guard lk(s_->state_mu);
      pending_corruption_.push_back(e->ToString());
    }
    s_->warn(what + "; writes go on, the damaged file stays (docs/operations.md, \"Faults\")");
    *e = rocksdb::Status::OK();
  } else if (e->severity() >= rocksdb::Status::Severity::kHardError) {
    s_->stop_writes(
        error(e->IsNoSpace() ? code::no_space : code::unavailable, "writes are stopped: " + what),
        true);
  } else {
    // A soft error (a compaction short of space): writes go on, and the
    // compaction is tried again until there is room.
    s_->warn(what + "; writes go on, compactions are retried");
  }
  s_->wake.notify_all();
}

// The recovery thread reopens instead (see the top of store.cpp).
void store_listener::OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status,
                                          bool* auto_recovery) {
  if (auto_recovery) *auto_recovery = false;
}

uint64_t store::impl::refresh_free_space(bool force) {
  const int64_t now = mono_ns();
  if (!force && now - space_checked_ns.load(std::memory_order_relaxed) < 50'000'000)
    return free_bytes.load(std::memory_order_relaxed);
  struct statvfs v {};
  uint64_t free = UINT64_MAX;
  if (::statvfs(opts.dir.c_str(), &v) == 0) free = uint64_t{v.f_bavail} * v.f_frsize;
  free_bytes.store(free, std::memory_order_relaxed);
  space_checked_ns.store(now, std::memory_order_relaxed);
  return free;
}

status store::impl::write_gate(std::size_t bytes) {
  {
    std::lock_guard lk(state_mu);
    if (!stopped.is_ok()) return stopped;
  }
  if (read_only)
    return error(code::unavailable,
                 "the store is open read-only; writes resume once it can reopen");
  if (opts.reserved_disk_bytes == 0) return status::ok();
  const uint64_t free = refresh_free_space(false);
  if (free < opts.reserved_disk_bytes + bytes) {
    refresh_free_space(true);
    if (free_bytes.load() < opts.reserved_disk_bytes + bytes) {
      std::lock_guard lk(state_mu);
      if (stopped_ms == 0) stopped_ms = wall_ms();
      return error(code::no_space, "the store's disk has " + mib(free_bytes.load()) +
                                       " free, less than the " + mib(opts.reserved_disk_bytes) +
                                       " it keeps in reserve: writes resume once there is room");
    }
  }
  free_bytes.fetch_sub(std::min<uint64_t>(bytes, free_bytes.load()), std::memory_order_relaxed);
  return status::ok();
}

void store::impl::stop_writes(status why, bool reopen) {
  {
    std::lock_guard lk(state_mu);
    if (stopped.is_ok()) {
      stopped = std::move(why);
      stopped_ms = wall_ms();
      log::error("store: " + stopped.message());
    }
    needs_reopen = needs_reopen || reopen;
  }
  wake.notify_all();
}

void store::impl::warn(std::string text) {
  std::lock_guard lk(state_mu);
  log::warn("store: " + text);
  warnings.push_back(std::move(text));
  if (warnings.size() > max_warnings) warnings.erase(warnings.begin());
}

void store::impl::start_doctor() {
  doctor = std::thread([this] { run_doctor(); });
}

void store::impl::run_doctor() {
  const uint32_t base = std::max<uint32_t>(1, opts.recovery_interval_ms);
  uint32_t delay = base;
  std::unique_lock wl(wake_mu);
  while (!stopping) {
    wake.wait_for(wl, std::chrono::milliseconds(delay));
    if (stopping) break;
    wl.unlock();
    std::vector<std::string> corrupt;
    bool reopen = false, refused_for_space = false;
    code problem = code::ok;
    {
      std::lock_guard lk(state_mu);
      corrupt.swap(listener->pending_corruption_);
      reopen = needs_reopen || read_only;
      problem = stopped.error_code();
      refused_for_space = stopped.is_ok() && stopped_ms != 0;
    }
    if (!corrupt.empty()) {
      std::shared_lock lk(mu);
      for (const auto& m : corrupt) note_corruption(rocksdb::Status::Corruption(m));
    }
    const uint64_t free = refresh_free_space(true);
    const bool room = free >= opts.reserved_disk_bytes;
    bool resumed = false;
    if (refused_for_space && room) {
      std::lock_guard lk(state_mu);
      stopped_ms = 0;
      resumed = true;
    }
    // After a full disk, opening again needs room for the memtables it
    // flushes: at least the reserve, and never less than min_reopen_bytes.
    const bool room_to_reopen = free >= std::max(opts.reserved_disk_bytes, min_reopen_bytes);
    if (reopen && (room_to_reopen || problem != code::no_space)) {
      std::unique_lock lk(mu);
      close_db(false);
      status s = open_db(false);
      if (s) {
        std::lock_guard st(state_mu);
        log::info("store: reopened after \"" +
                  (stopped.is_ok() ? std::string("a background error") : stopped.message()) +
                  "\"; writes resume");
        stopped = status::ok();
        stopped_ms = 0;
        needs_reopen = false;
        resumed = true;
        delay = base;
      } else {
        // Reads go on from a read-only view meanwhile.
        status ro = open_db(true);
        std::lock_guard st(state_mu);
        if (stopped.is_ok()) {
          stopped = error(s.error_code() == code::no_space ? code::no_space : code::unavailable,
                          "writes are stopped: " + s.message());
          stopped_ms = wall_ms();
        }
        needs_reopen = true;
        if (!ro) log::error("store: " + ro.message());
        delay = std::min(delay * 2, base * 16);
      }
    } else if (!reopen) {
      delay = base;
    }
    if (resumed) {
      recoveries.fetch_add(1, std::memory_order_relaxed);
      std::function<void()> fn;
      {
        std::lock_guard st(state_mu);
        fn = writable_fn;
      }
      if (fn) fn();
    }
    wl.lock();
  }
}

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
store::~store() = default;

store_health store::health() const {
  store_health h;
  auto& m = *impl_;
  h.reserved_bytes = m.opts.reserved_disk_bytes;
  h.free_bytes = m.refresh_free_space(false);
  h.write_errors = m.write_errors.load(std::memory_order_relaxed);
  h.recoveries = m.recoveries.load(std::memory_order_relaxed);
  h.read_only = m.read_only.load();
  std::lock_guard lk(m.state_mu);
  h.damage = m.damage;
  h.warnings = m.warnings;
  if (!m.stopped.is_ok()) {
    h.writable = false;
    h.problem = m.stopped.error_code();
    h.reason = m.stopped.message();
    h.since_ms = m.stopped_ms;
  } else if (m.opts.reserved_disk_bytes > 0 && h.free_bytes < m.opts.reserved_disk_bytes) {
    h.writable = false;
    h.problem = code::no_space;
    h.reason = "the disk has " + mib(h.free_bytes) + " free, less than the " +
               mib(m.opts.reserved_disk_bytes) + " reserve: writes are refused";
    h.since_ms = m.stopped_ms;
  }
  return h;
}

void store::on_writable(std::function<void()> fn) {
  std::lock_guard lk(impl_->state_mu);
  impl_->writable_fn = std::move(fn);
}

}  // namespace keel::persistence
