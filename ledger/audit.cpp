#include "ledger/audit.hpp"

#include <algorithm>

#include "base/bytes.hpp"
#include "persistence/keys.hpp"

namespace keel::actors {

namespace {

std::string hex(const chain_hash& h) {
  return to_hex(h);
}

std::string seq_text(uint64_t seq) {
  return std::to_string(seq);
}

// Every blob reference in `j` (a MessagePack bin of 32 bytes).
void blob_refs(const json& j, std::vector<std::string>& out) {
  if (j.is_binary()) {
    const auto& b = j.get_binary();
    out.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
  } else if (j.is_structured()) {
    for (const auto& v : j) blob_refs(v, out);
  }
}

}  // namespace

json export_line(uint64_t seq, const agent::event& e, const chain_hash& prev,
                 const chain_hash& hash) {
  return {{"seq", seq},        {"type", agent::to_string(e.type)},
          {"time", e.time_ms}, {"data", e.data},
          {"prev", hex(prev)}, {"hash", hex(hash)}};
}

status parse_export(const json& lines, ledger_import& out) {
  if (!lines.is_array())
    return error(code::invalid_argument, "the ledger must be a list of events");
  std::size_t line_no = 0;
  for (const json& j : lines) {
    ++line_no;
    auto bad = [line_no](const std::string& why) {
      return error(code::invalid_argument, "ledger line " + std::to_string(line_no) + ": " + why);
    };
    if (!j.is_object()) return bad("not a JSON object");
    if (!j.contains("seq") || !j["seq"].is_number_unsigned()) return bad("needs \"seq\"");
    if (!j.contains("type") || !j["type"].is_string()) return bad("needs \"type\"");
    if (!j.contains("time") || !j["time"].is_number_integer()) return bad("needs \"time\"");
    if (j.contains("data") && !j["data"].is_object()) return bad("\"data\" must be an object");
    const uint64_t seq = j["seq"].get<uint64_t>();
    if (seq != out.events.size() + 1)
      return bad("seq " + seq_text(seq) + " where " + seq_text(out.events.size() + 1) +
                 " was expected (a ledger starts at seq 1 and has no gaps)");
    auto type = agent::event_type_from_name(j["type"].get<std::string>());
    if (!type) return bad("unknown event type " + j["type"].dump());
    out.events.push_back({seq, {*type, j["time"].get<int64_t>(), j.value("data", json::object())}});
    auto hex_field = [&j](const char* k) {
      return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    out.hashes.push_back(hex_field("hash"));
    out.prevs.push_back(hex_field("prev"));
  }
  if (out.events.empty()) return error(code::invalid_argument, "the ledger has no events");
  if (out.events.front().ev.type != agent::event_type::spawned)
    return error(code::invalid_argument, "a ledger starts with a spawned event");
  return status::ok();
}

result<std::vector<stored_event>> read_events(persistence::store& db, uint64_t agent_id,
                                              std::string_view name, uint64_t from, uint64_t to,
                                              bool links) {
  std::vector<stored_event> out;
  const blob_reader blobs = store_blobs(db);
  while (from <= to) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<uint64_t>(to - from + 1, 1024));
    auto recs = db.read_ledger(agent_id, from, chunk, name);
    if (!recs) return recs.error();
    for (auto& [seq, rec] : *recs) {
      if (seq > to) return out;
      auto ev =
          event_from_record(rec, "ledger of " + std::string(name) + " seq " + seq_text(seq), blobs);
      if (!ev) return ev.error();
      out.push_back({seq, std::move(*ev), links ? ledger_link(rec, seq) : std::nullopt});
    }
    if (recs->size() < chunk) break;
    from = recs->back().first + 1;
  }
  return out;
}

