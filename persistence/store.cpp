#include "persistence/store.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "persistence/keys.hpp"

namespace keel::persistence {

namespace {

constexpr const char* schema_key = "schema_version";
constexpr const char* next_id_key = "next_agent_id";
// 2: ledger records carry the hash chain, snapshots and directory entries
// may carry operator fields (docs/formats.md). Version 1 databases open and
// are marked 2: their records read as before, and audit verify accepts
// their unchained prefix.
constexpr uint64_t schema_version = 2;
constexpr uint64_t oldest_schema_read = 1;
// Ids reserved per durable write; a crash skips at most this many.
constexpr uint64_t id_block = 4096;

const char* const family_names[family_count] = {"agents", "ledger", "snapshots", "inbox", "dedupe",
                                                "timers", "meta",   "effects",   "blobs", "outbox"};

status from_rocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return status::ok();
  if (s.IsCorruption()) return error(code::corruption, what + ": " + s.ToString());
  if (s.IsNotFound()) return error(code::not_found, what + ": " + s.ToString());
  return error(code::io_error, what + ": " + s.ToString());
}

// Bounds an iterator to one agent's keys. The upper bound lets RocksDB stop
// early; the highest id has no successor prefix, so valid() also checks the
// prefix itself.
class agent_scan {
 public:
  explicit agent_scan(uint64_t agent_id) : prefix_(agent_prefix(agent_id)) {
    if (agent_id != UINT64_MAX) {
      upper_ = agent_prefix(agent_id + 1);
      upper_slice_ = rocksdb::Slice(upper_);
      ro_.iterate_upper_bound = &upper_slice_;
    }
  }
  agent_scan(const agent_scan&) = delete;
  agent_scan& operator=(const agent_scan&) = delete;
  const rocksdb::ReadOptions& options() const { return ro_; }
  bool valid(const rocksdb::Iterator& it) const {
    return it.Valid() && it.key().starts_with(rocksdb::Slice(prefix_));
  }

 private:
  std::string prefix_;
  std::string upper_;
  rocksdb::Slice upper_slice_;
  rocksdb::ReadOptions ro_;
};

std::string what_seq(std::string_view family, std::string_view who, uint64_t seq) {
  return std::string(family) + " of " + std::string(who) + " seq " + std::to_string(seq);
}

}  // namespace

const char* family_name(family f) {
  return family_names[static_cast<int>(f)];
}

struct store::impl {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // index = family
  rocksdb::ColumnFamilyHandle* default_cf = nullptr;

  rocksdb::ColumnFamilyHandle* cf(family f) { return handles[static_cast<int>(f)]; }

  ~impl() {
    if (db) {
      // Flushing on a clean close leaves no WAL to replay at the next start.
      db->Flush(rocksdb::FlushOptions(), handles).PermitUncheckedError();
      for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
      if (default_cf) db->DestroyColumnFamilyHandle(default_cf).PermitUncheckedError();
      db->Close().PermitUncheckedError();
    }
  }
};

