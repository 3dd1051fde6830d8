// The store's life: opening RocksDB (or refusing to, on a damaged log),
// the write path with its free-space gate, and the recovery thread that
// reopens RocksDB once whatever stopped its writes is gone. Reads are in
// store_reads.cpp, the free-space gate and the recovery thread in
// store_doctor.cpp.
//
// Why reopen rather than RocksDB's own recovery: in the 7.8 build, a
// recovery after a failed log write can leave the failed log writer in
// place, and the next write then aborts the process on an assertion; and
// an out-of-space recovery waits for as much free space as a whole
// memtable. Closing and opening again replays the log (everything that was
// acknowledged; a write cut short by the failure is a torn last record,
// which the recovery mode tolerates) and starts a fresh log writer.
// RocksDB's own info log is written by our logger, which drops what it
// cannot write: the default one shares the log writer's abort.

#include "persistence/store.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <algorithm>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "persistence/record.hpp"
#include "persistence/store_engine.hpp"
#include "persistence/values.hpp"
#include "persistence/wal_reader.hpp"

namespace keel::persistence {

namespace {

constexpr const char* schema_key = "schema_version";
constexpr const char* next_id_key = "next_agent_id";
// 2: ledger records carry the hash chain, snapshots and directory entries
// may carry operator fields (docs/formats.md). Version 1 databases open and
// are marked 2: their records read as before, and audit verify accepts
// their unchained prefix.
// 3: the raft family exists (created at open; written only in a cluster).
// Earlier databases open and are marked 3; nothing else of theirs changes.
constexpr uint64_t schema_version = 3;
constexpr uint64_t oldest_schema_read = 1;
// Ids reserved per durable write; a crash skips at most this many.
constexpr uint64_t id_block = 4096;
// RocksDB's info log: rotated to LOG.old past this size.
constexpr off_t info_log_max_bytes = 16 << 20;

const char* const family_names[family_count] = {"agents", "ledger", "snapshots", "inbox",
                                                "dedupe", "timers", "meta",      "effects",
                                                "blobs",  "outbox", "raft"};

// RocksDB's info log, written with plain write(2): a line that cannot be
// written (the disk is full) is dropped, never fatal.
class file_logger final : public rocksdb::Logger {
 public:
  explicit file_logger(std::string dir)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL), path_(std::move(dir) + "/LOG") {
    reopen();
  }
  ~file_logger() override {
    if (fd_ >= 0) ::close(fd_);
  }

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    char line[2048];
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    int n = static_cast<int>(std::strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm));
    va_list copy;
    va_copy(copy, ap);
    int m = std::vsnprintf(line + n, sizeof line - static_cast<std::size_t>(n) - 1, format, copy);
    va_end(copy);
    if (m < 0) return;
    std::size_t len = std::min(sizeof line - 2, static_cast<std::size_t>(n + m));
    if (line[len - 1] != '\n') line[len++] = '\n';
    std::lock_guard lk(mu_);
    if (fd_ < 0) reopen();
    if (fd_ < 0) return;
    if (::write(fd_, line, len) < 0) return;  // dropped: see the class comment
    size_ += static_cast<off_t>(len);
    if (size_ > info_log_max_bytes) {
      ::close(fd_);
      fd_ = -1;
      std::rename(path_.c_str(), (path_ + ".old").c_str());
      reopen();
    }
  }

 private:
  void reopen() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    size_ = fd_ >= 0 ? ::lseek(fd_, 0, SEEK_END) : 0;
  }

  std::string path_;
  std::mutex mu_;
  int fd_ = -1;
  off_t size_ = 0;
};

}  // namespace

status from_rocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return status::ok();
  if (s.IsCorruption()) return error(code::corruption, what + ": " + s.ToString());
  if (s.IsNotFound()) return error(code::not_found, what + ": " + s.ToString());
  if (s.IsNoSpace())
    return error(code::no_space, what + ": the disk is full (" + s.ToString() + ")");
  return error(code::io_error, what + ": " + s.ToString());
}

// Hears RocksDB's background errors. Runs on RocksDB's threads, some with
// its mutex held: it only records and wakes the recovery thread.

