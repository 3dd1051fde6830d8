#include "net/raft/message_codec.hpp"

#include <cassert>
#include <cstring>
#include <vector>

#include "base/bytes.hpp"

namespace keel::raft {

namespace {

status malformed(std::string_view what) {
  return error(code::corruption, "malformed raft message or configuration: " + std::string(what));
}

// Bounds-checked reads from the front of a view: every read says whether
// the bytes were there, so a short input never reads past its end.
struct reader {
  std::string_view& in;

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
  // raft's integer types are unsigned long long, uint64_t is unsigned long.
  template <class T>
  bool u64(T& v) {
    static_assert(sizeof(T) == 8);
    if (in.size() < 8) return false;
    v = static_cast<T>(get_u64_be(in.data()));
    in.remove_prefix(8);
    return true;
  }
  bool flag(bool& v) {
    uint8_t b = 0;
    if (!u8(b) || b > 1) return false;
    v = b == 1;
    return true;
  }
  // A u32 length, then that many bytes (a view into the input).
  bool bytes(std::string_view& v) {
    uint32_t n = 0;
    if (!u32(n) || in.size() < n) return false;
    v = in.substr(0, n);
    in.remove_prefix(n);
    return true;
  }
};

void put_u8(std::string& out, uint8_t v) {
  out.push_back(static_cast<char>(v));
}
void put_bytes(std::string& out, const void* p, std::size_t n) {
  put_u32_be(out, static_cast<uint32_t>(n));
  out.append(static_cast<const char*>(p), n);
}

// raft_malloc(0) may answer null, which libraft reads as "no batch": every
// allocation asks for at least one byte.
void* alloc_at_least_one(std::size_t n) {
  return raft_malloc(n == 0 ? 1 : n);
}

void encode_entries(std::string& out, const raft_append_entries& a) {
  put_u32_be(out, a.n_entries);
  for (unsigned i = 0; i < a.n_entries; ++i) {
    const raft_entry& e = a.entries[i];
    put_u64_be(out, e.term);
    put_u8(out, static_cast<uint8_t>(e.type));
    put_bytes(out, e.buf.base, e.buf.len);
  }
}

// Entries go into one raft_malloc'd array plus one batch holding all data,
// as libraft's recv expects (it frees the batch once and the array).
status decode_entries(reader& r, raft_append_entries& a) {
  uint32_t n = 0;
  if (!r.u32(n)) return malformed("entry count");
  // Each entry takes at least 13 bytes: refuse counts the input cannot hold
  // before allocating for them.
  if (n > r.in.size() / 13) return malformed("entry count beyond the message");
  struct span {
    uint64_t term;
    uint8_t type;
    std::string_view data;
  };
  std::vector<span> spans(n);
  std::size_t total = 0;
  for (auto& s : spans) {
    if (!r.u64(s.term) || !r.u8(s.type) || !r.bytes(s.data)) return malformed("entry");
    if (s.type < RAFT_COMMAND || s.type > RAFT_CHANGE) return malformed("entry type");
    total += s.data.size();
  }
  a.n_entries = n;
  a.entries = nullptr;
  if (n == 0) return status::ok();
  auto* entries = static_cast<raft_entry*>(raft_malloc(n * sizeof(raft_entry)));
  auto* batch = static_cast<char*>(alloc_at_least_one(total));
  if (entries == nullptr || batch == nullptr) {
    raft_free(entries);
    raft_free(batch);
    return error(code::internal, "out of memory decoding raft entries");
  }
  char* cursor = batch;
  for (uint32_t i = 0; i < n; ++i) {
    std::memcpy(cursor, spans[i].data.data(), spans[i].data.size());
    entries[i].term = spans[i].term;
    entries[i].type = spans[i].type;
    entries[i].buf.base = cursor;
    entries[i].buf.len = spans[i].data.size();
    entries[i].batch = batch;
    cursor += spans[i].data.size();
  }
  a.entries = entries;
  return status::ok();
}

}  // namespace

void encode_configuration(std::string& out, const raft_configuration& conf) {
  put_u32_be(out, conf.n);
  for (unsigned i = 0; i < conf.n; ++i) {
    const raft_server& s = conf.servers[i];
    put_u64_be(out, s.id);
    put_u8(out, static_cast<uint8_t>(s.role));
    put_bytes(out, s.address, std::strlen(s.address));
  }
}

status decode_configuration(std::string_view& in, raft_configuration* conf) {
  raft_configuration_init(conf);
  reader r{in};
  uint32_t n = 0;
  if (!r.u32(n)) return malformed("configuration size");
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t id = 0;
    uint8_t role = 0;
    std::string_view address;
    if (!r.u64(id) || !r.u8(role) || !r.bytes(address)) {
      raft_configuration_close(conf);
      raft_configuration_init(conf);
      return malformed("configuration server");
    }
    // Roles are RAFT_STANDBY, RAFT_VOTER, RAFT_SPARE; ids are never 0; an
    // address is a C string, so no NUL inside.
    int rv = RAFT_MALFORMED;
    if (role <= RAFT_SPARE && id != 0 && address.find('\0') == std::string_view::npos) {
      rv = raft_configuration_add(conf, id, std::string(address).c_str(), role);
    }
    if (rv != 0) {
      raft_configuration_close(conf);
      raft_configuration_init(conf);
      return malformed("configuration server " + std::to_string(id));
    }
  }
  return status::ok();
}

