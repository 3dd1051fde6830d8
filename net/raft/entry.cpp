#include "net/raft/entry.hpp"

#include <cassert>
#include <cstring>
#include <optional>

#include "base/bytes.hpp"

namespace keel::raft {

namespace {

using persistence::family;
using persistence::write_op;

constexpr uint8_t flag_erase = 1;
constexpr uint8_t flag_range = 2;
constexpr std::size_t header_size = 1 + 1 + 8;
// The fewest bytes a proposal (id, op count) and an op (family, flags, two
// empty lengths) take: a count that could not fit in what is left is refused
// before anything is reserved for it.
constexpr std::size_t min_proposal_size = 8 + 4;
constexpr std::size_t min_op_size = 1 + 1 + 1 + 1;

std::size_t varint_size(uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

uint8_t flags_of(const write_op& op) {
  assert(op.erase || op.range_end.empty());
  if (!op.erase) return 0;
  return op.range_end.empty() ? flag_erase : flag_erase | flag_range;
}

// What follows an op's key: its value, a range erase's end, or nothing.
std::string_view second_field(const write_op& op) {
  if (!op.erase) return op.value;
  return op.range_end;
}

// Writes into memory sized by encoded_size(); the bytes base/bytes.hpp's
// string appenders would produce, without a string in between.
struct cursor {
  char* p;
  void u8(uint8_t v) { *p++ = static_cast<char>(v); }
  void u32(uint32_t v) {
    for (int i = 3; i >= 0; --i) *p++ = static_cast<char>(v >> (8 * i));
  }
  void u64(uint64_t v) {
    for (int i = 7; i >= 0; --i) *p++ = static_cast<char>(v >> (8 * i));
  }
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) *p++ = static_cast<char>((v & 0x7f) | 0x80);
    *p++ = static_cast<char>(v);
  }
  void field(std::string_view s) {
    varint(s.size());
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    p += s.size();
  }
};

void encode_into(const entry& e, char* out) {
  cursor c{out};
  c.u8(entry_format);
  c.u8(static_cast<uint8_t>(e.kind));
  c.u64(e.term);
  switch (e.kind) {
    case entry_kind::writes:
      c.u32(static_cast<uint32_t>(e.proposals.size()));
      for (const auto& p : e.proposals) {
        c.u64(p.id);
        c.u32(static_cast<uint32_t>(p.ops.size()));
        for (const auto& op : p.ops) {
          assert(op.cf != family::raft);
          c.u8(static_cast<uint8_t>(op.cf));
          c.u8(flags_of(op));
          c.field(op.key);
          c.field(second_field(op));
        }
      }
      break;
    case entry_kind::leader_begin:
      break;
    case entry_kind::reserve_ids:
      c.u64(e.limit);
      break;
  }
  assert(c.p == out + encoded_size(e));
}

status malformed(const std::string& what) {
  return error(code::corruption, "replicated log entry: " + what);
}

// Reads the front of an entry's bytes; every read says whether the bytes
// were there.
struct reader {
  std::string_view in;
  bool u8(uint8_t& v) {
    if (in.empty()) return false;
    v = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    return true;
  }
  bool u32(uint32_t& v) {
    if (in.size() < 4) return false;
    v = get_u32_be(in.data());
    in.remove_prefix(4);
    return true;
  }
  bool u64(uint64_t& v) {
    if (in.size() < 8) return false;
    v = get_u64_be(in.data());
    in.remove_prefix(8);
    return true;
  }
  // A length in more bytes than it needs is refused too, so an entry has
  // one encoding.
  bool field(std::string& out) {
    const std::size_t before = in.size();
    std::optional<uint64_t> n = get_varint(in);
    if (!n || before - in.size() != varint_size(*n) || *n > in.size()) return false;
    out.assign(in.data(), *n);
    in.remove_prefix(*n);
    return true;
  }
};

result<write_op> decode_op(reader& r) {
  uint8_t cf = 0, flags = 0;
  if (!r.u8(cf) || !r.u8(flags)) return malformed("truncated in an op");
  if (cf >= persistence::family_count) return malformed("unknown family " + std::to_string(cf));
  if (static_cast<family>(cf) == family::raft) return malformed("an op writes the raft family");
  if ((flags & ~(flag_erase | flag_range)) != 0 || flags == flag_range)
    return malformed("unknown op flags " + std::to_string(flags));
  write_op op{static_cast<family>(cf), (flags & flag_erase) != 0, {}, {}};
  std::string second;
  if (!r.field(op.key) || !r.field(second))
    return malformed("truncated (or a length not in its shortest form) in an op's key or value");
  if (flags == (flag_erase | flag_range)) {
    if (second.empty()) return malformed("a range erase without a range end");
    op.range_end = std::move(second);
  } else if (op.erase) {
    if (!second.empty()) return malformed("an erase with a value");
  } else {
    op.value = std::move(second);
  }
  return op;
}

result<std::vector<proposal>> decode_proposals(reader& r) {
  uint32_t n = 0;
  if (!r.u32(n)) return malformed("truncated before the proposal count");
  if (n > r.in.size() / min_proposal_size)
    return malformed(std::to_string(n) + " proposals do not fit in " + std::to_string(r.in.size()) +
                     " bytes");
  std::vector<proposal> out(n);
  for (auto& p : out) {
    uint32_t ops = 0;
    if (!r.u64(p.id) || !r.u32(ops)) return malformed("truncated in a proposal's header");
    if (ops > r.in.size() / min_op_size)
      return malformed(std::to_string(ops) + " ops do not fit in " + std::to_string(r.in.size()) +
                       " bytes");
    p.ops.reserve(ops);
    for (uint32_t i = 0; i < ops; ++i) {
      auto op = decode_op(r);
      if (!op) return op.error();
      p.ops.push_back(std::move(op).value());
    }
  }
  return out;
}

}  // namespace