store::store(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
store::~store() = default;

result<std::unique_ptr<store>> store::open(const store_options& opts) {
  rocksdb::Options o;
  o.create_if_missing = opts.create;
  o.create_missing_column_families = opts.create;
  o.IncreaseParallelism(2);
  o.max_background_jobs = 2;
  // Memtables are charged to the block cache, so the node's RocksDB memory
  // is bounded by block_cache_bytes however many families are written.
  auto cache = rocksdb::NewLRUCache(opts.block_cache_bytes);
  o.write_buffer_manager =
      std::make_shared<rocksdb::WriteBufferManager>(opts.block_cache_bytes / 2, cache);
  // Bounds the WAL a restart replays (start-up time after a crash).
  o.max_total_wal_size = 64ull << 20;
  // RocksDB starts a new info log at every open and keeps 1000 by default.
  o.keep_log_file_num = 4;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocksdb::ColumnFamilyOptions cfo;
  cfo.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));

  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, cfo);
  for (const char* n : family_names) descs.emplace_back(n, cfo);

  auto p = std::make_unique<impl>();
  std::vector<rocksdb::ColumnFamilyHandle*> hs;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(rocksdb::DBOptions(o), opts.dir, descs, &hs, &raw);
  if (!s.ok()) return from_rocks(s, "cannot open database in " + opts.dir);
  p->db.reset(raw);
  p->default_cf = hs[0];
  p->handles.assign(hs.begin() + 1, hs.end());

  std::unique_ptr<store> st(new store(std::move(p)));
  auto* meta = st->impl_->cf(family::meta);
  std::string v;
  s = st->impl_->db->Get(rocksdb::ReadOptions(), meta, schema_key, &v);
  const uint64_t found = s.ok() && v.size() == 8 ? get_u64_be(v.data()) : 0;
  if (!s.ok() && !s.IsNotFound()) return from_rocks(s, "reading schema version");
  if (s.ok() && (found < oldest_schema_read || found > schema_version))
    return error(code::corruption,
                 "database in " + opts.dir + " has a schema version this build does not read");
  if (s.IsNotFound() || found < schema_version) {
    // Marked before anything new is written, so an older build refuses it.
    std::string enc;
    put_u64_be(enc, schema_version);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    KEEL_TRY(from_rocks(st->impl_->db->Put(wo, meta, schema_key, enc), "writing schema version"));
  }
  s = st->impl_->db->Get(rocksdb::ReadOptions(), meta, next_id_key, &v);
  if (s.ok() && v.size() == 8) {
    st->next_id_ = st->id_limit_ = get_u64_be(v.data());
  } else if (s.IsNotFound()) {
    st->next_id_ = st->id_limit_ = 1;
  } else {
    return error(code::corruption, "bad next_agent_id in " + opts.dir);
  }
  return st;
}

status store::write(const write_set& ops, bool sync) {
  rocksdb::WriteBatch batch;
  for (const auto& op : ops) {
    auto* cf = impl_->cf(op.cf);
    auto s = op.erase ? batch.Delete(cf, op.key) : batch.Put(cf, op.key, op.value);
    if (!s.ok()) return from_rocks(s, "building write batch");
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return from_rocks(impl_->db->Write(wo, &batch), "writing batch");
}

result<std::optional<agent_meta>> store::get_agent(std::string_view name) {
  rocksdb::PinnableSlice v;  // no copy out of the block cache / memtable
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(family::agents),
                          rocksdb::Slice(name.data(), name.size()), &v);
  if (s.IsNotFound()) return std::optional<agent_meta>();
  if (!s.ok()) return from_rocks(s, "reading agent " + std::string(name));
  auto m = decode_agent_meta(std::string_view(v.data(), v.size()),
                             "agents entry of " + std::string(name));
  if (!m) return m.error();
  return std::optional<agent_meta>(std::move(*m));
}

result<uint64_t> store::allocate_agent_id() {
  std::lock_guard lk(id_mu_);
  if (next_id_ >= id_limit_) {
    uint64_t limit = next_id_ + id_block;
    std::string enc;
    put_u64_be(enc, limit);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    KEEL_TRY(from_rocks(impl_->db->Put(wo, impl_->cf(family::meta), next_id_key, enc),
                        "reserving agent ids"));
    id_limit_ = limit;
  }
  return next_id_++;
}

result<std::vector<std::pair<uint64_t, record>>> store::read_ledger(uint64_t agent_id,
                                                                    uint64_t from,
                                                                    std::size_t limit,
                                                                    std::string_view who) {
  std::vector<std::pair<uint64_t, record>> out;
  if (limit == 0) return out;
  agent_scan scan(agent_id);
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(scan.options(), impl_->cf(family::ledger)));
  for (it->Seek(agent_seq_key(agent_id, from)); scan.valid(*it) && out.size() < limit; it->Next()) {
    auto k = it->key();
    if (k.size() != 16)
      return error(code::corruption, "ledger key of " + std::string(who) + " has a bad size");
    uint64_t seq = key_seq(std::string_view(k.data(), k.size()));
    auto r = decode_record(std::string_view(it->value().data(), it->value().size()),
                           what_seq("ledger", who, seq));
    if (!r) return r.error();
    out.emplace_back(seq, std::move(*r));
  }
  KEEL_TRY(from_rocks(it->status(), "scanning ledger of " + std::string(who)));
  return out;
}

