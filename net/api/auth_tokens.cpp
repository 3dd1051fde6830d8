#include "net/api/auth_tokens.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "actors/node.hpp"
#include "base/clock.hpp"
#include "base/durable_file.hpp"
#include "base/sha256.hpp"
#include "http/server.hpp"
#include "persistence/values.hpp"

namespace keel::net {

namespace {

using json = nlohmann::json;
using persistence::family;
using persistence::value_type;

constexpr std::string_view token_prefix = "token/";
constexpr std::size_t id_hex = 12;        // 48 bits: unique enough to look up by
constexpr std::size_t secret_bytes = 32;  // 256 bits: what makes it unguessable

result<std::string> random_hex(std::size_t bytes) {
  auto raw = random_bytes(bytes);
  if (!raw) return raw.error();
  return to_hex({reinterpret_cast<const uint8_t*>(raw->data()), raw->size()});
}

std::string hash_of(std::string_view token) {
  auto d = sha256(token);
  return to_hex(d);
}

// "keel_<id>_<secret>" -> id; nullopt for another shape.
std::optional<std::string_view> id_of(std::string_view token) {
  constexpr std::string_view head = "keel_";
  if (token.size() != head.size() + id_hex + 1 + 2 * secret_bytes ||
      token.substr(0, head.size()) != head || token[head.size() + id_hex] != '_')
    return std::nullopt;
  return token.substr(head.size(), id_hex);
}

json record_json(const token_record& r) {
  return {{"principal", r.who.name},    {"scopes", scope_names(r.who.scopes)},
          {"agents", r.who.agents},     {"hash", r.hash},
          {"created_ms", r.created_ms}, {"created_by", r.created_by}};
}

result<token_record> parse_record(std::string id, std::string_view bytes) {
  auto j = persistence::decode_object(value_type::api_token, bytes, "token " + id);
  if (!j) return j.error();
  token_record r;
  r.id = std::move(id);
  try {
    r.who.name = j->at("principal").get<std::string>();
    for (const auto& s : j->at("scopes")) {
      auto bit = parse_scope(s.get<std::string>());
      if (!bit) return error(code::corruption, "token " + r.id + ": unknown scope " + s.dump());
      r.who.scopes |= static_cast<uint32_t>(*bit);
    }
    r.who.agents = j->at("agents").get<std::vector<std::string>>();
    r.hash = j->at("hash").get<std::string>();
    r.created_ms = j->at("created_ms").get<int64_t>();
    r.created_by = j->at("created_by").get<std::string>();
  } catch (const json::exception& e) {
    return error(code::corruption, "token " + r.id + ": " + e.what());
  }
  return r;
}

}  // namespace

bool valid_principal_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '@' || c == '-';
  });
}

result<std::unique_ptr<token_store>> token_store::open(actors::node& node, std::string admin_token,
                                                       uint32_t anonymous_scopes) {
  std::unique_ptr<token_store> ts(new token_store(node, std::move(admin_token), anonymous_scopes));
  auto rows = node.storage().scan(family::meta, token_prefix, {}, 1 << 20);
  if (!rows) return rows.error();
  for (auto& [key, value] : *rows) {
    std::string id = key.substr(token_prefix.size());
    auto r = parse_record(id, value);
    if (!r) return r.error();
    ts->by_id_.emplace(id, std::move(*r));
  }
  return ts;
}

std::optional<principal> token_store::authenticate(std::string_view authorization) const {
  // Without a token and with nothing anonymous requests may do, the
  // request is refused on its headers (401), before any body is read.
  if (authorization.empty()) {
    if (anonymous_scopes_ == 0) return std::nullopt;
    return principal{"anonymous", anonymous_scopes_, {}};
  }
  auto token = bearer_token(authorization);
  if (!token) return std::nullopt;
  if (!admin_token_.empty() && same_secret(*token, admin_token_))
    return principal{"admin", all_scopes, {}};
  auto id = id_of(*token);
  if (!id) return std::nullopt;
  const std::string hash = hash_of(*token);
  std::lock_guard lock(mu_);
  auto it = by_id_.find(std::string(*id));
  if (it == by_id_.end() || !same_secret(hash, it->second.hash)) return std::nullopt;
  return it->second.who;
}

void token_store::create(principal who, std::string created_by,
                         std::function<void(result<std::pair<token_record, std::string>>)> done) {
  if (!valid_principal_name(who.name))
    return done(error(code::invalid_argument,
                      "principal \"" + who.name + "\": must be 1 to 64 of [A-Za-z0-9_.@-]"));
  if (who.name == "admin" || who.name == "anonymous")
    return done(error(code::invalid_argument,
                      "principal \"" + who.name + "\" is the node's own: pick another name"));
  if (who.scopes == 0 || (who.scopes & ~all_scopes) != 0)
    return done(error(code::invalid_argument, "a token needs at least one scope"));
  for (const auto& pattern : who.agents)
    if (!valid_agent_pattern(pattern))
      return done(error(code::invalid_argument,
                        "agent pattern \"" + pattern +
                            "\": an agent name, or a prefix ending in '*' (\"ticket/*\")"));
  auto id = random_hex(id_hex / 2);
  if (!id) return done(id.error());
  auto secret = random_hex(secret_bytes);
  if (!secret) return done(secret.error());
  std::string token = "keel_" + *id + "_" + *secret;
  token_record r{*id, std::move(who), hash_of(token), wall_ms(), std::move(created_by)};
  persistence::write_set ops;
  ops.push_back({family::meta, false, std::string(token_prefix) + r.id,
                 persistence::encode_object(value_type::api_token, record_json(r), r.created_ms)});
  node_.commit(std::move(ops), [this, r, token = std::move(token),
                                done = std::move(done)](const status& s) mutable {
    if (!s) return done(s);
    {
      std::lock_guard lock(mu_);
      by_id_[r.id] = r;
    }
    done(std::pair{std::move(r), std::move(token)});
  });
}

std::vector<token_record> token_store::list() const {
  std::lock_guard lock(mu_);
  std::vector<token_record> out;
  for (const auto& [id, r] : by_id_) out.push_back(r);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.created_ms < b.created_ms; });
  return out;
}

void token_store::revoke(const std::string& id, std::function<void(status)> done) {
  {
    std::lock_guard lock(mu_);
    if (!by_id_.count(id)) return done(error(code::not_found, "no token with id " + id));
  }
  persistence::write_set ops;
  ops.push_back({family::meta, true, std::string(token_prefix) + id, {}});
  node_.commit(std::move(ops), [this, id, done = std::move(done)](const status& s) {
    if (s) {
      std::lock_guard lock(mu_);
      by_id_.erase(id);
    }
    done(s);
  });
}

}  // namespace keel::net
