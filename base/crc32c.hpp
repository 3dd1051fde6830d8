#pragma once
// CRC-32C (Castagnoli), the checksum of every stored record.

#include <cstdint>
#include <string_view>

namespace keel {

// Uses the SSE4.2 instruction where the CPU has it.
uint32_t crc32c(std::string_view data);
// The CRC-32C of (a + data) given crc = crc32c(a): checksums over pieces
// without joining them.
uint32_t crc32c_extend(uint32_t crc, std::string_view data);
// The table-driven implementation, for tests to compare against.
uint32_t crc32c_reference(std::string_view data);

}  // namespace keel