result<uint64_t> store::last_ledger_seq(uint64_t agent_id) {
  rocksdb::ReadOptions ro;
  std::string lower = agent_prefix(agent_id);
  rocksdb::Slice lb(lower);
  ro.iterate_lower_bound = &lb;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(family::ledger)));
  it->SeekForPrev(agent_seq_key(agent_id, UINT64_MAX));
  if (it->Valid() && it->key().size() == 16 &&
      key_agent_id(std::string_view(it->key().data(), 16)) == agent_id)
    return key_seq(std::string_view(it->key().data(), 16));
  KEEL_TRY(from_rocks(it->status(), "seeking ledger end"));
  return uint64_t{0};
}

result<std::optional<std::pair<uint64_t, record>>> store::latest_snapshot(uint64_t agent_id,
                                                                          std::string_view who) {
  using out_t = std::optional<std::pair<uint64_t, record>>;
  rocksdb::ReadOptions ro;
  std::string lower = agent_prefix(agent_id);
  rocksdb::Slice lb(lower);
  ro.iterate_lower_bound = &lb;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(family::snapshots)));
  it->SeekForPrev(agent_seq_key(agent_id, UINT64_MAX));
  if (!it->Valid()) {
    KEEL_TRY(from_rocks(it->status(), "seeking snapshot"));
    return out_t();
  }
  std::string_view k(it->key().data(), it->key().size());
  if (k.size() != 16 || key_agent_id(k) != agent_id) return out_t();
  uint64_t seq = key_seq(k);
  auto r = decode_record(std::string_view(it->value().data(), it->value().size()),
                         what_seq("snapshot", who, seq));
  if (!r) return r.error();
  return out_t(std::pair<uint64_t, record>(seq, std::move(*r)));
}

result<std::optional<record>> store::read_snapshot(uint64_t agent_id, uint64_t seq,
                                                   std::string_view who) {
  rocksdb::PinnableSlice v;
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(family::snapshots),
                          agent_seq_key(agent_id, seq), &v);
  if (s.IsNotFound()) return std::optional<record>();
  if (!s.ok()) return from_rocks(s, "reading snapshot of " + std::string(who));
  auto r = decode_record(std::string_view(v.data(), v.size()), what_seq("snapshot", who, seq));
  if (!r) return r.error();
  return std::optional<record>(std::move(*r));
}

result<std::vector<inbox_entry>> store::read_inbox(uint64_t agent_id, std::string_view who) {
  std::vector<inbox_entry> out;
  agent_scan scan(agent_id);
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(scan.options(), impl_->cf(family::inbox)));
  for (it->Seek(agent_prefix(agent_id)); scan.valid(*it); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    uint64_t seq = k.size() == 16 ? key_seq(k) : 0;
    auto e = decode_inbox_entry(std::string_view(it->value().data(), it->value().size()),
                                what_seq("inbox", who, seq));
    if (!e) return e.error();
    out.push_back(std::move(*e));
  }
  KEEL_TRY(from_rocks(it->status(), "scanning inbox of " + std::string(who)));
  return out;
}

result<std::optional<dedupe_entry>> store::find_message(uint64_t agent_id,
                                                        std::string_view message_id,
                                                        std::string_view who) {
  std::string v;
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(family::dedupe),
                          dedupe_key(agent_id, message_id), &v);
  if (s.IsNotFound()) return std::optional<dedupe_entry>();
  if (!s.ok()) return from_rocks(s, "reading message id");
  auto e = decode_dedupe_entry(
      v, "dedupe of " + std::string(who) + " message " + std::string(message_id));
  if (!e) return e.error();
  return std::optional<dedupe_entry>(std::move(*e));
}

result<std::vector<agent_listing>> store::list_agents(std::string_view prefix,
                                                      std::string_view after, std::size_t limit) {
  std::vector<agent_listing> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(family::agents)));
  std::string start(after.empty() || after < prefix ? prefix : after);
  for (it->Seek(start); it->Valid() && out.size() < limit; it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.substr(0, prefix.size()) != prefix) break;
    if (!after.empty() && k <= after) continue;
    auto m = decode_agent_meta(std::string_view(it->value().data(), it->value().size()),
                               "agents entry of " + std::string(k));
    if (!m) return m.error();
    out.push_back({std::string(k), std::move(*m)});
  }
  KEEL_TRY(from_rocks(it->status(), "listing agents"));
  return out;
}