store::impl::~impl() {
  {
    std::lock_guard lk(wake_mu);
    stopping = true;
  }
  wake.notify_all();
  if (doctor.joinable()) doctor.join();
  std::unique_lock lk(mu);
  bool healthy;
  {
    std::lock_guard st(state_mu);
    healthy = stopped.is_ok();
  }
  // A store in error is closed as it stands: its log holds what was written.
  close_db(healthy && !read_only);
}

namespace {

// Trims processed message ids past their expiry as compactions rewrite the
// dedupe family: no I/O of its own, and a removal RocksDB turns into a
// tombstone, so an older version of the key never reappears. A newer
// version written meanwhile (the id arriving again) is kept.
class dedupe_trimmer final : public rocksdb::CompactionFilter {
 public:
  explicit dedupe_trimmer(int64_t default_window_ms) : default_window_ms_(default_window_ms) {}
  const char* Name() const override { return "keel.dedupe_trimmer"; }
  bool Filter(int, const rocksdb::Slice&, const rocksdb::Slice& value, std::string*,
              bool*) const override {
    const std::string_view bytes(value.data(), value.size());
    auto rec = decode_record(bytes, "dedupe entry");
    if (!rec) return false;  // not ours to judge: kept
    auto e = decode_dedupe_entry(bytes, "dedupe entry");
    if (!e || !e->processed) return false;
    int64_t expires = e->expires_ms;
    if (expires == 0) {
      if (default_window_ms_ <= 0) return false;
      expires = rec->time_ms + default_window_ms_;
    }
    return expires <= wall_ms();
  }

 private:
  int64_t default_window_ms_;
};

}  // namespace

status store::impl::open_db(bool read_only_mode) {
  rocksdb::Options o;
  o.create_if_missing = opts.create && !read_only_mode;
  o.create_missing_column_families = opts.create && !read_only_mode;
  o.IncreaseParallelism(2);
  o.max_background_jobs = 2;
  // Memtables are charged to the block cache, so the node's RocksDB memory
  // is bounded by block_cache_bytes however many families are written.
  o.write_buffer_manager =
      std::make_shared<rocksdb::WriteBufferManager>(opts.block_cache_bytes / 2, cache);
  // Bounds the WAL a restart replays (start-up time after a crash).
  o.max_total_wal_size = 64ull << 20;
  // A damaged record anywhere in the log is refused at open (it would drop
  // what was acknowledged after it); a torn last record, a write a crash
  // cut short and that was never acknowledged, is not.
  o.wal_recovery_mode = opts.point_in_time_recovery
                            ? rocksdb::WALRecoveryMode::kPointInTimeRecovery
                            : rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  o.info_log = logger;
  o.listeners.push_back(listener);
  if (opts.max_open_files > 0) {
    o.max_open_files = static_cast<int>(opts.max_open_files);
    // The table cache rounds its capacity up to a multiple of its shards:
    // few shards keep a small bound close to what was asked.
    o.table_cache_numshardbits = opts.max_open_files < 1024 ? 0 : 4;
  }
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocksdb::ColumnFamilyOptions cfo;
  cfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  if (opts.write_buffer_bytes > 0) cfo.write_buffer_size = opts.write_buffer_bytes;

  // Expired message ids go with compactions; a family that sees no writes
  // is still rewritten once a day, so its expired ids do not stay forever.
  if (!dedupe_filter)
    dedupe_filter = std::make_unique<dedupe_trimmer>(opts.dedupe_default_window_ms);
  rocksdb::ColumnFamilyOptions dedupe_cfo = cfo;
  dedupe_cfo.compaction_filter = dedupe_filter.get();
  dedupe_cfo.periodic_compaction_seconds = 24 * 3600;

  // Read-only, a database an earlier version wrote may lack the newer
  // families (they are created at the first writable open): those read as
  // empty, through the default family, which holds nothing.
  std::vector<std::string> existing;
  if (read_only_mode)
    if (auto ls = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(o), opts.dir, &existing);
        !ls.ok())
      return from_rocks(ls, "cannot open the store in " + opts.dir);
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, cfo);
  std::vector<int> slot(family_count, 0);  // index into the opened handles
  for (int i = 0; i < family_count; ++i) {
    const std::string_view n = family_names[i];
    if (read_only_mode && std::find(existing.begin(), existing.end(), n) == existing.end())
      continue;
    slot[i] = static_cast<int>(descs.size());
    descs.emplace_back(std::string(n), n == "dedupe" ? dedupe_cfo : cfo);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> hs;
  rocksdb::DB* raw = nullptr;
  auto s = read_only_mode
               ? rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(o), opts.dir, descs, &hs, &raw)
               : rocksdb::DB::Open(rocksdb::DBOptions(o), opts.dir, descs, &hs, &raw);
  if (!s.ok()) return from_rocks(s, "cannot open the store in " + opts.dir);
  db.reset(raw);
  default_cf = hs[0];
  handles.clear();
  for (int i = 0; i < family_count; ++i) handles.push_back(hs[slot[i]]);
  read_only = read_only_mode;
  return status::ok();
}

