// The store's reads. Each holds the store's lock shared (a reopen waits for
// it) and reports a corrupt block as a corruption error that names the
// file, its offset and the keys the file holds; the whole-family scans
// the node runs at start-up (inboxes, effects, timers, the agent list)
// skip past a damaged file instead of failing, so one bad block costs the
// agents whose data it holds and nothing else.

#include <regex>

#include <rocksdb/db.h>
#include <rocksdb/metadata.h>

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/store_engine.hpp"

namespace keel::persistence {

namespace {

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

// An iterator at one agent's last key in a family of agent id + seq keys:
// seq() is that key's seq when there is one.
class agent_last {
 public:
  agent_last(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf, uint64_t agent_id)
      : agent_(agent_id), lower_(agent_prefix(agent_id)), lower_slice_(lower_) {
    ro_.iterate_lower_bound = &lower_slice_;
    it_.reset(db.NewIterator(ro_, cf));
    it_->SeekForPrev(agent_seq_key(agent_id, UINT64_MAX));
  }
  std::optional<uint64_t> seq() const {
    if (!it_->Valid() || it_->key().size() != 16) return std::nullopt;
    std::string_view k(it_->key().data(), 16);
    if (key_agent_id(k) != agent_) return std::nullopt;
    return key_seq(k);
  }
  rocksdb::Iterator& it() { return *it_; }

 private:
  uint64_t agent_;
  std::string lower_;
  rocksdb::Slice lower_slice_;
  rocksdb::ReadOptions ro_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

std::string what_seq(std::string_view family, std::string_view who, uint64_t seq) {
  return std::string(family) + " of " + std::string(who) + " seq " + std::to_string(seq);
}

// A key as an operator can read it: agent ids and seqs for the families
// keyed by them, the name for agents, text or hex otherwise.
std::string printable_key(const std::string& cf, std::string_view k) {
  if ((cf == "ledger" || cf == "snapshots" || cf == "inbox" || cf == "effects") && k.size() == 16)
    return "agent id " + std::to_string(key_agent_id(k)) + " seq " + std::to_string(key_seq(k));
  if ((cf == "dedupe" || cf == "outbox") && k.size() >= 8)
    return "agent id " + std::to_string(get_u64_be(k.data()));
  if (cf == "timers" && k.size() == 24) {
    auto t = parse_timer_key(k);
    return "due " + std::to_string(t.due_ms) + " agent id " + std::to_string(t.agent_id);
  }
  bool text = std::all_of(k.begin(), k.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  if (text) return std::string(k);
  static const char* hex = "0123456789abcdef";
  std::string out = "0x";
  for (unsigned char c : k) {
    out.push_back(hex[c >> 4]);
    out.push_back(hex[c & 15]);
  }
  return out;
}

// The table file a RocksDB corruption message names ("... in /dir/9.sst
// offset N size M"), if any.
std::string file_named(const std::string& message) {
  static const std::regex sst(R"((\S+\.sst))");
  std::smatch m;
  return std::regex_search(message, m, sst) ? m[1].str() : std::string();
}

// Whether `key` is at or past the end of what `it` may still return, in a
// family scan that skipped a damaged range.
std::string successor(std::string key) {
  key.push_back('\0');
  return key;
}

}  // namespace

void store::impl::note_corruption(const rocksdb::Status& s) {
  const std::string msg = s.ToString();
  const std::string file = file_named(msg);
  damaged_file d;
  d.file = file.empty() ? "(unknown file)" : file;
  d.error = msg;
  d.seen_ms = wall_ms();
  if (!file.empty() && db) {
    std::vector<rocksdb::LiveFileMetaData> live;
    db->GetLiveFilesMetaData(&live);
    const std::string base =
        file.substr(file.rfind('/') == std::string::npos ? 0 : file.rfind('/'));
    for (const auto& f : live) {
      if (f.name != base && f.db_path + f.name != file) continue;
      d.family = f.column_family_name;
      d.smallest = printable_key(f.column_family_name, f.smallestkey);
      d.largest = printable_key(f.column_family_name, f.largestkey);
      break;
    }
  }
  std::lock_guard lk(state_mu);
  for (const auto& known : damage)
    if (known.file == d.file) return;
  log::error("store: corrupt table file " + d.file + " (" + d.family + " keys " + d.smallest +
                 " .. " + d.largest + "): " + d.error,
             {{"file", d.file}});
  damage.push_back(std::move(d));
}

status store::impl::read_error(const rocksdb::Status& s, const std::string& what) {
  if (!s.IsCorruption()) return from_rocks(s, what);
  note_corruption(s);
  std::string where;
  {
    std::lock_guard lk(state_mu);
    const std::string file = file_named(s.ToString());
    for (const auto& d : damage)
      if (d.file == file && !d.family.empty())
        where = " (the file holds " + d.family + " keys from " + d.smallest + " to " + d.largest +
                "; docs/operations.md, \"Faults\")";
  }
  return error(code::corruption, what + ": " + s.ToString() + where);
}

namespace {

// Holds the store's lock shared for one read; fails when no database is
// open (a reopen found none to open).
class reader {
 public:
  explicit reader(store::impl& m) : lk_(m.mu), m_(m) {}
  status ready() const {
    return m_.db ? status::ok()
                 : error(code::unavailable, "the store is being reopened; retry in a moment");
  }
  rocksdb::DB& db() const { return *m_.db; }