std::size_t encoded_size(const entry& e) {
  std::size_t n = header_size;
  switch (e.kind) {
    case entry_kind::writes:
      n += 4;
      for (const auto& p : e.proposals) {
        n += 8 + 4;
        for (const auto& op : p.ops) {
          const std::string_view second = second_field(op);
          n += 2 + varint_size(op.key.size()) + op.key.size() + varint_size(second.size()) +
               second.size();
        }
      }
      break;
    case entry_kind::leader_begin:
      break;
    case entry_kind::reserve_ids:
      n += 8;
      break;
  }
  return n;
}

std::string encode(const entry& e) {
  std::string out(encoded_size(e), '\0');
  encode_into(e, out.data());
  return out;
}

result<raft_buffer> encode_for_raft(const entry& e) {
  raft_buffer b{};
  b.len = encoded_size(e);
  b.base = raft_malloc(b.len);
  if (b.base == nullptr)
    return error(code::unavailable,
                 "no memory for a replicated log entry of " + std::to_string(b.len) + " bytes");
  encode_into(e, static_cast<char*>(b.base));
  return b;
}

result<entry> decode(std::string_view bytes) {
  reader r{bytes};
  uint8_t format = 0, kind = 0;
  entry e;
  if (!r.u8(format)) return malformed("empty");
  if (format != entry_format) return malformed("unknown format " + std::to_string(format));
  if (!r.u8(kind) || !r.u64(e.term)) return malformed("truncated in the header");
  switch (kind) {
    case static_cast<uint8_t>(entry_kind::writes): {
      auto ps = decode_proposals(r);
      if (!ps) return ps.error();
      e.proposals = std::move(ps).value();
      break;
    }
    case static_cast<uint8_t>(entry_kind::leader_begin):
      break;
    case static_cast<uint8_t>(entry_kind::reserve_ids):
      if (!r.u64(e.limit)) return malformed("truncated before the id limit");
      break;
    default:
      return malformed("unknown kind " + std::to_string(kind));
  }
  e.kind = static_cast<entry_kind>(kind);
  if (!r.in.empty()) return malformed(std::to_string(r.in.size()) + " trailing bytes");
  return e;
}

}  // namespace keel::raft
