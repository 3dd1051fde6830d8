#include "ledger/type_catalog.hpp"

#include <algorithm>
#include <map>

#include "base/clock.hpp"
#include "ledger/writer.hpp"
#include "persistence/values.hpp"

namespace keel::actors {

namespace {

using persistence::family;
using persistence::value_type;
using json = nlohmann::json;

constexpr std::string_view version_prefix = "type/";
constexpr std::string_view latest_prefix = "type_latest/";

struct stored_version {
  std::shared_ptr<const config::agent_spec> spec;
  int64_t added_ms = 0;
};

// The version stored under `key` (type/<name>/<hash>). Errors: corruption
// (the record does not decode), invalid_argument (it no longer parses on
// this build, or parses to another version than its key names).
result<stored_version> parse_stored(std::string_view key, std::string_view value) {
  const std::string what =
      "stored agent-type version " + std::string(key.substr(version_prefix.size()));
  auto j = persistence::decode_object(value_type::type_version, value, what);
  if (!j) return j.error();
  auto spec = config::parse_agent_spec(j->value("spec", json()), j->value("source", what), "");
  if (!spec)
    return error(code::invalid_argument, what + " no longer loads: " + spec.error().message());
  if ((*spec)->hash != key.substr(key.rfind('/') + 1))
    return error(code::invalid_argument,
                 what + " parses to another version (" + (*spec)->hash + ") on this build");
  return stored_version{std::move(*spec), j->value("added_ms", int64_t{0})};
}

}  // namespace

std::string type_version_key(std::string_view name, std::string_view hash) {
  return std::string(version_prefix) + std::string(name) + "/" + std::string(hash);
}

bool is_type_version_key(std::string_view key) {
  return key.starts_with(version_prefix);
}

std::string type_latest_key(std::string_view name) {
  return std::string(latest_prefix) + std::string(name);
}

status type_catalog::store_version(const config::agent_spec& spec, bool version, bool latest,
                                   int64_t now) {
  persistence::write_set ops;
  ledger::batch_builder w(ops);
  if (version) w.put_type_version(spec.name, spec.hash, spec.canonical, spec.source, now);
  if (latest) w.put_type_latest(spec.name, spec.hash, now);
  return db_.write(ops, true);
}

status type_catalog::open(const std::vector<std::shared_ptr<const config::agent_spec>>& files,
                          std::vector<std::string>& notes) {
  std::lock_guard lk(mu_);
  std::vector<stored_version> versions;
  std::string from(version_prefix);
  for (;;) {
    auto page = db_.scan(family::meta, version_prefix, from, 256);
    if (!page) return page.error();
    for (const auto& [key, value] : *page) {
      auto v = parse_stored(key, value);
      if (v) {
        versions.push_back(std::move(*v));
      } else if (v.error().error_code() == code::corruption) {
        return v.error();
      } else {
        notes.push_back(v.error().message() +
                        "; agents running it move to their type's latest version");
      }
    }
    if (page->size() < 256) break;
    from = page->back().first + '\0';
  }
  std::sort(versions.begin(), versions.end(), [](const stored_version& a, const stored_version& b) {
    return a.added_ms != b.added_ms ? a.added_ms < b.added_ms : a.spec->hash < b.spec->hash;
  });
  std::map<std::string, std::string, std::less<>> latest_of;  // read once per name
  for (auto& v : versions) {
    const std::string name = v.spec->name;
    auto it = latest_of.find(name);
    if (it == latest_of.end()) {
      auto latest = db_.get(family::meta, type_latest_key(name));
      if (!latest) return latest.error();
      std::string hash;
      if (*latest) {
        auto j = persistence::decode_object(value_type::type_latest, **latest, "latest of " + name);
        if (!j) return j.error();
        hash = j->value("hash", "");
      }
      it = latest_of.emplace(name, std::move(hash)).first;
    }
    const bool is_latest = v.spec->hash == it->second;
    if (auto a = types_.add(std::move(v.spec), is_latest, v.added_ms); !a) return a.error();
  }
  // The files: each the latest of its name (a restart with an edited file
  // gives new agents the edit; agents already running keep theirs).
  for (const auto& spec : files) {
    const int64_t now = next_added_ms(spec->name);
    auto a = types_.add(spec, true, now);
    if (!a) return a.error();
    // A store that takes no writes (a full disk: it opened read-only)
    // spawns nothing either; the version is stored at the next start.
    if (status st = store_version(*spec, a->is_new, true, now); !st)
      notes.push_back("cannot store version " + spec->hash + " of agent type " + spec->name +
                      " yet: " + st.message());
  }
  return status::ok();
}

result<type_catalog::put_result> type_catalog::put(std::shared_ptr<const config::agent_spec> spec) {
  std::lock_guard lk(mu_);
  put_result out;
  out.hash = spec->hash;
  const agent::agent_type* latest = types_.find(spec->name);
  out.was_latest = latest && latest->version() == spec->hash;
  if (out.was_latest) return out;
  // Durable first: a version is never used before the store has it.
  const bool known = types_.find(spec->name, spec->hash) != nullptr;
  const int64_t now = next_added_ms(spec->name);
  KEEL_TRY(store_version(*spec, !known, true, now));
  auto a = types_.add(std::move(spec), true, now);
  if (!a) return a.error();
  out.is_new = a->is_new;
  return out;
}

const agent::agent_type* type_catalog::find(std::string_view name, std::string_view version) {
  if (const agent::agent_type* t = types_.find(name, version)) return t;
  if (version.empty()) return nullptr;
  const std::string key = type_version_key(name, version);
  auto raw = db_.get(family::meta, key);
  if (!raw || !*raw) return nullptr;
  auto v = parse_stored(key, **raw);
  if (!v || v->spec->name != name) return nullptr;
  auto a = types_.add(std::move(v->spec), false, v->added_ms);
  return a ? a->type : nullptr;
}

const agent::agent_type* type_catalog::for_folding(std::string_view name) const {
  if (const agent::agent_type* t = types_.find(name)) return t;
  const auto versions = types_.versions(name);
  return versions.empty() ? nullptr : types_.find(name, versions.back().hash);
}

int64_t type_catalog::next_added_ms(std::string_view name) const {
  int64_t at = wall_ms();
  for (const auto& v : types_.versions(name)) at = std::max(at, v.added_ms + 1);
  return at;
}

status type_not_loaded(std::string_view agent, std::string_view type) {
  const std::string t(type);
  return error(code::conflict, "agent " + std::string(agent) + " is of type " + t +
                                   ", which this node has not loaded; start keeld with --agents "
                                   "DIR (the folder of " +
                                   t + "'s spec), or register it: keel types put FILE");
}

result<persistence::write_set> type_catalog::version_ops(std::string_view name) {
  persistence::write_set ops;
  const std::string prefix = type_version_key(name, "");
  auto page = db_.scan(family::meta, prefix, prefix, SIZE_MAX);
  if (!page) return page.error();
  for (auto& [k, v] : *page) ops.push_back({family::meta, false, std::move(k), std::move(v)});
  return ops;
}

}  // namespace keel::actors
