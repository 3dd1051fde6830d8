#pragma once
// CRC-32C (Castagnoli), the checksum of every stored record.

#include <cstdint>
#include <string_view>

namespace keel {

uint32_t crc32c(std::string_view data);

}  // namespace keel
