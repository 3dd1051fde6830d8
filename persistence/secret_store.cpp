#include "persistence/secret_store.hpp"

#include "persistence/record.hpp"
#include "persistence/values.hpp"

namespace keel::persistence {

namespace {

constexpr std::string_view secret_prefix = "secret/";
constexpr std::size_t page = 256;

// Every stored (name, record bytes), in name order.
result<std::vector<std::pair<std::string, std::string>>> scan_secrets(store& db) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string from(secret_prefix);
  for (;;) {
    auto got = db.scan(family::meta, secret_prefix, from, page);
    if (!got) return got.error();
    for (auto& kv : *got) out.push_back(std::move(kv));
    if (got->size() < page) return out;
    from = out.back().first + '\0';
  }
}

}  // namespace

std::string secret_meta_key(std::string_view name) {
  return std::string(secret_prefix) + std::string(name);
}

result<std::unique_ptr<secret_store>> secret_store::open(store& db, std::string key_file,
                                                         std::vector<stored_secret>& loaded) {
  auto rows = scan_secrets(db);
  if (!rows) return rows.error();
  std::unique_ptr<secret_store> s(new secret_store(db, std::move(key_file)));
  auto key = read_key_file(s->key_file_);
  if (!key && key.error().error_code() == code::not_found) {
    if (!rows->empty())
      return error(code::not_found,
                   "the store holds " + std::to_string(rows->size()) +
                       " secrets, but their key file " + s->key_file_ +
                       " does not exist: restore it (secret_key_file names it); if it is lost, "
                       "keeld --forget-secrets deletes the stored secrets so they can be set "
                       "again");
    return s;  // created by the first put
  }
  if (!key) return key.error();
  s->key_ = std::move(*key);
  for (const auto& [k, bytes] : *rows) {
    const std::string name = k.substr(secret_prefix.size());
    auto rec = decode_record(bytes, "meta " + k);
    if (!rec) return rec.error();
    if (rec->type != static_cast<uint16_t>(value_type::secret_value))
      return error(code::corruption, "meta " + k + ": record of type " + std::to_string(rec->type) +
                                         " is not a secret");
    auto value = open_secret(*s->key_, name, rec->payload);
    if (!value) {
      if (value.error().error_code() != code::invalid_argument) return value.error();
      return error(code::invalid_argument,
                   value.error().message() + " (key file " + s->key_file_ +
                       "); point secret_key_file at the right key, or, if it is lost, "
                       "keeld --forget-secrets deletes the stored secrets so they can be set "
                       "again");
    }
    loaded.push_back({name, std::move(*value), rec->time_ms});
  }
  return s;
}

status secret_store::put(std::string_view name, std::string_view value, int64_t now_ms) {
  std::lock_guard lk(mu_);
  if (!key_) {
    auto made = create_key_file(key_file_);
    // Made meanwhile by someone else: use that one (its checks apply).
    if (!made && made.error().error_code() == code::already_exists) made = read_key_file(key_file_);
    if (!made) return made.error();
    key_ = std::move(*made);
  }
  auto sealed = seal_secret(*key_, name, value);
  if (!sealed) return sealed.error();
  record r{static_cast<uint16_t>(value_type::secret_value), now_ms, std::move(*sealed)};
  return db_.write({{family::meta, false, secret_meta_key(name), encode_record(r)}}, true);
}

status secret_store::erase(std::string_view name) {
  std::lock_guard lk(mu_);
  return db_.write({{family::meta, true, secret_meta_key(name), {}}}, true);
}

result<std::size_t> forget_secrets(store& db) {
  auto rows = scan_secrets(db);
  if (!rows) return rows.error();
  write_set ops;
  for (const auto& kv : *rows) ops.push_back({family::meta, true, kv.first, {}});
  if (!ops.empty()) KEEL_TRY(db.write(ops, true));
  return rows->size();
}

}  // namespace keel::persistence
