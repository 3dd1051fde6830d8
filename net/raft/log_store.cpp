#include "net/raft/log_store.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "base/bytes.hpp"
#include "net/raft/message_codec.hpp"

namespace keel::raft {

using persistence::family;
using persistence::write_op;
using persistence::write_set;

namespace {

// Entries are read in pages of this many keys.
constexpr std::size_t scan_page = 4096;

status bad_value(group_id g, std::string_view what) {
  return error(code::corruption,
               "raft state of group " + std::to_string(g) + ": " + std::string(what));
}

std::string u64_value(uint64_t v) {
  std::string s;
  put_u64_be(s, v);
  return s;
}

result<uint64_t> read_u64(persistence::store& db, group_id g, const std::string& key,
                          std::string_view what) {
  auto v = db.get(family::raft, key);
  if (!v) return v.error();
  if (!v->has_value()) return uint64_t{0};
  if ((*v)->size() != 8) return bad_value(g, std::string(what) + " is not 8 bytes");
  return get_u64_be((*v)->data());
}

// raft_malloc(0) may answer null, which libraft reads as "no memory" or "no
// batch": every allocation asks for at least one byte.
void* alloc_at_least_one(std::size_t n) {
  return raft_malloc(n == 0 ? 1 : n);
}

struct stored_entry {
  raft_term term;
  uint8_t type;
  std::string_view data;
};

}  // namespace

void release(raft_snapshot* snapshot) {
  if (snapshot == nullptr) return;
  raft_configuration_close(&snapshot->configuration);
  for (unsigned i = 0; i < snapshot->n_bufs; ++i) raft_free(snapshot->bufs[i].base);
  raft_free(snapshot->bufs);
  raft_free(snapshot);
}

void release(loaded_log& log) {
  release(log.snapshot);
  log.snapshot = nullptr;
  if (log.n_entries > 0) raft_free(log.entries[0].batch);
  raft_free(log.entries);
  log.entries = nullptr;
  log.n_entries = 0;
}

log_store::log_store(persistence::store& db, group_id g) : db_(db), group_(g) {}

result<raft_snapshot*> log_store::read_snapshot() const {
  auto v = db_.get(family::raft, snapshot_key(group_));
  if (!v) return v.error();
  if (!v->has_value()) return static_cast<raft_snapshot*>(nullptr);
  std::string_view in = **v;
  if (in.size() < 17 || static_cast<uint8_t>(in[0]) != snapshot_meta_format) {
    return bad_value(group_, "snapshot metadata of an unknown format");
  }
  auto* s = static_cast<raft_snapshot*>(raft_calloc(1, sizeof(raft_snapshot)));
  if (s == nullptr) return error(code::internal, "out of memory reading a raft snapshot");
  raft_configuration_init(&s->configuration);
  s->index = get_u64_be(in.data() + 1);
  s->term = get_u64_be(in.data() + 9);
  in.remove_prefix(17);
  if (auto st = decode_configuration(in, &s->configuration); !st) {
    release(s);
    return bad_value(group_, "snapshot configuration: " + st.message());
  }
  if (in.size() < 12 || in.size() - 12 != get_u32_be(in.data() + 8)) {
    release(s);
    return bad_value(group_, "snapshot metadata of the wrong length");
  }
  s->configuration_index = get_u64_be(in.data());
  std::string_view data = in.substr(12);
  s->bufs = static_cast<raft_buffer*>(raft_malloc(sizeof(raft_buffer)));
  void* base = alloc_at_least_one(data.size());
  if (s->bufs == nullptr || base == nullptr) {
    raft_free(base);
    release(s);
    return error(code::internal, "out of memory reading a raft snapshot");
  }
  std::memcpy(base, data.data(), data.size());
  s->bufs[0] = raft_buffer{base, data.size()};
  s->n_bufs = 1;
  return s;
}

result<loaded_log> log_store::load() const {
  auto term = read_u64(db_, group_, term_key(group_), "term");
  if (!term) return term.error();
  auto vote = read_u64(db_, group_, vote_key(group_), "vote");
  if (!vote) return vote.error();
  auto snap = read_snapshot();
  if (!snap) return snap.error();
  loaded_log log;
  log.term = *term;
  log.vote = *vote;
  log.snapshot = *snap;

  // Every entry's value, kept alive while the batch is filled.
  std::vector<std::pair<std::string, std::string>> rows;
  const std::string prefix = entry_key(group_, 0).substr(0, 5);
  std::string from = prefix;
  for (;;) {
    auto page = db_.scan(family::raft, prefix, from, scan_page);
    if (!page) {
      release(log);
      return page.error();
    }
    bool full = page->size() == scan_page;
    for (auto& kv : *page) rows.push_back(std::move(kv));
    if (!full) break;
    from = rows.back().first + '\0';
  }

  std::vector<stored_entry> entries;
  entries.reserve(rows.size());
  std::size_t total = 0;
  raft_index first = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto index = entry_index(group_, rows[i].first);
    const std::string& v = rows[i].second;
    if (!index || v.size() < 9) {
      release(log);
      return bad_value(group_, "a log entry that does not decode");
    }
    if (i == 0) first = *index;
    if (*index != first + i) {
      release(log);
      return bad_value(group_, "log entries missing before index " + std::to_string(*index));
    }
    entries.push_back(
        {get_u64_be(v.data()), static_cast<uint8_t>(v[8]), std::string_view(v).substr(9)});
    total += v.size() - 9;
  }