std::string encode_message(const raft_message& msg, raft_id from, uint64_t stamp) {
  std::string out;
  put_u8(out, message_format);
  put_u8(out, static_cast<uint8_t>(msg.type));
  put_u64_be(out, from);
  put_u64_be(out, stamp);
  switch (msg.type) {
    case RAFT_IO_REQUEST_VOTE: {
      const auto& m = msg.request_vote;
      put_u64_be(out, m.term);
      put_u64_be(out, m.candidate_id);
      put_u64_be(out, m.last_log_index);
      put_u64_be(out, m.last_log_term);
      put_u8(out, m.disrupt_leader ? 1 : 0);
      put_u8(out, m.pre_vote ? 1 : 0);
      break;
    }
    case RAFT_IO_REQUEST_VOTE_RESULT: {
      const auto& m = msg.request_vote_result;
      put_u64_be(out, m.term);
      put_u8(out, m.vote_granted ? 1 : 0);
      put_u8(out, static_cast<uint8_t>(m.pre_vote));
      break;
    }
    case RAFT_IO_APPEND_ENTRIES: {
      const auto& m = msg.append_entries;
      put_u64_be(out, m.term);
      put_u64_be(out, m.prev_log_index);
      put_u64_be(out, m.prev_log_term);
      put_u64_be(out, m.leader_commit);
      encode_entries(out, m);
      break;
    }
    case RAFT_IO_APPEND_ENTRIES_RESULT: {
      const auto& m = msg.append_entries_result;
      put_u64_be(out, m.term);
      put_u64_be(out, m.rejected);
      put_u64_be(out, m.last_log_index);
      break;
    }
    case RAFT_IO_INSTALL_SNAPSHOT: {
      const auto& m = msg.install_snapshot;
      put_u64_be(out, m.term);
      put_u64_be(out, m.last_index);
      put_u64_be(out, m.last_term);
      encode_configuration(out, m.conf);
      put_u64_be(out, m.conf_index);
      put_bytes(out, m.data.base, m.data.len);
      break;
    }
    case RAFT_IO_TIMEOUT_NOW: {
      const auto& m = msg.timeout_now;
      put_u64_be(out, m.term);
      put_u64_be(out, m.last_log_index);
      put_u64_be(out, m.last_log_term);
      break;
    }
    default:
      // libraft sends only the six kinds above.
      assert(false && "unknown raft message type");
  }
  return out;
}

