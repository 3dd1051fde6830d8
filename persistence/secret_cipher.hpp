#pragma once
// AES-256-GCM (OpenSSL EVP) under a node's secret key, and the key file
// that holds the key: 32 random bytes, mode 0600. Secret values are sealed
// with a fresh random 96-bit nonce each, the secret's name as associated
// data, so a value copied under another name does not open. Layout of a
// sealed value (docs/formats.md, "Secrets"):
//   u8 format version (1) | 12-byte nonce | ciphertext | 16-byte tag
//
// Thread-safe: the functions keep no state.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.hpp"

namespace keel::persistence {

inline constexpr std::size_t secret_key_size = 32;
inline constexpr uint8_t sealed_format_version = 1;

// The key, wiped from memory when destroyed.
class secret_key {
 public:
  secret_key() = default;
  explicit secret_key(const std::array<unsigned char, secret_key_size>& bytes) : bytes_(bytes) {}
  ~secret_key();
  secret_key(const secret_key&) = default;
  secret_key& operator=(const secret_key&) = default;

  const unsigned char* data() const { return bytes_.data(); }

 private:
  std::array<unsigned char, secret_key_size> bytes_{};
};

// Reads a key file. Errors: not_found (no such file); invalid_argument (its
// group or others may read or write it, it is not a regular file, or it does
// not hold exactly 32 bytes; the message says what to do); io_error.
result<secret_key> read_key_file(const std::string& path);

// Creates a key file: 32 bytes from OpenSSL's RAND_bytes, mode 0600,
// fsynced with its folder. Errors: already_exists, io_error (the folder is
// missing or not writable, the random source failed).
result<secret_key> create_key_file(const std::string& path);

// Seals `value` for the secret `name`. Errors: internal (OpenSSL failed).
result<std::string> seal_secret(const secret_key& key, std::string_view name,
                                std::string_view value);

// Opens what seal_secret made for `name` with `key`. Errors:
// invalid_argument when the tag does not verify (another key, another
// name, or altered bytes), corruption for an unknown format version or a
// value too short to hold one.
result<std::string> open_secret(const secret_key& key, std::string_view name,
                                std::string_view sealed);

}  // namespace keel::persistence
