#pragma once
// SHA-256 (FIPS 180-4), for content digests: the hash of an agent spec's
// canonical JSON recorded at spawn, script and artifact fingerprints. Not a
// password hash. hmac_sha256 (RFC 2104) is the MAC, for proving a shared
// secret without sending it.

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace keel {

using sha256_digest = std::array<uint8_t, 32>;

// One-shot digest of `data`.
sha256_digest sha256(std::string_view data);

// Incremental digest: update() any number of times, then finish() once.
// Feeding a message in pieces gives the same digest as sha256() of the
// whole. REQUIRES: no update() or finish() after finish(). Not thread-safe;
// a value type, copyable (a copy continues independently).
class sha256_hasher {
 public:
  sha256_hasher();
  void update(std::string_view data);
  sha256_digest finish();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;  // bytes in buffer_, < 64
  uint64_t length_ = 0;       // message bytes so far
  bool finished_ = false;
};

// HMAC-SHA256 of `message` under `key` (any length).
sha256_digest hmac_sha256(std::string_view key, std::string_view message);

// Lowercase hexadecimal, two digits per byte.
std::string to_hex(std::span<const uint8_t> bytes);
// The bytes of a hexadecimal string (either case); nullopt when it has an
// odd length or a character that is no hex digit.
std::optional<std::string> from_hex(std::string_view hex);

}  // namespace keel