void store::impl::close_db(bool flush) {
  if (!db) return;
  end_views();
  if (flush) {
    // A clean close leaves no log to replay at the next start. Never made
    // to wait for a stall to clear: a compaction short of space would hold
    // it forever.
    rocksdb::FlushOptions fo;
    fo.allow_write_stall = true;
    db->Flush(fo, handles).PermitUncheckedError();
  }
  for (auto* h : handles)
    if (h != default_cf) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  if (default_cf) db->DestroyColumnFamilyHandle(default_cf).PermitUncheckedError();
  handles.clear();
  default_cf = nullptr;
  db->Close().PermitUncheckedError();
  db.reset();
}

namespace {

// Why open() failed on a corruption: the damaged log, if it is one.
status explain_corruption(const std::string& dir, const status& opened) {
  auto scan = scan_wal(dir);
  if (scan && scan->damage) {
    const auto& d = *scan->damage;
    return error(code::corruption,
                 "the write-ahead log " + d.file + " is damaged at offset " +
                     std::to_string(d.offset) + " (" + d.reason + "); " +
                     std::to_string(scan->after_damage.size()) +
                     " acknowledged write batches after it would be lost. Refusing to start: "
                     "run `keeld --data " +
                     dir +
                     " --salvage` to start from what is intact (it records what it drops), or "
                     "restore a backup (docs/operations.md, \"Faults\")");
  }
  return error(code::corruption, opened.message() +
                                     ". Refusing to start: restore a backup, or see "
                                     "docs/operations.md (\"Faults\") for the repair steps");
}

status in_use(const std::string& dir, int pid) {
  return error(code::conflict, "the store in " + dir + " is open in another process" +
                                   (pid > 0 ? " (pid " + std::to_string(pid) + ")" : "") +
                                   ": only one may use it at a time");
}

}  // namespace

result<std::unique_ptr<store>> store::open(const store_options& opts) {
  auto p = std::make_unique<impl>();
  p->opts = opts;
  std::error_code ec;
  std::filesystem::create_directories(opts.dir, ec);
  p->cache = rocksdb::NewLRUCache(opts.block_cache_bytes);
  p->logger = std::make_shared<file_logger>(opts.dir);
  p->listener = std::make_shared<store_listener>(p.get());
  status s = p->open_db(false);
  if (!s && s.error_code() == code::corruption) return explain_corruption(opts.dir, s);
  // Another process has it open: not a reason to open read-only below
  // (which takes no lock), but to refuse.
  if (!s && s.message().find("While lock file") != std::string::npos)
    return in_use(opts.dir, lock_holder(opts.dir).value_or(0));
  if (!s && s.message().find("lock hold by current process") != std::string::npos)
    return error(code::conflict, "the store in " + opts.dir + " is already open in this process");
  if (!s) {
    // A full disk (or too few descriptors) cannot stop reads of what is
    // there: serve them, and write once the recovery thread can reopen.
    const bool exists = std::filesystem::exists(std::filesystem::path(opts.dir) / "CURRENT", ec);
    if (!exists || !p->open_db(true)) return s;
    p->stopped = error(s.error_code() == code::no_space ? code::no_space : code::unavailable,
                       "opened read-only: " + s.message());
    p->stopped_ms = wall_ms();
    p->needs_reopen = true;
    log::warn("store: " + p->stopped.message());
  }

  std::unique_ptr<store> st(new store(std::move(p)));
  auto& m = *st->impl_;
  auto* meta = m.cf(family::meta);
  std::string v;
  auto rs = m.db->Get(rocksdb::ReadOptions(), meta, schema_key, &v);
  const uint64_t found = rs.ok() && v.size() == 8 ? get_u64_be(v.data()) : 0;
  if (!rs.ok() && !rs.IsNotFound()) return from_rocks(rs, "reading schema version");
  if (rs.ok() && (found < oldest_schema_read || found > schema_version))
    return error(code::corruption,
                 "database in " + opts.dir + " has a schema version this build does not read");
  if ((rs.IsNotFound() || found < schema_version) && !m.read_only) {
    // Marked before anything new is written, so an older build refuses it.
    std::string enc;
    put_u64_be(enc, schema_version);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    KEEL_TRY(from_rocks(m.db->Put(wo, meta, schema_key, enc), "writing schema version"));
  }
  rs = m.db->Get(rocksdb::ReadOptions(), meta, next_id_key, &v);
  if (rs.ok() && v.size() == 8) {
    st->next_id_ = st->id_limit_ = get_u64_be(v.data());
  } else if (rs.IsNotFound()) {
    st->next_id_ = st->id_limit_ = 1;
  } else {
    return error(code::corruption, "bad next_agent_id in " + opts.dir);
  }
  m.start_doctor();
  return st;
}

