#pragma once
// Secrets set through the API (PUT /v1/secrets/{name}), kept in the meta
// family, sealed with the node's key (persistence/secret_cipher.hpp):
//   secret/<name> -> record of type 0xF00A, time = when it was set,
//                    payload = the sealed value
// (docs/formats.md, "Secrets"). A value is never written unsealed.
//
// The key file is read at open when it exists, and must exist when
// secrets are stored (a fresh key would read none of them); otherwise it
// is created by the first put.
//
// Thread-safe: put and erase may be called concurrently (one at a time
// inside). Blocking (synced writes): never on a scheduler thread.
// Lifetime: `db` must outlive the secret_store.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.hpp"
#include "persistence/secret_cipher.hpp"
#include "persistence/store.hpp"

namespace keel::persistence {

struct stored_secret {
  std::string name;
  std::string value;
  int64_t updated_ms = 0;
};

class secret_store {
 public:
  // Opens the secrets of `db` with the key in `key_file`; `loaded` gets
  // every stored one, decrypted. Errors: not_found (secrets are stored and
  // the key file is missing), invalid_argument (the key file is unusable,
  // see read_key_file; or a value does not decrypt with it), corruption
  // (a record that does not decode), io_error.
  static result<std::unique_ptr<secret_store>> open(store& db, std::string key_file,
                                                    std::vector<stored_secret>& loaded);

  // Seals `value` and writes it under `name`, synced; creates the key file
  // first when there is none. Errors: the store's (no_space, unavailable,
  // io_error), create_key_file's.
  status put(std::string_view name, std::string_view value, int64_t now_ms);
  // Deletes `name`, synced (absent: nothing to do). Errors: the store's.
  status erase(std::string_view name);

  const std::string& key_file() const { return key_file_; }

 private:
  secret_store(store& db, std::string key_file) : db_(db), key_file_(std::move(key_file)) {}
  store& db_;
  const std::string key_file_;
  std::mutex mu_;
  std::optional<secret_key> key_;  // guarded by mu_
};

// The meta key of secret `name`.
std::string secret_meta_key(std::string_view name);

// Deletes every stored secret, synced, without reading them (keeld
// --forget-secrets, when the key is lost); returns how many there were.
// Errors: the store's.
result<std::size_t> forget_secrets(store& db);

}  // namespace keel::persistence