result<std::vector<std::string>> store::agents_with_inbox() {
  std::vector<std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(family::inbox)));
  it->SeekToFirst();
  while (it->Valid()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.size() != 16) return error(code::corruption, "inbox key has a bad size");
    uint64_t id = key_agent_id(k);
    auto e = decode_inbox_entry(std::string_view(it->value().data(), it->value().size()),
                                "inbox of agent id " + std::to_string(id));
    if (!e) return e.error();
    out.push_back(e->agent);
    if (id == UINT64_MAX) break;
    it->Seek(agent_prefix(id + 1));
  }
  KEEL_TRY(from_rocks(it->status(), "scanning inboxes"));
  return out;
}

result<std::vector<due_timer>> store::due_timers(int64_t now_ms, std::size_t limit,
                                                 std::string_view after) {
  std::vector<due_timer> out;
  std::string upper = timer_key(now_ms + 1, 0, 0);
  rocksdb::Slice ub(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->cf(family::timers)));
  if (after.empty())
    it->SeekToFirst();
  else
    it->Seek(rocksdb::Slice(after.data(), after.size()));
  for (; it->Valid() && out.size() < limit; it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k == after) continue;
    if (k.size() != 24) return error(code::corruption, "timer key has a bad size");
    auto parts = parse_timer_key(k);
    auto e = decode_timer_entry(std::string_view(it->value().data(), it->value().size()),
                                "timer " + std::to_string(parts.timer_id) + " of agent id " +
                                    std::to_string(parts.agent_id));
    if (!e) return e.error();
    out.push_back({parts.due_ms, parts.agent_id, parts.timer_id, std::string(k), std::move(*e)});
  }
  KEEL_TRY(from_rocks(it->status(), "scanning timers"));
  return out;
}

result<std::optional<int64_t>> store::next_timer_due() {
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(family::timers)));
  it->SeekToFirst();
  if (it->Valid() && it->key().size() == 24)
    return std::optional<int64_t>(parse_timer_key(std::string_view(it->key().data(), 24)).due_ms);
  KEEL_TRY(from_rocks(it->status(), "scanning timers"));
  return std::optional<int64_t>();
}

result<std::vector<running_effect>> store::running_effects() {
  std::vector<running_effect> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(family::effects)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (k.size() != 16) return error(code::corruption, "effect key has a bad size");
    uint64_t id = key_agent_id(k), effect = key_seq(k);
    auto m = decode_effect_marker(
        std::string_view(it->value().data(), it->value().size()),
        "effect " + std::to_string(effect) + " of agent id " + std::to_string(id));
    if (!m) return m.error();
    out.push_back({id, effect, std::move(*m)});
  }
  KEEL_TRY(from_rocks(it->status(), "scanning effects"));
  return out;
}

bool store::has_blob(std::string_view key) {
  rocksdb::Slice k(key.data(), key.size());
  std::string v;
  bool found = false;
  if (!impl_->db->KeyMayExist(rocksdb::ReadOptions(), impl_->cf(family::blobs), k, &v, &found))
    return false;
  if (found) return true;
  return impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(family::blobs), k, &v).ok();
}

result<std::optional<std::string>> store::get_blob(std::string_view key) {
  std::string v;
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(family::blobs),
                          rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  KEEL_TRY(from_rocks(s, "reading a blob"));
  return std::optional<std::string>(std::move(v));
}

result<std::optional<std::string>> store::get(family f, std::string_view key) {
  std::string v;
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(f),
                          rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  KEEL_TRY(from_rocks(s, std::string("reading ") + family_name(f)));
  return std::optional<std::string>(std::move(v));
}

result<std::vector<std::pair<std::string, std::string>>> store::scan(family f,
                                                                     std::string_view prefix,
                                                                     std::string_view from,
                                                                     std::size_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(f)));
  std::string_view start = from.empty() ? prefix : from;
  for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid() && out.size() < limit;
       it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (!k.starts_with(prefix)) break;
    out.emplace_back(std::string(k), std::string(it->value().data(), it->value().size()));
  }
  KEEL_TRY(from_rocks(it->status(), std::string("scanning ") + family_name(f)));
  return out;
}

uint64_t store::estimate_keys(family f) {
  uint64_t n = 0;
  impl_->db->GetIntProperty(impl_->cf(f), "rocksdb.estimate-num-keys", &n);
  return n;
}

}  // namespace keel::persistence
