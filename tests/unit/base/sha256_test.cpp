#include <doctest/doctest.h>

#include <cstddef>
#include <random>
#include <string>

#include "base/sha256.hpp"

namespace {

std::string hex_of(std::string_view message) {
  return keel::to_hex(keel::sha256(message));
}

}  // namespace

// The vectors of NIST's "SHA-256 examples" (CSRC cryptographic standards
// and guidelines) and FIPS 180-2 appendix B.
TEST_CASE("sha256 matches the NIST test vectors") {
  CHECK(hex_of("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex_of("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(
      hex_of("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmn"
             "opqrlmnopqrsmnopqrstnopqrstu") ==
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  CHECK(hex_of(std::string(1'000'000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256 pads correctly around the 55, 56 and 64 byte boundaries") {
  // Computed with coreutils sha256sum.
  CHECK(hex_of(std::string(55, 'a')) ==
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(hex_of(std::string(56, 'a')) ==
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  CHECK(hex_of(std::string(64, 'a')) ==
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST_CASE("feeding a message in random pieces gives the one-shot digest") {
  std::mt19937_64 rng(20240611);
  for (int round = 0; round < 200; ++round) {
    std::string message(std::uniform_int_distribution<std::size_t>(0, 700)(rng), '\0');
    for (char& c : message) c = static_cast<char>(rng());
    keel::sha256_hasher h;
    std::size_t at = 0;
    while (at < message.size()) {
      std::size_t piece = std::uniform_int_distribution<std::size_t>(
          0, std::min<std::size_t>(130, message.size() - at))(rng);
      h.update(std::string_view(message).substr(at, piece));
      at += piece;
    }
    CAPTURE(message.size());
    REQUIRE(h.finish() == keel::sha256(message));
  }
}

TEST_CASE("to_hex writes two lowercase digits per byte") {
  const uint8_t bytes[] = {0x00, 0x0f, 0xa0, 0xff};
  CHECK(keel::to_hex(bytes) == "000fa0ff");
  CHECK(keel::to_hex({}) == "");
}

TEST_CASE("hmac_sha256 matches the RFC 4231 test vectors") {
  // Case 2: a short key.
  CHECK(keel::to_hex(keel::hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Case 6: a key longer than the block is hashed first.
  std::string long_key(131, '\xaa');
  CHECK(keel::to_hex(keel::hmac_sha256(long_key,
                                       "Test Using Larger Than Block-Size Key - Hash Key First")) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  // A different key gives a different MAC.
  CHECK(keel::hmac_sha256("Jefe", "x") != keel::hmac_sha256("Jeff", "x"));
}
