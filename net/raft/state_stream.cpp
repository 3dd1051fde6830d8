#include "net/raft/state_stream.hpp"

#include <utility>

#include "base/bytes.hpp"

namespace keel::raft {

namespace {

using persistence::family;

constexpr uint8_t stream_format = 1;
// Keys read per scan inside a page, and how much a page may visit (keys the
// filters drop included) before it is cut short.
constexpr std::size_t scan_batch = 1024;
constexpr std::size_t visit_factor = 4;

enum class part_filter : uint8_t { none, timers_of_group, agents_of_group };

struct part {
  family cf;
  std::string begin, end;  // end empty: the family's end
  part_filter filter = part_filter::none;
};

std::string id_key(uint64_t id) {
  std::string k;
  put_u64_be(k, id);
  return k;
}

// The agent ids of group g: ((g+1) << 48) up to ((g+2) << 48). Groups past
// 0xFFFD (the metadata group) hold no agents: an empty range.
std::pair<std::string, std::string> agent_range(group_id g) {
  if (g >= 0xFFFE) return {std::string(8, '\0'), std::string(8, '\0')};
  return {id_key(uint64_t{g + 1} << 48), id_key(uint64_t{g + 2} << 48)};
}

part part_of(group_id g, uint8_t i) {
  auto [lo, hi] = agent_range(g);
  switch (i) {
    case 0:
      return {family::ledger, lo, hi};
    case 1:
      return {family::snapshots, lo, hi};
    case 2:
      return {family::inbox, lo, hi};
    case 3:
      return {family::dedupe, lo, hi};
    case 4:
      return {family::effects, lo, hi};
    case 5:
      return {family::timers, "", "", part_filter::timers_of_group};
    case 6:
      return {family::agents, "", "", part_filter::agents_of_group};
    case 7:
      return {family::blobs, "", ""};
    case 8:
      // Outbox entries are keyed by an id of their sender's group.
      return {family::outbox, lo, hi};
    default:
      return {family::raft, fsm_begin(g), fsm_end(g)};
  }
}

bool keep(const part& p, group_id g, const group_of_fn& group_of, std::string_view key) {
  switch (p.filter) {
    case part_filter::none:
      return true;
    case part_filter::timers_of_group:
      // due(8) agent id(8) timer id(8)
      return key.size() == 24 && get_u64_be(key.data() + 8) >> 48 == uint64_t{g} + 1;
    case part_filter::agents_of_group:
      return group_of && group_of(key) == g;
  }
  return false;
}

std::string after_key(std::string key) {
  key.push_back('\0');
  return key;
}

void put_bytes(std::string& out, std::string_view b) {
  put_u32_be(out, static_cast<uint32_t>(b.size()));
  out.append(b);
}

// A reader of untrusted bytes: every read checks what is left.
struct input {
  std::string_view in;
  bool ok = true;
  bool need(std::size_t n) {
    if (in.size() < n) ok = false;
    return ok;
  }
  uint8_t u8() {
    if (!need(1)) return 0;
    uint8_t v = static_cast<uint8_t>(in[0]);
    in.remove_prefix(1);
    return v;
  }
  uint32_t u32() {
    if (!need(4)) return 0;
    uint32_t v = get_u32_be(in.data());
    in.remove_prefix(4);
    return v;
  }
  uint64_t u64() {
    if (!need(8)) return 0;
    uint64_t v = get_u64_be(in.data());
    in.remove_prefix(8);
    return v;
  }
  std::string bytes() {
    uint32_t n = u32();
    if (!need(n)) return {};
    std::string v(in.substr(0, n));
    in.remove_prefix(n);
    return v;
  }
};

status malformed(const char* what, const std::string& why) {
  return error(code::corruption, std::string("a group state ") + what + ": " + why);
}

}  // namespace

std::string encode_request(const fetch_request& r) {
  std::string out;
  out.push_back(static_cast<char>(stream_format));
  put_u32_be(out, r.group);
  put_u64_be(out, r.marker_index);
  put_u64_be(out, r.session);
  out.push_back(static_cast<char>(r.cursor.part));
  put_bytes(out, r.cursor.after);
  return out;
}

result<fetch_request> decode_request(std::string_view bytes) {
  input in{bytes};
  if (in.u8() != stream_format || !in.ok) return malformed("request", "unknown format");
  fetch_request r;
  r.group = in.u32();
  r.marker_index = in.u64();
  r.session = in.u64();
  r.cursor.part = in.u8();
  r.cursor.after = in.bytes();
  if (!in.ok) return malformed("request", "cut short");
  if (!in.in.empty()) return malformed("request", "bytes after its end");
  if (r.cursor.part >= state_parts) return malformed("request", "a part out of range");
  return r;
}

std::string encode_page(const state_page& p) {
  std::string out;
  out.push_back(static_cast<char>(stream_format));
  put_u64_be(out, p.session);
  put_u64_be(out, p.applied);
  put_u32_be(out, static_cast<uint32_t>(p.entries.size()));
  for (const auto& e : p.entries) {
    out.push_back(static_cast<char>(e.cf));
    put_bytes(out, e.key);
    put_bytes(out, e.value);
  }
  out.push_back(p.done ? 1 : 0);
  if (!p.done) {
    out.push_back(static_cast<char>(p.next.part));
    put_bytes(out, p.next.after);
  }
  return out;
}

result<state_page> decode_page(std::string_view bytes) {
  input in{bytes};
  if (in.u8() != stream_format || !in.ok) return malformed("page", "unknown format");
  state_page p;
  p.session = in.u64();
  p.applied = in.u64();
  uint32_t n = in.u32();
  // Each entry takes at least 9 bytes: a count beyond that is a lie, and
  // must not size an allocation.
  if (!in.ok || n > in.in.size() / 9) return malformed("page", "an entry count past its end");
  p.entries.reserve(n);
  for (uint32_t i = 0; i < n && in.ok; ++i) {
    uint8_t cf = in.u8();
    if (cf >= persistence::family_count) return malformed("page", "an unknown family");
    state_entry e;
    e.cf = static_cast<family>(cf);
    e.key = in.bytes();
    e.value = in.bytes();
    p.entries.push_back(std::move(e));
  }
  uint8_t done = in.u8();
  if (done > 1) return malformed("page", "a done flag that is neither 0 nor 1");
  p.done = done == 1;
  if (!p.done) {
    p.next.part = in.u8();
    p.next.after = in.bytes();
    if (in.ok && p.next.part >= state_parts) return malformed("page", "a part out of range");
  }
  if (!in.ok) return malformed("page", "cut short");
  if (!in.in.empty()) return malformed("page", "bytes after its end");
  return p;
}

result<state_page> read_state_page(const persistence::read_view& view, group_id g,
                                   const group_of_fn& group_of, const state_cursor& from,
                                   std::size_t max_bytes) {
  if (from.part >= state_parts)
    return error(code::invalid_argument, "a state cursor past the group's parts");
  state_page page;
  std::size_t bytes = 0, visited = 0;
  state_cursor at = from;
  while (at.part < state_parts) {
    if (bytes >= max_bytes || visited >= visit_factor * max_bytes) {
      page.next = at;
      return page;
    }
    const part p = part_of(g, at.part);
    const std::string start = at.after.empty() ? p.begin : after_key(at.after);
    auto got = view.scan(p.cf, start, p.end, scan_batch, max_bytes - bytes);
    if (!got) return got.error();
    if (got->empty()) {
      at = {static_cast<uint8_t>(at.part + 1), {}};
      continue;
    }
    for (auto& [k, v] : *got) {
      visited += k.size() + v.size();
      if (!keep(p, g, group_of, k)) continue;
      bytes += k.size() + v.size();
      page.entries.push_back({p.cf, k, std::move(v)});
    }
    at.after = std::move(got->back().first);
  }
  page.done = true;
  return page;
}

status begin_state_replace(persistence::store& db, group_id g, const group_of_fn& group_of) {
  persistence::write_set ops;
  ops.push_back({family::raft, false, fetching_key(g), ""});
  for (uint8_t i = 0; i < state_parts; ++i) {
    part p = part_of(g, i);
    // Blobs are shared: never erased. Filtered parts: below.
    if (p.cf == family::blobs || p.filter != part_filter::none) continue;
    if (p.begin != p.end) ops.push_back({p.cf, true, p.begin, "", p.end});
  }
  KEEL_TRY(db.write(ops, false));
  for (uint8_t i = 0; i < state_parts; ++i) {
    part p = part_of(g, i);
    if (p.filter == part_filter::none) continue;
    std::string from;
    for (;;) {
      auto got = db.scan(p.cf, "", from, scan_batch);
      if (!got) return got.error();
      if (got->empty()) break;
      persistence::write_set erases;
      for (const auto& kv : *got)
        if (keep(p, g, group_of, kv.first)) erases.push_back({p.cf, true, kv.first, ""});
      if (!erases.empty()) KEEL_TRY(db.write(erases, false));
      from = after_key(got->back().first);
    }
  }
  return status::ok();
}

}  // namespace keel::raft
