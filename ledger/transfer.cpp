#include "ledger/transfer.hpp"

#include <set>

#include "base/bytes.hpp"
#include "ledger/codec.hpp"
#include "ledger/type_catalog.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"
#include "persistence/values.hpp"

namespace keel::actors {

using persistence::family;

std::size_t agent_bundle::bytes() const {
  std::size_t n = name.size();
  for (const auto& kv : kvs) n += kv.key.size() + kv.value.size() + 1;
  return n;
}

namespace {

constexpr family id_prefixed[] = {family::ledger, family::snapshots, family::inbox, family::dedupe,
                                  family::effects};

// Reads every pair of `f` under `prefix`, in pages.
status scan_all(persistence::store& db, family f, std::string_view prefix,
                const std::function<status(std::string&, std::string&)>& each) {
  std::string from;
  for (;;) {
    auto page = db.scan(f, prefix, from, 1024);
    if (!page) return page.error();
    for (auto& [k, v] : *page) KEEL_TRY(each(k, v));
    if (page->size() < 1024) return status::ok();
    from = page->back().first + '\0';
  }
}

}  // namespace

result<agent_bundle> export_agent(persistence::store& db, std::string_view name) {
  auto raw = db.get(family::agents, name);
  if (!raw) return raw.error();
  if (!*raw) return error(code::not_found, "no agent named '" + std::string(name) + "'");
  auto meta = persistence::decode_agent_meta(**raw, name);
  if (!meta) return meta.error();
  agent_bundle b;
  b.name = std::string(name);
  b.kvs.push_back({family::agents, false, std::string(name), std::move(**raw)});

  // Blobs the records refer to: decoding with a reader that notes each key.
  std::set<std::string> blob_keys;
  blob_reader base = store_blobs(db);
  blob_reader noting = [&](std::string_view key) -> result<std::optional<std::string>> {
    blob_keys.emplace(key);
    return base(key);
  };
  const std::string prefix = persistence::agent_prefix(meta->id);
  for (family f : id_prefixed) {
    KEEL_TRY(scan_all(db, f, prefix, [&](std::string& k, std::string& v) -> status {
      if (f == family::ledger || f == family::snapshots) {
        auto r = persistence::decode_record(v, name);
        if (!r) return r.error();
        if (f == family::ledger && (r->type & blob_ref_flag)) {
          auto e = event_from_record(*r, name, noting);
          if (!e) return e.error();
        } else if (f == family::snapshots &&
                   (r->type & ~snapshot_extras_flag) == snapshot_with_blobs_type) {
          auto s = snapshot_from_record(*r, name, noting);
          if (!s) return s.error();
        }
      }
      b.kvs.push_back({f, false, std::move(k), std::move(v)});
      return status::ok();
    }));
  }
  // Timers are keyed by due time first: the whole family is scanned.
  KEEL_TRY(scan_all(db, family::timers, "", [&](std::string& k, std::string& v) -> status {
    if (k.size() == 24 && persistence::parse_timer_key(k).agent_id == meta->id)
      b.kvs.push_back({family::timers, false, std::move(k), std::move(v)});
    return status::ok();
  }));
  for (const auto& key : blob_keys) {
    auto blob = db.get_blob(key);
    if (!blob) return blob.error();
    if (*blob) b.kvs.push_back({family::blobs, false, key, std::move(**blob)});
  }
  // The versions of its type: the receiver may not have the one it runs,
  // and replay there needs each version its ledger names.
  KEEL_TRY(scan_all(db, family::meta, type_version_key(meta->type, ""),
                    [&](std::string& k, std::string& v) -> status {
                      b.kvs.push_back({family::meta, false, std::move(k), std::move(v)});
                      return status::ok();
                    }));
  return b;
}

result<std::vector<std::string>> agents_where(persistence::store& db,
                                              const std::function<bool(std::string_view)>& pick) {
  std::vector<std::string> out;
  KEEL_TRY(scan_all(db, family::agents, "", [&](std::string& k, std::string&) -> status {
    if (pick(k)) out.push_back(std::move(k));
    return status::ok();
  }));
  return out;
}

namespace {

void put_str(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

bool get_str(std::string_view& in, std::string& s) {
  auto n = get_varint(in);
  if (!n || *n > in.size()) return false;
  s.assign(in.substr(0, *n));
  in.remove_prefix(*n);
  return true;
}

}  // namespace

std::string encode_bundles(const std::vector<agent_bundle>& bundles) {
  std::string out;
  put_varint(out, bundles.size());
  for (const auto& b : bundles) {
    put_str(out, b.name);
    put_varint(out, b.kvs.size());
    for (const auto& kv : b.kvs) {
      out.push_back(static_cast<char>(kv.cf));
      put_str(out, kv.key);
      put_str(out, kv.value);
    }
  }
  return out;
}

result<std::vector<agent_bundle>> decode_bundles(std::string_view in) {
  const auto bad = [] { return error(code::corruption, "a shard transfer chunk is malformed"); };
  auto n = get_varint(in);
  if (!n) return bad();
  std::vector<agent_bundle> out;
  for (uint64_t i = 0; i < *n; ++i) {
    agent_bundle b;
    if (!get_str(in, b.name)) return bad();
    auto k = get_varint(in);
    if (!k) return bad();
    for (uint64_t j = 0; j < *k; ++j) {
      if (in.empty()) return bad();
      auto f = static_cast<uint8_t>(in.front());
      in.remove_prefix(1);
      // Node-wide families never travel: meta (shard maps), outbox, and raft
      // (a replicated group's own log and state, not an agent's).
      if (f >= persistence::family_count || f == static_cast<uint8_t>(family::meta) ||
          f == static_cast<uint8_t>(family::outbox) || f == static_cast<uint8_t>(family::raft))
        return bad();
      persistence::write_op op{static_cast<family>(f), false, {}, {}};
      if (!get_str(in, op.key) || !get_str(in, op.value)) return bad();
      b.kvs.push_back(std::move(op));
    }
    out.push_back(std::move(b));
  }
  if (!in.empty()) return bad();
  return out;
}

}  // namespace keel::actors
