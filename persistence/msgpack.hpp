#pragma once
// MessagePack <-> JSON for stored payloads. Encoding uses nlohmann's
// writer; decoding is our own: it copies strings in one piece (nlohmann
// reads them a byte at a time, which dominated activation), bounds nesting,
// and never throws. Numbers decode as nlohmann's reader types them
// (positive fixint and uintN -> unsigned, intN -> signed).

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace keel::persistence {

std::string to_msgpack(const nlohmann::json& j);
// nullopt when the bytes are not exactly one well-formed value (truncated,
// trailing bytes, non-string map keys, ext types, nesting deeper than 128).
std::optional<nlohmann::json> msgpack_decode(std::string_view bytes);

}  // namespace keel::persistence