  raft_index after_snapshot = log.snapshot ? log.snapshot->index + 1 : 1;
  if (entries.empty()) {
    log.start_index = after_snapshot;
    return log;
  }
  // Entries start at 1 (no snapshot) or at most right after the snapshot
  // (the trailing entries it kept may come before it).
  if (first > after_snapshot || (log.snapshot == nullptr && first != 1)) {
    release(log);
    return bad_value(group_, "log starts at " + std::to_string(first) + ", after a gap");
  }
  log.start_index = first;
  auto* array = static_cast<raft_entry*>(raft_malloc(entries.size() * sizeof(raft_entry)));
  auto* batch = static_cast<char*>(alloc_at_least_one(total));
  if (array == nullptr || batch == nullptr) {
    raft_free(array);
    raft_free(batch);
    release(log);
    return error(code::internal, "out of memory loading a raft log");
  }
  char* cursor = batch;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    std::memcpy(cursor, entries[i].data.data(), entries[i].data.size());
    array[i].term = entries[i].term;
    array[i].type = entries[i].type;
    array[i].buf = raft_buffer{cursor, entries[i].data.size()};
    array[i].batch = batch;
    cursor += entries[i].data.size();
  }
  log.entries = array;
  log.n_entries = entries.size();
  return log;
}

status log_store::set_term(raft_term term) {
  write_set ops;
  ops.push_back(write_op{family::raft, false, term_key(group_), u64_value(term)});
  ops.push_back(write_op{family::raft, true, vote_key(group_), {}});
  return db_.write(ops, /*sync=*/true);
}

status log_store::set_vote(raft_id id) {
  return db_.write({write_op{family::raft, false, vote_key(group_), u64_value(id)}},
                   /*sync=*/true);
}

status log_store::bootstrap(const raft_configuration& conf) {
  auto term = read_u64(db_, group_, term_key(group_), "term");
  if (!term) return term.error();
  auto snap = db_.get(family::raft, snapshot_key(group_));
  if (!snap) return snap.error();
  const std::string prefix = entry_key(group_, 0).substr(0, 5);
  auto any = db_.scan(family::raft, prefix, prefix, 1);
  if (!any) return any.error();
  if (*term != 0 || snap->has_value() || !any->empty()) {
    return error(code::conflict, "raft group " + std::to_string(group_) + " already has state");
  }
  raft_buffer buf{};
  if (int rv = raft_configuration_encode(&conf, &buf); rv != 0) {
    return error(code::internal, "encoding a raft configuration: " + error_text(rv));
  }
  raft_entry first{1, RAFT_CHANGE, buf, nullptr};
  write_set ops = append_ops(1, &first, 1);
  raft_free(buf.base);
  ops.push_back(write_op{family::raft, false, term_key(group_), u64_value(1)});
  return db_.write(ops, /*sync=*/true);
}

result<raft_index> log_store::last_index() const {
  auto log = load();
  if (!log) return log.error();
  raft_index last = 0;
  if (log->n_entries != 0)
    last = log->start_index + log->n_entries - 1;
  else if (log->snapshot != nullptr)
    last = log->snapshot->index;
  release(*log);
  return last;
}

status log_store::recover(const raft_configuration& conf) {
  auto last = last_index();
  if (!last) return last.error();
  if (*last == 0)
    return error(code::conflict, "raft group " + std::to_string(group_) + " has no state");
  auto term = read_u64(db_, group_, term_key(group_), "term");
  if (!term) return term.error();
  raft_buffer buf{};
  if (int rv = raft_configuration_encode(&conf, &buf); rv != 0)
    return error(code::internal, "encoding a raft configuration: " + error_text(rv));
  raft_entry entry{*term, RAFT_CHANGE, buf, nullptr};
  write_set ops = append_ops(*last + 1, &entry, 1);
  raft_free(buf.base);
  return db_.write(ops, /*sync=*/true);
}

write_set log_store::append_ops(raft_index first, const raft_entry* entries, unsigned n) const {
  write_set ops;
  ops.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    std::string v;
    v.reserve(9 + entries[i].buf.len);
    put_u64_be(v, entries[i].term);
    v.push_back(static_cast<char>(entries[i].type));
    v.append(static_cast<const char*>(entries[i].buf.base), entries[i].buf.len);
    ops.push_back(write_op{family::raft, false, entry_key(group_, first + i), std::move(v)});
  }
  return ops;
}

write_set log_store::truncate_ops(raft_index index) const {
  return {write_op{family::raft, true, entry_key(group_, index), {}, entry_end(group_)}};
}

write_set log_store::snapshot_ops(const raft_snapshot& snapshot, unsigned trailing) const {
  std::string v;
  v.push_back(static_cast<char>(snapshot_meta_format));
  put_u64_be(v, snapshot.index);
  put_u64_be(v, snapshot.term);
  encode_configuration(v, snapshot.configuration);
  put_u64_be(v, snapshot.configuration_index);
  std::size_t len = 0;
  for (unsigned i = 0; i < snapshot.n_bufs; ++i) len += snapshot.bufs[i].len;
  put_u32_be(v, static_cast<uint32_t>(len));
  for (unsigned i = 0; i < snapshot.n_bufs; ++i) {
    v.append(static_cast<const char*>(snapshot.bufs[i].base), snapshot.bufs[i].len);
  }
  write_set ops;
  ops.push_back(write_op{family::raft, false, snapshot_key(group_), std::move(v)});
  if (trailing == 0) {
    ops.push_back(write_op{family::raft, true, entry_key(group_, 0), {}, entry_end(group_)});
  } else if (snapshot.index > trailing) {
    // libraft's own log drops the entries up to index - trailing (its
    // logSnapshot): the store keeps exactly what libraft does.
    ops.push_back(write_op{family::raft,
                           true,
                           entry_key(group_, 0),
                           {},
                           entry_key(group_, snapshot.index - trailing + 1)});
  }
  return ops;
}

}  // namespace keel::raft
