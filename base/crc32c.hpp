#pragma once
// CRC-32C (Castagnoli), the checksum of every stored record.

#include <cstdint>
#include <string_view>

namespace keel {

// Uses the SSE4.2 instruction where the CPU has it.
uint32_t crc32c(std::string_view data);
// The table-driven implementation, for tests to compare against.
uint32_t crc32c_reference(std::string_view data);

}  // namespace keel