result<chain_hash> chain_head_at(persistence::store& db, uint64_t agent_id, uint64_t seq,
                                 std::string_view name) {
  if (seq == 0) return chain_hash{};
  auto raw = db.get(persistence::family::ledger, persistence::agent_seq_key(agent_id, seq));
  if (!raw) return raw.error();
  if (!*raw)
    return error(code::corruption,
                 "ledger of " + std::string(name) + " has no record at seq " + seq_text(seq));
  auto rec = persistence::decode_record(**raw, "ledger of " + std::string(name));
  if (!rec) return rec.error();
  if (auto link = ledger_link(*rec, seq)) return link->hash;
  return sha256(**raw);
}

result<verify_report> verify_ledger(persistence::store& db, const persistence::agent_meta& meta,
                                    std::string_view name) {
  verify_report rep;
  rep.first_seq = meta.compacted_seq + 1;
  chain_hash prev{};
  if (meta.compacted_seq > 0) {
    auto anchor = from_hex(meta.compacted_head);
    if (!anchor || anchor->size() != prev.size()) {
      rep.bad_seq = rep.first_seq;
      rep.reason = "the compaction anchor in the agent's entry is not a hash";
      return rep;
    }
    std::copy(anchor->begin(), anchor->end(), prev.begin());
  }
  auto broken = [&rep](uint64_t seq, std::string why) {
    rep.intact = false;
    rep.bad_seq = seq;
    rep.reason = std::move(why);
    return rep;
  };
  const std::string prefix = persistence::agent_prefix(meta.id);
  std::string from = persistence::agent_seq_key(meta.id, rep.first_seq);
  uint64_t expect = rep.first_seq;
  for (;;) {
    auto page = db.scan(persistence::family::ledger, prefix, from, 1024);
    if (!page) return page.error();
    for (const auto& [key, value] : *page) {
      const uint64_t seq = key.size() == 16 ? get_u64_be(key.data() + 8) : 0;
      if (seq != expect)
        return broken(expect, seq < expect ? "a record with a bad key"
                                           : "records " + seq_text(expect) + ".." +
                                                 seq_text(seq - 1) + " are missing");
      auto rec = persistence::decode_record(value, "ledger of " + std::string(name));
      if (!rec) return broken(seq, "the record does not decode: " + rec.error().message());
      auto link = ledger_link(*rec, seq);
      if (!link && rep.events == rep.legacy) {
        // Written before the chain existed (schema 1): the chain starts
        // after these, from the hash of their bytes (chain_head_at).
        prev = sha256(value);
        ++rep.legacy;
        rep.last_seq = seq;
        ++rep.events;
        ++expect;
        continue;
      }
      if (!link) return broken(seq, "the record carries no chain hash");
      if (!link->matches)
        return broken(seq, "the record's content does not match its hash (it was altered)");
      if (link->prev != prev)
        return broken(seq, seq == rep.first_seq
                               ? "the record does not link to the chain's start"
                               : "the record does not link to seq " + seq_text(seq - 1) +
                                     " (one of them was altered or replaced)");
      // The content hash covers the blob references; the blobs must hold
      // what they are named after.
      std::vector<std::string> refs;
      if (rec->type & blob_ref_flag) {
        auto data = persistence::from_msgpack(std::string_view(rec->payload).substr(64), "ledger");
        if (!data) return broken(seq, "the record's data does not decode");
        blob_refs(*data, refs);
      }
      for (const auto& r : refs) {
        auto blob = db.get_blob(r);
        if (!blob) return blob.error();
        if (!*blob)
          return broken(seq, "blob " +
                                 to_hex(std::span<const uint8_t>(
                                     reinterpret_cast<const uint8_t*>(r.data()), r.size())) +
                                 " is missing");
        const auto h = sha256(**blob);
        if (std::string_view(reinterpret_cast<const char*>(h.data()), h.size()) != r)
          return broken(seq, "a blob it refers to does not match its hash (it was altered)");
      }
      prev = link->hash;
      rep.last_seq = seq;
      ++rep.events;
      ++expect;
    }
    if (page->size() < 1024) break;
    from = persistence::agent_seq_key(meta.id, expect);
  }
  rep.intact = true;
  rep.head = hex(prev);
  return rep;
}

}  // namespace keel::actors
