#include "persistence/msgpack.hpp"

#include <cstring>

#include "base/bytes.hpp"

namespace keel::persistence {

using nlohmann::json;

std::string to_msgpack(const json& j) {
  std::string out;
  json::to_msgpack(j, nlohmann::detail::output_adapter<char>(out));
  return out;
}

namespace {

constexpr int max_depth = 128;

class reader {
 public:
  explicit reader(std::string_view in) : in_(in) {}

  bool value(json& out, int depth) {
    if (depth > max_depth || in_.empty()) return false;
    auto b = static_cast<uint8_t>(in_.front());
    in_.remove_prefix(1);
    if (b <= 0x7f) return out = static_cast<uint64_t>(b), true;
    if (b >= 0xe0) return out = static_cast<int64_t>(static_cast<int8_t>(b)), true;
    if ((b & 0xe0) == 0xa0) return string(out, b & 0x1f);
    if ((b & 0xf0) == 0x90) return array(out, b & 0x0f, depth);
    if ((b & 0xf0) == 0x80) return object(out, b & 0x0f, depth);
    uint64_t n = 0;
    switch (b) {
      case 0xc0:
        return out = nullptr, true;
      case 0xc2:
        return out = false, true;
      case 0xc3:
        return out = true, true;
      case 0xcc:
        return unsigned_of(1, out);
      case 0xcd:
        return unsigned_of(2, out);
      case 0xce:
        return unsigned_of(4, out);
      case 0xcf:
        return unsigned_of(8, out);
      case 0xd0:
        return signed_of(1, out);
      case 0xd1:
        return signed_of(2, out);
      case 0xd2:
        return signed_of(4, out);
      case 0xd3:
        return signed_of(8, out);
      case 0xca: {
        if (!fixed(4, n)) return false;
        float f;
        auto u = static_cast<uint32_t>(n);
        std::memcpy(&f, &u, 4);
        return out = static_cast<double>(f), true;
      }
      case 0xcb: {
        if (!fixed(8, n)) return false;
        double d;
        std::memcpy(&d, &n, 8);
        return out = d, true;
      }
      case 0xd9:
        return fixed(1, n) && string(out, n);
      case 0xda:
        return fixed(2, n) && string(out, n);
      case 0xdb:
        return fixed(4, n) && string(out, n);
      case 0xc4:
        return fixed(1, n) && binary(out, n);
      case 0xc5:
        return fixed(2, n) && binary(out, n);
      case 0xc6:
        return fixed(4, n) && binary(out, n);
      case 0xdc:
        return fixed(2, n) && array(out, n, depth);
      case 0xdd:
        return fixed(4, n) && array(out, n, depth);
      case 0xde:
        return fixed(2, n) && object(out, n, depth);
      case 0xdf:
        return fixed(4, n) && object(out, n, depth);
      default:
        return false;  // ext types and the unused 0xc1
    }
  }

  bool done() const { return in_.empty(); }

 private:
  bool fixed(int width, uint64_t& out) {
    if (in_.size() < static_cast<std::size_t>(width)) return false;
    out = 0;
    for (int i = 0; i < width; ++i)
      out = (out << 8) | static_cast<uint8_t>(in_[static_cast<std::size_t>(i)]);
    in_.remove_prefix(static_cast<std::size_t>(width));
    return true;
  }
  bool unsigned_of(int width, json& out) {
    uint64_t n;
    if (!fixed(width, n)) return false;
    out = n;
    return true;
  }
  bool signed_of(int width, json& out) {
    uint64_t n;
    if (!fixed(width, n)) return false;
    int shift = 64 - 8 * width;  // sign-extend from `width` bytes
    out = static_cast<int64_t>(n << shift) >> shift;
    return true;
  }
  bool string(json& out, uint64_t n) {
    if (in_.size() < n) return false;
    out = std::string(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool binary(json& out, uint64_t n) {
    if (in_.size() < n) return false;
    out = json::binary(
        std::vector<uint8_t>(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(n)));
    in_.remove_prefix(n);
    return true;
  }
  bool array(json& out, uint64_t n, int depth) {
    if (n > in_.size()) return false;  // each element takes at least a byte
    out = json::array();
    auto& a = out.get_ref<json::array_t&>();
    a.resize(n);
    for (auto& e : a)
      if (!value(e, depth + 1)) return false;
    return true;
  }
  bool object(json& out, uint64_t n, int depth) {
    if (n > in_.size() / 2) return false;  // key and value: at least two bytes
    out = json::object();
    auto& o = out.get_ref<json::object_t&>();
    for (uint64_t i = 0; i < n; ++i) {
      json key;
      if (!value(key, depth + 1) || !key.is_string()) return false;
      json v;
      if (!value(v, depth + 1)) return false;
      o[std::move(key.get_ref<std::string&>())] = std::move(v);
    }
    return true;
  }

  std::string_view in_;
};

}  // namespace

std::optional<json> msgpack_decode(std::string_view bytes) {
  reader r(bytes);
  json out;
  if (!r.value(out, 0) || !r.done()) return std::nullopt;
  return out;
}

}  // namespace keel::persistence
