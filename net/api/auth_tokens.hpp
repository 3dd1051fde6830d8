#pragma once
// Who may call the HTTP API: bearer tokens that name a principal with
// scopes (base/principal.hpp). Tokens live in the node's store (meta
// `token/<id>`), hashed: a token is "keel_<id>_<secret>" with a 12-hex-digit
// id and 256 random bits, and only SHA-256 of the whole token is kept, so
// the store (or a backup of it) never yields a usable token. The node's
// admin token (--token, --token-file, or the one keeld generates into
// DATA/admin.token) is compared as it is and names the principal "admin".
// A request without a token gets the anonymous principal, whose scopes the
// node's config sets (anonymous_scopes).
//
// Thread-safety: every member may be called from any thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/principal.hpp"
#include "base/status.hpp"

namespace keel::actors {
class node;
}

namespace keel::net {

struct token_record {
  std::string id;
  principal who;
  std::string hash;  // SHA-256 of the token, hex
  int64_t created_ms = 0;
  std::string created_by;
};

class token_store {
 public:
  // Loads the stored tokens. `admin_token`: the node's admin token ("" for
  // none); `anonymous_scopes`: what a request without a token may do.
  static result<std::unique_ptr<token_store>> open(actors::node& node, std::string admin_token,
                                                   uint32_t anonymous_scopes);

  // The principal of an Authorization header's value ("" when absent):
  // nullopt when a token was sent and is not valid (401).
  std::optional<principal> authenticate(std::string_view authorization) const;

  // Creates a token, durably; `done` gets the record and the token itself,
  // which is shown this once. Errors: invalid_argument (name, scopes,
  // agent patterns), and the store's.
  void create(principal who, std::string created_by,
              std::function<void(result<std::pair<token_record, std::string>>)> done);
  std::vector<token_record> list() const;
  // Errors: not_found.
  void revoke(const std::string& id, std::function<void(status)> done);

 private:
  token_store(actors::node& node, std::string admin_token, uint32_t anonymous_scopes)
      : node_(node), admin_token_(std::move(admin_token)), anonymous_scopes_(anonymous_scopes) {}

  actors::node& node_;
  const std::string admin_token_;
  const uint32_t anonymous_scopes_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, token_record> by_id_;  // guarded by mu_
};

// A principal name: 1 to 64 of [A-Za-z0-9_.@-].
bool valid_principal_name(std::string_view name);

}  // namespace keel::net
