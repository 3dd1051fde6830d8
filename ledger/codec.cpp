#include "ledger/codec.hpp"

#include <algorithm>

#include "base/bytes.hpp"
#include "base/sha256.hpp"
#include "persistence/values.hpp"

namespace keel::actors {

namespace {

using json = nlohmann::json;

bool has_large_string(const json& j) {
  if (j.is_string()) return j.get_ref<const std::string&>().size() >= blob_threshold;
  if (j.is_structured())
    for (const auto& v : j)
      if (has_large_string(v)) return true;
  return false;
}

// Replaces large strings by references and collects their content.
void externalize(json& j, blob_list& blobs) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s.size() < blob_threshold) return;
    auto h = sha256(s);
    std::string key(reinterpret_cast<const char*>(h.data()), h.size());
    blobs.emplace_back(key, s);
    j = json::binary(std::vector<uint8_t>(h.begin(), h.end()));
    return;
  }
  if (j.is_structured())
    for (auto& v : j) externalize(v, blobs);
}

status resolve(json& j, const blob_reader& blobs, std::string_view what) {
  if (j.is_binary()) {
    const auto& b = j.get_binary();
    if (b.size() != 32 || !blobs)
      return error(code::corruption,
                   "corrupt record (" + std::string(what) + "): bad blob reference");
    auto content = blobs(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
    if (!content) return content.error();
    if (!*content)
      return error(code::corruption,
                   "corrupt record (" + std::string(what) + "): blob " + to_hex(b) + " is missing");
    j = std::move(**content);
    return status::ok();
  }
  if (j.is_structured())
    for (auto& v : j) KEEL_TRY(resolve(v, blobs, what));
  return status::ok();
}

// The payload of `data`, with large strings moved to `blobs` when given.
std::string encode_data(const json& data, blob_list* blobs, bool& has_refs) {
  has_refs = blobs && has_large_string(data);
  if (!has_refs) return persistence::to_msgpack(data);
  json copy = data;
  externalize(copy, *blobs);
  return persistence::to_msgpack(copy);
}

}  // namespace

blob_reader store_blobs(persistence::store& db) {
  return [&db](std::string_view key) { return db.get_blob(key); };
}

void blob_ops(const blob_list& blobs, persistence::write_set& ops) {
  for (const auto& [key, content] : blobs)
    ops.push_back({persistence::family::blobs, false, key, content});
}

persistence::record to_record(const agent::event& e, blob_list* blobs) {
  bool refs = false;
  std::string payload = encode_data(e.data, blobs, refs);
  uint16_t type = static_cast<uint16_t>(e.type) | (refs ? blob_ref_flag : 0);
  return {type, e.time_ms, std::move(payload)};
}

namespace {

constexpr std::size_t chain_bytes = 64;  // prev + hash

chain_hash content_hash(const chain_hash& prev, uint64_t seq, uint16_t type, int64_t time_ms,
                        std::string_view data) {
  sha256_hasher h;
  h.update(std::string_view(reinterpret_cast<const char*>(prev.data()), prev.size()));
  std::string fixed;
  put_u64_be(fixed, seq);
  fixed.push_back(static_cast<char>(type >> 8));
  fixed.push_back(static_cast<char>(type & 0xff));
  put_u64_be(fixed, static_cast<uint64_t>(time_ms));
  h.update(fixed);
  h.update(data);
  return h.finish();
}

}  // namespace

persistence::record chained_record(const agent::event& e, uint64_t seq, chain_hash& head,
                                   blob_list* blobs) {
  persistence::record r = to_record(e, blobs);
  r.type |= chain_flag;
  const chain_hash hash = content_hash(head, seq, r.type, r.time_ms, r.payload);
  std::string payload;
  payload.reserve(chain_bytes + r.payload.size());
  payload.append(reinterpret_cast<const char*>(head.data()), head.size());
  payload.append(reinterpret_cast<const char*>(hash.data()), hash.size());
  payload.append(r.payload);
  r.payload = std::move(payload);
  head = hash;
  return r;
}

std::optional<chain_link> ledger_link(const persistence::record& r, uint64_t seq) {
  if (!(r.type & chain_flag) || r.payload.size() < chain_bytes) return std::nullopt;
  chain_link l;
  std::copy_n(r.payload.data(), 32, reinterpret_cast<char*>(l.prev.data()));
  std::copy_n(r.payload.data() + 32, 32, reinterpret_cast<char*>(l.hash.data()));
  l.matches = content_hash(l.prev, seq, r.type, r.time_ms,
                           std::string_view(r.payload).substr(chain_bytes)) == l.hash;
  return l;
}

