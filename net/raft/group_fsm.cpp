#include "net/raft/group_fsm.hpp"

#include <cassert>
#include <cstring>
#include <utility>

#include "base/bytes.hpp"
#include "net/raft/entry.hpp"

namespace keel::raft {

namespace {

using persistence::family;
using persistence::write_op;

constexpr uint8_t marker_format = 1;
constexpr std::size_t marker_size = 1 + 4 + 8 + 8;

write_op put_u64(std::string key, uint64_t v) {
  std::string value;
  put_u64_be(value, v);
  return {family::raft, false, std::move(key), std::move(value)};
}

result<uint64_t> read_u64(persistence::store& db, const std::string& key, group_id g) {
  auto v = db.get(family::raft, key);
  if (!v) return v.error();
  if (!v->has_value()) return uint64_t{0};
  if ((*v)->size() != 8)
    return error(code::corruption, "group " + std::to_string(g) + "'s state machine value " +
                                       std::to_string(static_cast<uint8_t>(key[4])) +
                                       " is not 8 bytes but " + std::to_string((*v)->size()));
  return get_u64_be((*v)->data());
}

// libraft's code for a store error: retried by libraft as any failed apply.
int raft_code(const status& s) {
  return s.error_code() == code::no_space ? RAFT_NOSPACE : RAFT_IOERR;
}

group_fsm* self(raft_fsm* f) {
  return static_cast<group_fsm*>(f->data);
}

}  // namespace

std::string encode_marker(const snapshot_marker& m) {
  std::string out;
  out.reserve(marker_size);
  out.push_back(static_cast<char>(marker_format));
  put_u32_be(out, m.group);
  put_u64_be(out, m.applied);
  put_u64_be(out, m.term_of_record);
  return out;
}

result<snapshot_marker> decode_marker(std::string_view bytes) {
  if (bytes.size() != marker_size)
    return error(code::corruption, "a replicated group's snapshot marker of " +
                                       std::to_string(bytes.size()) + " bytes, not " +
                                       std::to_string(marker_size));
  if (static_cast<uint8_t>(bytes[0]) != marker_format)
    return error(code::corruption, "a replicated group's snapshot marker of unknown format " +
                                       std::to_string(static_cast<uint8_t>(bytes[0])));
  return snapshot_marker{get_u32_be(bytes.data() + 1), get_u64_be(bytes.data() + 5),
                         get_u64_be(bytes.data() + 13)};
}

group_fsm::group_fsm(persistence::store& db, group_id g, persistence::journal_sink* writes)
    : db_(db), own_sink_(db), writes_(writes ? *writes : own_sink_), group_(g) {
  fsm_.version = 2;
  fsm_.data = this;
  fsm_.apply = apply_cb;
  fsm_.snapshot = snapshot_cb;
  fsm_.restore = restore_cb;
  fsm_.snapshot_finalize = finalize_cb;
  fsm_.snapshot_async = nullptr;
}

result<std::unique_ptr<group_fsm>> group_fsm::open(persistence::store& db, group_id g,
                                                   persistence::journal_sink* writes) {
  std::unique_ptr<group_fsm> f(new group_fsm(db, g, writes));
  KEEL_TRY(f->load());
  return f;
}

status group_fsm::load() {
  auto applied = read_u64(db_, applied_key(group_), group_);
  if (!applied) return applied.error();
  auto term = read_u64(db_, term_of_record_key(group_), group_);
  if (!term) return term.error();
  auto ids = read_u64(db_, reserved_ids_key(group_), group_);
  if (!ids) return ids.error();
  applied_ = *applied;
  term_of_record_ = *term;
  reserved_ids_ = *ids;
  return status::ok();
}

int group_fsm::fail(int rv, status why) {
  last_error_ = std::move(why);
  return rv;
}

int group_fsm::apply(const raft_buffer& buf, void** result) {
  assert(raft_ != nullptr);
  const uint64_t index = raft_last_applied(raft_) + 1;
  report_ = {index, apply_outcome::applied};
  *result = &report_;
  if (index <= applied_) {
    report_.outcome = apply_outcome::already_applied;
    last_error_ = status::ok();
    return 0;
  }
  auto e = decode(std::string_view(static_cast<const char*>(buf.base), buf.len));
  if (!e) {
    return fail(RAFT_CORRUPT,
                error(code::corruption, "group " + std::to_string(group_) + ", entry " +
                                            std::to_string(index) + ": " + e.error().message()));
  }
  // The writes are moved out of the decoded entry: one batch of the
  // proposals' ops (unless fenced) and the state machine's own keys.
  persistence::write_set batch;
  uint64_t term = term_of_record_;
  uint64_t ids = reserved_ids_;
  switch (e->kind) {
    case entry_kind::leader_begin:
      term = e->term;
      batch.push_back(put_u64(term_of_record_key(group_), term));
      break;
    case entry_kind::reserve_ids:
      ids = e->limit;
      batch.push_back(put_u64(reserved_ids_key(group_), ids));
      break;
    case entry_kind::writes:
      if (e->term != term_of_record_) {
        report_.outcome = apply_outcome::fenced;
        break;
      }
      for (auto& p : e->proposals)
        for (auto& op : p.ops) batch.push_back(std::move(op));
      break;
  }
  batch.push_back(put_u64(applied_key(group_), index));
  if (status s = writes_.write(batch, /*sync=*/false); !s) {
    return fail(raft_code(s),
                error(s.error_code(), "group " + std::to_string(group_) + ", entry " +
                                          std::to_string(index) + ": " + s.message()));
  }
  applied_ = index;
  term_of_record_ = term;
  reserved_ids_ = ids;
  last_error_ = status::ok();
  return 0;
}

int group_fsm::snapshot(raft_buffer* bufs[], unsigned* n_bufs) {
  const std::string m = encode_marker({group_, applied_, term_of_record_});
  auto* array = static_cast<raft_buffer*>(raft_malloc(sizeof(raft_buffer)));
  void* base = raft_malloc(m.size());
  if (array == nullptr || base == nullptr) {
    raft_free(array);
    raft_free(base);
    return RAFT_NOMEM;
  }
  std::memcpy(base, m.data(), m.size());
  array[0].base = base;
  array[0].len = m.size();
  *bufs = array;
  *n_bufs = 1;
  return 0;
}

int group_fsm::restore(raft_buffer* buf) {
  // libraft frees `buf` itself when restore fails; it is ours only once we
  // return 0.
  auto m = decode_marker(std::string_view(static_cast<const char*>(buf->base), buf->len));
  if (!m) return fail(RAFT_CORRUPT, m.error());
  if (m->group != group_)
    return fail(RAFT_CORRUPT,
                error(code::corruption, "a snapshot of group " + std::to_string(m->group) +
                                            " offered to group " + std::to_string(group_)));
  // The group's data (and with it these keys) may have been streamed into
  // the store since open.
  if (status s = load(); !s) return fail(raft_code(s), s);
  // Data left incomplete by a fetch cut short (a restart in the middle):
  // the io applies nothing until a new fetch has replaced it, and then
  // this state machine rereads its keys (reload).
  auto incomplete = db_.get(family::raft, fetching_key(group_));
  if (!incomplete) return fail(raft_code(incomplete.error()), incomplete.error());
  if (applied_ < m->applied && !incomplete->has_value())
    return fail(
        RAFT_INVALID,
        error(code::conflict,
              "group " + std::to_string(group_) + ": the snapshot is at applied index " +
                  std::to_string(m->applied) + " but this store only holds the state up to " +
                  std::to_string(applied_) +
                  ": the group's data must be streamed in before the snapshot is installed"));
  raft_free(buf->base);
  buf->base = nullptr;
  last_error_ = status::ok();
  return 0;
}

std::optional<apply_report> group_fsm::report_of(const apply_request* req, const void* result) {
  if (result == nullptr) return std::nullopt;
  const auto* r = static_cast<const apply_report*>(result);
  if (r->index != req->index) return std::nullopt;
  return *r;
}

int group_fsm::apply_cb(raft_fsm* f, const raft_buffer* buf, void** result) {
  return self(f)->apply(*buf, result);
}

int group_fsm::snapshot_cb(raft_fsm* f, raft_buffer* bufs[], unsigned* n_bufs) {
  return self(f)->snapshot(bufs, n_bufs);
}

int group_fsm::restore_cb(raft_fsm* f, raft_buffer* buf) {
  return self(f)->restore(buf);
}

int group_fsm::finalize_cb(raft_fsm*, raft_buffer* bufs[], unsigned* n_bufs) {
  // Version 2: libraft takes no ownership of what snapshot() returned.
  for (unsigned i = 0; i < *n_bufs; ++i) raft_free((*bufs)[i].base);
  raft_free(*bufs);
  *bufs = nullptr;
  *n_bufs = 0;
  return 0;
}

}  // namespace keel::raft