status store::write(const write_set& ops, bool sync) {
  std::shared_lock lk(impl_->mu);
  std::size_t bytes = 0;
  for (const auto& op : ops) bytes += op.key.size() + op.value.size() + 16;
  if (status g = impl_->write_gate(bytes); !g) {
    impl_->write_errors.fetch_add(1, std::memory_order_relaxed);
    return g;
  }
  rocksdb::WriteBatch batch;
  for (const auto& op : ops) {
    auto* cf = impl_->cf(op.cf);
    auto s = !op.erase              ? batch.Put(cf, op.key, op.value)
             : op.range_end.empty() ? batch.Delete(cf, op.key)
                                    : batch.DeleteRange(cf, op.key, op.range_end);
    if (!s.ok()) return from_rocks(s, "building write batch");
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  auto s = impl_->db->Write(wo, &batch);
  if (s.ok()) return status::ok();
  impl_->write_errors.fetch_add(1, std::memory_order_relaxed);
  status failed = from_rocks(s, "writing batch");
  const code c = failed.error_code() == code::no_space ? code::no_space : code::unavailable;
  // RocksDB refuses every write after a failed one until it is reopened.
  impl_->stop_writes(error(c, "writes are stopped: " + failed.message()), true);
  // The failed write itself is answered as the refused ones after it: not
  // durable, retry (a log write that failed may still be replayed on reopen).
  return error(c, "the write did not become durable: " + failed.message());
}

status store::reserve_id_block(uint64_t limit) {
  std::string enc;
  put_u64_be(enc, limit);
  return write({{family::meta, false, next_id_key, std::move(enc)}}, true);
}

result<uint64_t> store::allocate_agent_id() {
  std::lock_guard lk(id_mu_);
  if (next_id_ >= id_limit_) {
    const uint64_t limit = next_id_ + id_block;
    if (status s = reserve_id_block(limit); !s)
      return error(s.error_code(), "reserving agent ids: " + s.message());
    id_limit_ = limit;
  }
  return next_id_++;
}

const char* family_name(family f) {
  return family_names[static_cast<int>(f)];
}

uint32_t store::family_id(family f) const {
  std::shared_lock lk(impl_->mu);
  return impl_->cf(f)->GetID();
}

status store::compact(family f) {
  std::shared_lock lk(impl_->mu);
  if (!impl_->db) return error(code::unavailable, "the store is not open");
  rocksdb::CompactRangeOptions o;
  o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  auto s = impl_->db->CompactRange(o, impl_->cf(f), nullptr, nullptr);
  if (!s.ok())
    return error(code::io_error, "compacting " + std::string(family_name(f)) + ": " + s.ToString());
  return status::ok();
}

uint64_t store::estimate_keys(family f) {
  std::shared_lock lk(impl_->mu);
  uint64_t n = 0;
  if (impl_->db) impl_->db->GetIntProperty(impl_->cf(f), "rocksdb.estimate-num-keys", &n);
  return n;
}

}  // namespace keel::persistence