 private:
  std::shared_lock<std::shared_mutex> lk_;
  store::impl& m_;
};

// Walks a whole family from `start`, skipping past the key range of any
// damaged table file it meets (recorded, and warned about, by the store).
// `visit` returns false to stop.
template <class Visit>
status scan_family(store::impl& m, family f, const rocksdb::ReadOptions& ro, std::string start,
                   Visit&& visit) {
  std::unique_ptr<rocksdb::Iterator> it(m.db->NewIterator(ro, m.cf(f)));
  if (start.empty())
    it->SeekToFirst();
  else
    it->Seek(start);
  for (int skips = 0; skips < 1000;) {
    for (; it->Valid(); it->Next())
      if (!visit(std::string_view(it->key().data(), it->key().size()),
                 std::string_view(it->value().data(), it->value().size())))
        return status::ok();
    const auto s = it->status();
    if (s.ok()) return status::ok();
    if (!s.IsCorruption()) return from_rocks(s, std::string("scanning ") + family_name(f));
    m.note_corruption(s);
    // Go on past the damaged file: its keys are lost to this scan.
    std::string past;
    std::vector<rocksdb::LiveFileMetaData> live;
    m.db->GetLiveFilesMetaData(&live);
    const std::string file = file_named(s.ToString());
    for (const auto& lf : live)
      if (!file.empty() && file.size() >= lf.name.size() &&
          file.compare(file.size() - lf.name.size(), lf.name.size(), lf.name) == 0)
        past = successor(lf.largestkey);
    if (past.empty()) return m.read_error(s, std::string("scanning ") + family_name(f));
    m.warn(std::string("a scan of ") + family_name(f) + " skipped the keys of the damaged file " +
           file + "; agents there start only when asked for");
    ++skips;
    it->Seek(past);
  }
  return error(code::corruption, std::string("scanning ") + family_name(f) +
                                     ": too many damaged files; see docs/operations.md");
}

}  // namespace

result<std::optional<agent_meta>> store::get_agent(std::string_view name) {
  reader r(*impl_);
  KEEL_TRY(r.ready());
  rocksdb::PinnableSlice v;  // no copy out of the block cache / memtable
  auto s = r.db().Get(rocksdb::ReadOptions(), impl_->cf(family::agents),
                      rocksdb::Slice(name.data(), name.size()), &v);
  if (s.IsNotFound()) return std::optional<agent_meta>();
  if (!s.ok()) return impl_->read_error(s, "reading agent " + std::string(name));
  auto m = decode_agent_meta(std::string_view(v.data(), v.size()),
                             "agents entry of " + std::string(name));
  if (!m) return m.error();
  return std::optional<agent_meta>(std::move(*m));
}

result<std::vector<std::pair<uint64_t, record>>> store::read_ledger(uint64_t agent_id,
                                                                    uint64_t from,
                                                                    std::size_t limit,
                                                                    std::string_view who) {
  std::vector<std::pair<uint64_t, record>> out;
  if (limit == 0) return out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  agent_scan scan(agent_id);
  std::unique_ptr<rocksdb::Iterator> it(
      rd.db().NewIterator(scan.options(), impl_->cf(family::ledger)));
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
  if (!it->status().ok())
    return impl_->read_error(it->status(), "reading the ledger of " + std::string(who));
  return out;
}

result<uint64_t> store::last_ledger_seq(uint64_t agent_id) {
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  agent_last last(rd.db(), impl_->cf(family::ledger), agent_id);
  if (auto seq = last.seq()) return *seq;
  if (!last.it().status().ok())
    return impl_->read_error(last.it().status(), "seeking the ledger's end");
  return uint64_t{0};
}

result<std::optional<std::pair<uint64_t, record>>> store::latest_snapshot(uint64_t agent_id,
                                                                          std::string_view who) {
  using out_t = std::optional<std::pair<uint64_t, record>>;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  agent_last last(rd.db(), impl_->cf(family::snapshots), agent_id);
  auto seq = last.seq();
  if (!seq) {
    if (!last.it().status().ok())
      return impl_->read_error(last.it().status(), "seeking the snapshot of " + std::string(who));
    return out_t();
  }
  const auto v = last.it().value();
  auto r = decode_record(std::string_view(v.data(), v.size()), what_seq("snapshot", who, *seq));
  if (!r) return r.error();
  return out_t(std::pair<uint64_t, record>(*seq, std::move(*r)));
}

result<std::optional<record>> store::read_snapshot(uint64_t agent_id, uint64_t seq,
                                                   std::string_view who) {
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  rocksdb::PinnableSlice v;
  auto s = rd.db().Get(rocksdb::ReadOptions(), impl_->cf(family::snapshots),
                       agent_seq_key(agent_id, seq), &v);
  if (s.IsNotFound()) return std::optional<record>();
  if (!s.ok()) return impl_->read_error(s, "reading the snapshot of " + std::string(who));
  auto r = decode_record(std::string_view(v.data(), v.size()), what_seq("snapshot", who, seq));
  if (!r) return r.error();
  return std::optional<record>(std::move(*r));
}

result<std::vector<inbox_entry>> store::read_inbox(uint64_t agent_id, std::string_view who) {
  std::vector<inbox_entry> out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  agent_scan scan(agent_id);
  std::unique_ptr<rocksdb::Iterator> it(
      rd.db().NewIterator(scan.options(), impl_->cf(family::inbox)));
  for (it->Seek(agent_prefix(agent_id)); scan.valid(*it); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    uint64_t seq = k.size() == 16 ? key_seq(k) : 0;
    auto e = decode_inbox_entry(std::string_view(it->value().data(), it->value().size()),
                                what_seq("inbox", who, seq));
    if (!e) return e.error();
    out.push_back(std::move(*e));
  }
  if (!it->status().ok())
    return impl_->read_error(it->status(), "reading the inbox of " + std::string(who));
  return out;
}

result<std::optional<dedupe_entry>> store::find_message(uint64_t agent_id,
                                                        std::string_view message_id,
                                                        std::string_view who) {
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::string v;
  auto s = rd.db().Get(rocksdb::ReadOptions(), impl_->cf(family::dedupe),
                       dedupe_key(agent_id, message_id), &v);
  if (s.IsNotFound()) return std::optional<dedupe_entry>();
  if (!s.ok()) return impl_->read_error(s, "reading a message id of " + std::string(who));
  const std::string what = "dedupe of " + std::string(who) + " message " + std::string(message_id);
  auto e = decode_dedupe_entry(v, what);
  if (!e) return e.error();
  // Written before entries carried their expiry: the default window from
  // when it was written, as the trimming reads it.
  if (e->processed && e->expires_ms == 0 && impl_->opts.dedupe_default_window_ms > 0) {
    auto rec = decode_record(v, what);
    if (!rec) return rec.error();
    e->expires_ms = rec->time_ms + impl_->opts.dedupe_default_window_ms;
  }
  return std::optional<dedupe_entry>(std::move(*e));
}

result<std::vector<agent_listing>> store::list_agents(std::string_view prefix,
                                                      std::string_view after, std::size_t limit) {
  std::vector<agent_listing> out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::string start(after.empty() || after < prefix ? prefix : after);
  status bad;
  KEEL_TRY(scan_family(*impl_, family::agents, rocksdb::ReadOptions(), start,
                       [&](std::string_view k, std::string_view v) {
                         if (out.size() >= limit || k.substr(0, prefix.size()) != prefix)
                           return false;
                         if (!after.empty() && k <= after) return true;
                         auto m = decode_agent_meta(v, "agents entry of " + std::string(k));
                         if (!m) {
                           bad = m.error();
                           return false;
                         }
                         out.push_back({std::string(k), std::move(*m)});
                         return true;
                       }));
  KEEL_TRY(bad);
  return out;
}

result<std::vector<std::string>> store::agents_with_inbox() {
  std::vector<std::string> out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  status bad;
  uint64_t last = 0;
  bool any = false;
  // One entry per agent is enough: its name, then on to the next agent.
  KEEL_TRY(scan_family(*impl_, family::inbox, rocksdb::ReadOptions(), {},
                       [&](std::string_view k, std::string_view v) {
                         if (k.size() != 16) {
                           bad = error(code::corruption, "inbox key has a bad size");
                           return false;
                         }
                         const uint64_t id = key_agent_id(k);
                         if (any && id == last) return true;
                         auto e = decode_inbox_entry(v, "inbox of agent id " + std::to_string(id));
                         if (!e) {
                           bad = e.error();
                           return false;
                         }
                         out.push_back(e->agent);
                         any = true;
                         last = id;
                         return true;
                       }));
  KEEL_TRY(bad);
  return out;
}

result<std::vector<due_timer>> store::due_timers(int64_t now_ms, std::size_t limit,
                                                 std::string_view after) {
  std::vector<due_timer> out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::string upper = timer_key(now_ms + 1, 0, 0);
  rocksdb::Slice ub(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &ub;
  status bad;
  KEEL_TRY(scan_family(
      *impl_, family::timers, ro, std::string(after), [&](std::string_view k, std::string_view v) {
        if (out.size() >= limit) return false;
        if (k == after) return true;
        if (k.size() != 24) {
          bad = error(code::corruption, "timer key has a bad size");
          return false;
        }
        auto parts = parse_timer_key(k);
        auto e = decode_timer_entry(v, "timer " + std::to_string(parts.timer_id) + " of agent id " +
                                           std::to_string(parts.agent_id));
        if (!e) {
          bad = e.error();
          return false;
        }
        out.push_back(
            {parts.due_ms, parts.agent_id, parts.timer_id, std::string(k), std::move(*e)});
        return true;
      }));
  KEEL_TRY(bad);
  return out;
}

result<std::optional<int64_t>> store::next_timer_due() {
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::optional<int64_t> due;
  KEEL_TRY(scan_family(*impl_, family::timers, rocksdb::ReadOptions(), {},
                       [&](std::string_view k, std::string_view) {
                         if (k.size() == 24) due = parse_timer_key(k).due_ms;
                         return false;
                       }));
  return due;
}

result<std::vector<running_effect>> store::running_effects() {
  std::vector<running_effect> out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  status bad;
  KEEL_TRY(scan_family(*impl_, family::effects, rocksdb::ReadOptions(), {},
                       [&](std::string_view k, std::string_view v) {
                         if (k.size() != 16) {
                           bad = error(code::corruption, "effect key has a bad size");
                           return false;
                         }
                         uint64_t id = key_agent_id(k), effect = key_seq(k);
                         auto m = decode_effect_marker(v, "effect " + std::to_string(effect) +
                                                              " of agent id " + std::to_string(id));
                         if (!m) {
                           bad = m.error();
                           return false;
                         }
                         out.push_back({id, effect, std::move(*m)});
                         return true;
                       }));
  KEEL_TRY(bad);
  return out;
}

bool store::has_blob(std::string_view key) {
  reader rd(*impl_);
  if (!rd.ready()) return false;
  rocksdb::Slice k(key.data(), key.size());
  std::string v;
  bool found = false;
  if (!rd.db().KeyMayExist(rocksdb::ReadOptions(), impl_->cf(family::blobs), k, &v, &found))
    return false;
  if (found) return true;
  return rd.db().Get(rocksdb::ReadOptions(), impl_->cf(family::blobs), k, &v).ok();
}

result<std::optional<std::string>> store::get_blob(std::string_view key) {
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::string v;
  auto s = rd.db().Get(rocksdb::ReadOptions(), impl_->cf(family::blobs),
                       rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return impl_->read_error(s, "reading a blob");
  return std::optional<std::string>(std::move(v));
}

result<std::optional<std::string>> store::get(family f, std::string_view key) {
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::string v;
  auto s =
      rd.db().Get(rocksdb::ReadOptions(), impl_->cf(f), rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return impl_->read_error(s, std::string("reading ") + family_name(f));
  return std::optional<std::string>(std::move(v));
}

result<std::vector<std::pair<std::string, std::string>>> store::scan(family f,
                                                                     std::string_view prefix,
                                                                     std::string_view from,
                                                                     std::size_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  reader rd(*impl_);
  KEEL_TRY(rd.ready());
  std::unique_ptr<rocksdb::Iterator> it(rd.db().NewIterator(rocksdb::ReadOptions(), impl_->cf(f)));
  std::string_view start = from.empty() ? prefix : from;
  for (it->Seek(rocksdb::Slice(start.data(), start.size())); it->Valid() && out.size() < limit;
       it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (!k.starts_with(prefix)) break;
    out.emplace_back(std::string(k), std::string(it->value().data(), it->value().size()));
  }
  if (!it->status().ok())
    return impl_->read_error(it->status(), std::string("scanning ") + family_name(f));
  return out;
}

}  // namespace keel::persistence