result<agent::event> event_from_record(const persistence::record& r, std::string_view what,
                                       const blob_reader& blobs) {
  const bool refs = (r.type & blob_ref_flag) != 0;
  const bool chained = (r.type & chain_flag) != 0;
  auto t =
      agent::event_type_from_code(static_cast<uint16_t>(r.type & ~(blob_ref_flag | chain_flag)));
  if (!t)
    return error(code::corruption, "corrupt record (" + std::string(what) +
                                       "): unknown event type " + std::to_string(r.type));
  if (chained && r.payload.size() < chain_bytes)
    return error(code::corruption,
                 "corrupt record (" + std::string(what) + "): too short for its chain fields");
  auto data = persistence::from_msgpack(
      chained ? std::string_view(r.payload).substr(chain_bytes) : std::string_view(r.payload),
      what);
  if (!data) return data.error();
  if (refs) KEEL_TRY(resolve(*data, blobs, what));
  return agent::event{*t, r.time_ms, std::move(*data)};
}

// Snapshot payload: the fixed fields in binary, then the type's data as
// MessagePack (see docs/formats.md). Activation decodes one per wake-up, so
// it avoids building a JSON object for the whole state.
persistence::record snapshot_record(const agent::agent_state& s, int64_t time_ms,
                                    blob_list* blobs) {
  std::string out;
  put_varint(out, s.last_seq);
  put_varint(out, s.last_arrival);
  put_varint(out, s.next_timer_id);
  const std::string_view status = to_string(s.status);
  put_varint(out, status.size());
  out.append(status);
  put_varint(out, s.type.size());
  out.append(s.type);
  put_varint(out, s.timers.size());
  for (const auto& [id, t] : s.timers) {
    put_varint(out, id);
    put_u64_be(out, static_cast<uint64_t>(t.due_ms));
    std::string p = persistence::to_msgpack(t.payload);
    put_varint(out, p.size());
    out.append(p);
  }
  // The version is in the loop's data until an upgrade changes it.
  const json data = agent::type_data(s);
  const bool upgraded = s.version != agent::legacy_version(data);
  const bool extras = s.paused || !s.forks.empty() || upgraded;
  if (extras) {
    json x = json::object();
    if (s.paused) x["paused"] = true;
    if (upgraded) x["version"] = s.version;
    for (const auto& f : s.forks) x["forks"].push_back({{"name", f.name}, {"at", f.at}});
    std::string p = persistence::to_msgpack(x);
    put_varint(out, p.size());
    out.append(p);
  }
  bool refs = false;
  out.append(encode_data(data, blobs, refs));
  const uint16_t type = refs ? snapshot_with_blobs_type : agent::snapshot_record_type;
  return {static_cast<uint16_t>(type | (extras ? snapshot_extras_flag : 0)), time_ms,
          std::move(out)};
}

result<agent::agent_state> snapshot_from_record(const persistence::record& r, std::string_view what,
                                                const blob_reader& blobs) {
  auto corrupt = [&](const char* why) {
    return error(code::corruption, "corrupt record (" + std::string(what) + "): " + why);
  };
  const bool extras = (r.type & snapshot_extras_flag) != 0;
  const uint16_t base_type = r.type & ~snapshot_extras_flag;
  const bool refs = base_type == snapshot_with_blobs_type;
  if (base_type != agent::snapshot_record_type && !refs) return corrupt("not a snapshot");
  std::string_view in = r.payload;
  auto str = [&in](std::string& out) {
    auto n = get_varint(in);
    if (!n || *n > in.size()) return false;
    out.assign(in.data(), *n);
    in.remove_prefix(*n);
    return true;
  };
  agent::agent_state s;
  auto seq = get_varint(in), arrival = get_varint(in), next_timer = get_varint(in);
  if (!seq || !arrival || !next_timer) return corrupt("bad snapshot header");
  s.last_seq = *seq;
  s.last_arrival = *arrival;
  s.next_timer_id = *next_timer;
  std::string status_text;
  if (!str(status_text) || !str(s.type)) return corrupt("bad snapshot header");
  const auto parsed = agent_status_from_string(status_text);
  if (!parsed) return corrupt("unknown agent status");
  s.status = *parsed;
  auto timers = get_varint(in);
  if (!timers || *timers > in.size()) return corrupt("bad timer count");
  for (uint64_t i = 0; i < *timers; ++i) {
    auto id = get_varint(in);
    if (!id || in.size() < 8) return corrupt("bad timer");
    int64_t due = static_cast<int64_t>(get_u64_be(in.data()));
    in.remove_prefix(8);
    std::string p;
    if (!str(p)) return corrupt("bad timer payload");
    auto payload = persistence::from_msgpack(p, what);
    if (!payload) return payload.error();
    s.timers[*id] = {due, std::move(*payload)};
  }
  if (extras) {
    std::string p;
    if (!str(p)) return corrupt("bad snapshot extras");
    auto x = persistence::from_msgpack(p, what);
    if (!x || !x->is_object()) return corrupt("bad snapshot extras");
    s.paused = x->value("paused", false);
    for (const auto& f : x->value("forks", json::array()))
      s.forks.push_back({f.value("name", ""), f.value("at", uint64_t{0})});
    s.version = x->value("version", "");
  }
  auto data = persistence::from_msgpack(in, what);
  if (!data) return data.error();
  if (refs) KEEL_TRY(resolve(*data, blobs, what));
  if (s.version.empty()) s.version = agent::legacy_version(*data);
  KEEL_TRY(agent::load_type_data(s, std::move(*data), what));
  return s;
}

}  // namespace keel::actors
