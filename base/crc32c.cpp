#include "base/crc32c.hpp"

#include <cstring>

#include <boost/crc.hpp>

namespace keel {

namespace {

// Reflected Castagnoli polynomial, init and final xor all-ones: the
// parameters iSCSI, ext4 and RocksDB use ("123456789" -> 0xE3069283).
uint32_t crc32c_portable(std::string_view data) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

// Bit by bit: only where the CPU lacks SSE4.2 (rare), for extending.
uint32_t crc32c_bitwise(uint32_t crc, std::string_view data) {
  uint32_t c = ~crc;
  for (char ch : data) {
    c ^= static_cast<unsigned char>(ch);
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

#if defined(__x86_64__)
// SSE4.2 has a CRC-32C instruction: 8 bytes per step instead of a table
// lookup per byte. Every record is checksummed on write and on read.
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(uint32_t start, std::string_view data) {
  uint64_t crc = start ^ 0xFFFFFFFFu;
  const char* p = data.data();
  std::size_t n = data.size();
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    crc = __builtin_ia32_crc32di(crc, word);
    p += 8;
    n -= 8;
  }
  auto c = static_cast<uint32_t>(crc);
  while (n-- > 0) c = __builtin_ia32_crc32qi(c, static_cast<unsigned char>(*p++));
  return c ^ 0xFFFFFFFFu;
}

bool has_sse42() {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}
#endif

}  // namespace

uint32_t crc32c(std::string_view data) {
#if defined(__x86_64__)
  if (has_sse42()) return crc32c_sse42(0, data);
#endif
  return crc32c_portable(data);
}

uint32_t crc32c_extend(uint32_t crc, std::string_view data) {
#if defined(__x86_64__)
  if (has_sse42()) return crc32c_sse42(crc, data);
#endif
  return crc32c_bitwise(crc, data);
}

uint32_t crc32c_reference(std::string_view data) {
  return crc32c_portable(data);
}

}  // namespace keel