result<decoded_message> decode_message(std::string_view bytes) {
  decoded_message d;
  raft_message& msg = d.msg;
  reader r{bytes};
  uint8_t version = 0, type = 0;
  if (!r.u8(version) || !r.u8(type) || !r.u64(d.from) || !r.u64(d.stamp))
    return malformed("header");
  if (version != message_format) {
    return error(code::corruption, "raft message of format " + std::to_string(version) +
                                       ", this build reads " + std::to_string(message_format));
  }
  msg.type = type;
  bool ok = true;
  switch (type) {
    case RAFT_IO_REQUEST_VOTE: {
      auto& m = msg.request_vote;
      ok = r.u64(m.term) && r.u64(m.candidate_id) && r.u64(m.last_log_index) &&
           r.u64(m.last_log_term) && r.flag(m.disrupt_leader) && r.flag(m.pre_vote);
      break;
    }
    case RAFT_IO_REQUEST_VOTE_RESULT: {
      auto& m = msg.request_vote_result;
      uint8_t pre_vote = 0;
      ok = r.u64(m.term) && r.flag(m.vote_granted) && r.u8(pre_vote) &&
           pre_vote <= raft_tribool_false;
      m.pre_vote = static_cast<raft_tribool>(pre_vote);
      break;
    }
    case RAFT_IO_APPEND_ENTRIES: {
      auto& m = msg.append_entries;
      if (!(r.u64(m.term) && r.u64(m.prev_log_index) && r.u64(m.prev_log_term) &&
            r.u64(m.leader_commit))) {
        return malformed("append_entries");
      }
      KEEL_TRY(decode_entries(r, m));
      break;
    }
    case RAFT_IO_APPEND_ENTRIES_RESULT: {
      auto& m = msg.append_entries_result;
      ok = r.u64(m.term) && r.u64(m.rejected) && r.u64(m.last_log_index);
      break;
    }
    case RAFT_IO_INSTALL_SNAPSHOT: {
      auto& m = msg.install_snapshot;
      raft_configuration_init(&m.conf);
      if (!(r.u64(m.term) && r.u64(m.last_index) && r.u64(m.last_term))) {
        return malformed("install_snapshot");
      }
      KEEL_TRY(decode_configuration(bytes, &m.conf));
      std::string_view data;
      if (!r.u64(m.conf_index) || !r.bytes(data)) {
        raft_configuration_close(&m.conf);
        return malformed("install_snapshot data");
      }
      m.data.len = data.size();
      m.data.base = alloc_at_least_one(data.size());
      if (m.data.base == nullptr) {
        raft_configuration_close(&m.conf);
        return error(code::internal, "out of memory decoding a raft snapshot");
      }
      std::memcpy(m.data.base, data.data(), data.size());
      break;
    }
    case RAFT_IO_TIMEOUT_NOW: {
      auto& m = msg.timeout_now;
      ok = r.u64(m.term) && r.u64(m.last_log_index) && r.u64(m.last_log_term);
      break;
    }
    default:
      return malformed("unknown kind " + std::to_string(type));
  }
  if (!ok) return malformed("fields of kind " + std::to_string(type));
  if (!bytes.empty()) {
    release_message(msg);
    return malformed(std::to_string(bytes.size()) + " bytes after the message");
  }
  return d;
}

void release_message(raft_message& msg) {
  if (msg.type == RAFT_IO_APPEND_ENTRIES) {
    auto& m = msg.append_entries;
    if (m.n_entries > 0) raft_free(m.entries[0].batch);
    raft_free(m.entries);
    m.entries = nullptr;
    m.n_entries = 0;
  } else if (msg.type == RAFT_IO_INSTALL_SNAPSHOT) {
    auto& m = msg.install_snapshot;
    raft_configuration_close(&m.conf);
    raft_configuration_init(&m.conf);
    raft_free(m.data.base);
    m.data.base = nullptr;
    m.data.len = 0;
  }
}

}  // namespace keel::raft
