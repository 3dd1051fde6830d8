#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/bytes.hpp"
#include "base/crc32c.hpp"

namespace {

std::string be64(uint64_t v) {
  std::string s;
  keel::put_u64_be(s, v);
  return s;
}

std::string varint(uint64_t v) {
  std::string s;
  keel::put_varint(s, v);
  return s;
}

const uint64_t interesting[] = {0,
                                1,
                                0x7f,
                                0x80,
                                0xff,
                                0x100,
                                0x3fff,
                                0x4000,
                                0xffff,
                                0x10000,
                                0xffffffffull,
                                0x100000000ull,
                                0x0102030405060708ull,
                                std::numeric_limits<uint64_t>::max() - 1,
                                std::numeric_limits<uint64_t>::max()};

}  // namespace

TEST_CASE("big-endian integers round trip and put the most significant byte first") {
  SUBCASE("u64") {
    std::string s = be64(0x0102030405060708ull);
    REQUIRE(s.size() == 8);
    CHECK(s == std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
    for (uint64_t v : interesting) {
      CAPTURE(v);
      CHECK(keel::get_u64_be(be64(v).data()) == v);
    }
  }
  SUBCASE("u32") {
    for (uint32_t v : {0u, 1u, 0xffu, 0x100u, 0x01020304u, 0xffffffffu}) {
      std::string s;
      keel::put_u32_be(s, v);
      REQUIRE(s.size() == 4);
      CHECK(keel::get_u32_be(s.data()) == v);
    }
    std::string s;
    keel::put_u32_be(s, 0x01020304u);
    CHECK(s == std::string("\x01\x02\x03\x04", 4));
  }
  SUBCASE("u16") {
    for (uint16_t v : {uint16_t{0}, uint16_t{1}, uint16_t{0xff}, uint16_t{0x100}, uint16_t{0xf001},
                       uint16_t{0xffff}}) {
      std::string s;
      keel::put_u16_be(s, v);
      REQUIRE(s.size() == 2);
      CHECK(keel::get_u16_be(s.data()) == v);
    }
    std::string s;
    keel::put_u16_be(s, 0xf001);
    CHECK(s == std::string("\xf0\x01", 2));
  }
  SUBCASE("put appends after existing bytes") {
    std::string s = "ab";
    keel::put_u64_be(s, 5);
    keel::put_u32_be(s, 6);
    keel::put_u16_be(s, 7);
    REQUIRE(s.size() == 2 + 8 + 4 + 2);
    CHECK(s.substr(0, 2) == "ab");
    CHECK(keel::get_u64_be(s.data() + 2) == 5);
    CHECK(keel::get_u32_be(s.data() + 10) == 6);
    CHECK(keel::get_u16_be(s.data() + 14) == 7);
  }
}

TEST_CASE("big-endian encodings sort bytewise in numeric order") {
  std::vector<uint64_t> vs(std::begin(interesting), std::end(interesting));
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 500; ++i) vs.push_back(rng() >> (rng() % 64));
  for (std::size_t i = 0; i < vs.size(); ++i)
    for (std::size_t j = 0; j < vs.size(); ++j) {
      // std::string compares as unsigned char, like RocksDB's bytewise comparator.
      if ((be64(vs[i]) < be64(vs[j])) != (vs[i] < vs[j])) {
        CAPTURE(vs[i]);
        CAPTURE(vs[j]);
        FAIL("big-endian order differs from numeric order");
      }
    }
  CHECK(be64(255) < be64(256));
  CHECK(be64(0xffffffffull) < be64(0x100000000ull));
}

TEST_CASE("varints round trip with the expected length and advance the input") {
  SUBCASE("single values") {
    for (uint64_t v : interesting) {
      CAPTURE(v);
      std::string s = varint(v);
      std::size_t expected_len = 1;
      for (uint64_t x = v; x >= 0x80; x >>= 7) ++expected_len;
      CHECK(s.size() == expected_len);
      std::string_view in = s;
      auto got = keel::get_varint(in);
      REQUIRE(got.has_value());
      CHECK(*got == v);
      CHECK(in.empty());
    }
    CHECK(varint(0x7f).size() == 1);
    CHECK(varint(0x80).size() == 2);
    CHECK(varint(std::numeric_limits<uint64_t>::max()).size() == 10);
  }
  SUBCASE("concatenated values are read one after another, leaving the rest") {
    std::string s;
    for (uint64_t v : interesting) keel::put_varint(s, v);
    s += "tail";
    std::string_view in = s;
    for (uint64_t v : interesting) {
      auto got = keel::get_varint(in);
      REQUIRE(got.has_value());
      CHECK(*got == v);
    }
    CHECK(in == "tail");
  }
}

