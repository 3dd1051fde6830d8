#include "base/crc32c.hpp"

#include <boost/crc.hpp>

namespace keel {

uint32_t crc32c(std::string_view data) {
  // Reflected Castagnoli polynomial, init and final xor all-ones: the
  // parameters iSCSI, ext4 and RocksDB use ("123456789" -> 0xE3069283).
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

}  // namespace keel
