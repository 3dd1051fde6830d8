// Consistent read views: a RocksDB snapshot per view, released by the view
// or, when the store reopens, by the store (a snapshot belongs to the
// database that made it).

#include <rocksdb/db.h>

#include "persistence/store_engine.hpp"

namespace keel::persistence {

namespace {

status ended() {
  return error(code::unavailable,
               "the store was reopened since this read view was made; start over with a new one");
}

}  // namespace

void store::impl::end_views() {
  std::lock_guard lk(views_mu);
  for (auto& w : views)
    if (auto p = w.lock(); p && p->snap != nullptr) {
      db->ReleaseSnapshot(p->snap);
      p->snap = nullptr;
    }
  views.clear();
}

result<std::unique_ptr<read_view>> store::view() {
  std::shared_lock lk(impl_->mu);
  if (!impl_->db) return error(code::unavailable, "the store is being reopened; retry in a moment");
  auto p = std::make_shared<read_view::pin>();
  p->snap = impl_->db->GetSnapshot();
  {
    std::lock_guard vl(impl_->views_mu);
    // Ended views leave expired entries behind: drop them as we go.
    std::erase_if(impl_->views, [](const auto& w) { return w.expired(); });
    impl_->views.push_back(p);
  }
  return std::unique_ptr<read_view>(new read_view(*this, std::move(p)));
}

read_view::~read_view() {
  auto& m = *store_.impl_;
  std::shared_lock lk(m.mu);
  std::lock_guard vl(m.views_mu);
  if (pin_->snap != nullptr && m.db) m.db->ReleaseSnapshot(pin_->snap);
  pin_->snap = nullptr;
}

result<std::optional<std::string>> read_view::get(family f, std::string_view key) const {
  auto& m = *store_.impl_;
  std::shared_lock lk(m.mu);
  if (!m.db || pin_->snap == nullptr) return ended();
  rocksdb::ReadOptions ro;
  ro.snapshot = pin_->snap;
  std::string v;
  auto s = m.db->Get(ro, m.cf(f), rocksdb::Slice(key.data(), key.size()), &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return m.read_error(s, std::string("reading ") + family_name(f) + " in a view");
  return std::optional<std::string>(std::move(v));
}

result<std::vector<std::pair<std::string, std::string>>> read_view::scan(
    family f, std::string_view from, std::string_view end, std::size_t limit,
    std::size_t max_bytes) const {
  auto& m = *store_.impl_;
  std::shared_lock lk(m.mu);
  if (!m.db || pin_->snap == nullptr) return ended();
  rocksdb::ReadOptions ro;
  ro.snapshot = pin_->snap;
  rocksdb::Slice upper(end.data(), end.size());
  if (!end.empty()) ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(m.db->NewIterator(ro, m.cf(f)));
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t bytes = 0;
  for (it->Seek(rocksdb::Slice(from.data(), from.size()));
       it->Valid() && out.size() < limit && (out.empty() || bytes < max_bytes); it->Next()) {
    bytes += it->key().size() + it->value().size();
    out.emplace_back(it->key().ToString(), it->value().ToString());
  }
  if (!it->status().ok())
    return m.read_error(it->status(), std::string("scanning ") + family_name(f) + " in a view");
  return out;
}

}  // namespace keel::persistence