TEST_CASE("a truncated varint reads as nullopt") {
  SUBCASE("empty input") {
    std::string_view in;
    CHECK_FALSE(keel::get_varint(in).has_value());
  }
  SUBCASE("every proper prefix of a multi-byte varint") {
    for (uint64_t v : interesting) {
      std::string s = varint(v);
      for (std::size_t len = 0; len < s.size(); ++len) {
        CAPTURE(v);
        CAPTURE(len);
        std::string_view in(s.data(), len);
        CHECK_FALSE(keel::get_varint(in).has_value());
      }
    }
  }
  SUBCASE("more than ten continuation bytes") {
    std::string s(11, '\x80');
    s.push_back('\x01');
    std::string_view in = s;
    CHECK_FALSE(keel::get_varint(in).has_value());
  }
}

TEST_CASE("a ten-byte varint whose last byte carries bits above 2^64 is refused") {
  // bytes.hpp promises nullopt "when the value overflows 64 bits". The tenth
  // byte may only hold bit 63 (value 0 or 1); 0x7f there encodes ~2^70.
  std::string s(9, '\xff');
  s.push_back('\x7f');
  std::string_view in = s;
  auto got = keel::get_varint(in);
  CHECK_FALSE(got.has_value());
  // The canonical ten-byte encoding of UINT64_MAX must still read back.
  std::string ok = varint(std::numeric_limits<uint64_t>::max());
  std::string_view in2 = ok;
  auto max = keel::get_varint(in2);
  REQUIRE(max.has_value());
  CHECK(*max == std::numeric_limits<uint64_t>::max());
}

TEST_CASE("crc32c matches the Castagnoli check value and RFC 3720 vectors") {
  CHECK(keel::crc32c("123456789") == 0xE3069283u);
  CHECK(keel::crc32c("") == 0u);
  CHECK(keel::crc32c(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(keel::crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
  std::string inc;
  for (int i = 0; i < 32; ++i) inc.push_back(static_cast<char>(i));
  CHECK(keel::crc32c(inc) == 0x46DD794Eu);
  std::string dec;
  for (int i = 31; i >= 0; --i) dec.push_back(static_cast<char>(i));
  CHECK(keel::crc32c(dec) == 0x113FDB5Cu);
}

TEST_CASE("crc32c changes when any single bit of the input changes") {
  std::string data = "the quick brown fox jumps over the lazy dog";
  uint32_t base = keel::crc32c(data);
  for (std::size_t i = 0; i < data.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      std::string d = data;
      d[i] = static_cast<char>(d[i] ^ (1 << bit));
      CAPTURE(i);
      CAPTURE(bit);
      CHECK(keel::crc32c(d) != base);
    }
}

TEST_CASE("the accelerated crc32c agrees with the table-driven one at every length and offset") {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  for (std::size_t off = 0; off < 9; ++off)
    for (std::size_t len = 0; off + len <= data.size(); len += 7) {
      std::string_view v(data.data() + off, len);
      REQUIRE(keel::crc32c(v) == keel::crc32c_reference(v));
    }
}

TEST_CASE("extending a crc32c over pieces gives the crc32c of the whole") {
  std::string data;
  for (int i = 0; i < 200; ++i) data.push_back(static_cast<char>((i * 37 + 11) & 0xff));
  for (std::size_t cut = 0; cut <= data.size(); cut += 13) {
    std::string_view a(data.data(), cut), b(data.data() + cut, data.size() - cut);
    CAPTURE(cut);
    CHECK(keel::crc32c_extend(keel::crc32c(a), b) == keel::crc32c(data));
    CHECK(keel::crc32c_extend(0, data) == keel::crc32c_reference(data));
  }
}
