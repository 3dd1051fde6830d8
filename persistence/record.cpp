#include "persistence/record.hpp"

#include "base/bytes.hpp"
#include "base/crc32c.hpp"

namespace keel::persistence {

void encode_record(const record& r, std::string& out) {
  std::size_t start = out.size();
  out.reserve(start + 1 + 2 + 8 + 5 + r.payload.size() + 4);
  out.push_back(static_cast<char>(record_schema_version));
  put_u16_be(out, r.type);
  put_u64_be(out, static_cast<uint64_t>(r.time_ms));
  put_varint(out, r.payload.size());
  out.append(r.payload);
  put_u32_be(out, crc32c(std::string_view(out).substr(start)));
}

std::string encode_record(const record& r) {
  std::string out;
  encode_record(r, out);
  return out;
}

result<record> decode_record(std::string_view bytes, std::string_view what) {
  auto corrupt = [&](const char* why) {
    return error(code::corruption, "corrupt record (" + std::string(what) + "): " + why);
  };
  constexpr std::size_t fixed = 1 + 2 + 8;
  if (bytes.size() < fixed + 1 + 4) return corrupt("too short");
  uint32_t stored = get_u32_be(bytes.data() + bytes.size() - 4);
  if (crc32c(bytes.substr(0, bytes.size() - 4)) != stored) return corrupt("checksum mismatch");
  if (static_cast<uint8_t>(bytes[0]) != record_schema_version)
    return corrupt("unknown schema version");
  record r;
  r.type = get_u16_be(bytes.data() + 1);
  r.time_ms = static_cast<int64_t>(get_u64_be(bytes.data() + 3));
  std::string_view rest = bytes.substr(fixed, bytes.size() - fixed - 4);
  auto len = get_varint(rest);
  if (!len) return corrupt("bad payload length");
  if (*len != rest.size()) return corrupt("payload length does not match record size");
  r.payload.assign(rest.data(), rest.size());
  return r;
}

}  // namespace keel::persistence
