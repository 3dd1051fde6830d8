#include "persistence/values.hpp"

#include "persistence/msgpack.hpp"
#include "persistence/record.hpp"

namespace keel::persistence {

using nlohmann::json;

result<json> from_msgpack(std::string_view bytes, std::string_view what) {
  auto j = msgpack_decode(bytes);
  if (!j)
    return error(code::corruption, "corrupt record (" + std::string(what) + "): bad MessagePack");
  return std::move(*j);
}

namespace {

std::string encode_value(value_type t, const json& j, int64_t time_ms) {
  return encode_record(record{static_cast<uint16_t>(t), time_ms, to_msgpack(j)});
}

result<json> decode_value(value_type t, std::string_view bytes, std::string_view what) {
  auto r = decode_record(bytes, what);
  if (!r) return r.error();
  if (r->type != static_cast<uint16_t>(t))
    return error(code::corruption,
                 "corrupt record (" + std::string(what) + "): unexpected record type");
  auto j = from_msgpack(r->payload, what);
  if (!j) return j.error();
  if (!j->is_object())
    return error(code::corruption, "corrupt record (" + std::string(what) + "): not an object");
  return j;
}

// A closed-set field read inside extract(): a string that names no value.
struct unknown_value {
  std::string message;
};

// A closed-set field's value from its stored string; `field` names it in
// the error ("unknown inbox entry kind 'x'").
template <class E, class Parse>
E closed(const json& stored, Parse parse, std::string_view field) {
  const auto text = stored.get<std::string>();
  const std::optional<E> v = parse(text);
  if (!v) throw unknown_value{"unknown " + std::string(field) + " '" + text + "'"};
  return *v;
}

// Runs `fill` and turns a missing or mistyped field, or an unknown value of
// a closed set, into a corruption error.
template <class T, class F>
result<T> extract(std::string_view what, F&& fill) {
  try {
    T v;
    fill(v);
    return v;
  } catch (const json::exception& e) {
    return error(code::corruption,
                 "corrupt record (" + std::string(what) + "): " + std::string(e.what()));
  } catch (const unknown_value& e) {
    return error(code::corruption, "corrupt record (" + std::string(what) + "): " + e.message);
  }
}

}  // namespace

std::string encode_object(value_type t, const json& object, int64_t time_ms) {
  return encode_value(t, object, time_ms);
}

result<json> decode_object(value_type t, std::string_view bytes, std::string_view what) {
  return decode_value(t, bytes, what);
}

std::string encode(const agent_meta& v, int64_t time_ms) {
  nlohmann::json j = {{"id", v.id},
                      {"type", v.type},
                      {"status", std::string(to_string(v.status))},
                      {"created_ms", v.created_ms},
                      {"snapshot_seq", v.snapshot_seq},
                      {"clean", v.clean}};
  // Written only when set, so most entries stay as small as before.
  if (v.compacted_seq) {
    j["compacted_seq"] = v.compacted_seq;
    j["compacted_head"] = v.compacted_head;
  }
  if (v.origin != agent_origin::spawned) {
    j["origin"] = to_string(v.origin);
    j["parent"] = v.parent;
    j["fork_seq"] = v.fork_seq;
  }
  if (v.unverified) j["unverified"] = true;
  if (!v.phase.empty()) j["phase"] = v.phase;
  if (v.paused) j["paused"] = true;
  return encode_value(value_type::agent_meta, j, time_ms);
}

std::string encode(const inbox_entry& v, int64_t time_ms) {
  return encode_value(value_type::inbox_entry,
                      {{"agent", v.agent},
                       {"arrival", v.arrival},
                       {"kind", to_string(v.kind)},
                       {"id", v.id},
                       {"from", v.from},
                       {"body", v.body},
                       {"dedupe", v.dedupe}},
                      time_ms);
}

std::string encode(const dedupe_entry& v, int64_t time_ms) {
  nlohmann::json j = {{"arrival", v.arrival}, {"processed", v.processed}, {"reply", v.reply}};
  if (v.expires_ms) j["expires_ms"] = v.expires_ms;
  return encode_value(value_type::dedupe_entry, j, time_ms);
}

std::string encode(const timer_entry& v, int64_t time_ms) {
  return encode_value(value_type::timer_entry, {{"agent", v.agent}, {"payload", v.payload}},
                      time_ms);
}

std::string encode(const effect_marker& v, int64_t time_ms) {
  nlohmann::json j = {{"agent", v.agent},        {"kind", to_string(v.kind)},
                      {"tool", v.tool},          {"attempt", v.attempt},
                      {"queue", v.queue},        {"lease_ms", v.lease_ms},
                      {"arguments", v.arguments}};
  if (v.node_crashes) j["node_crashes"] = v.node_crashes;  // rare: only when set
  j["idempotent"] = v.idempotent;
  if (v.term) j["term"] = v.term;  // absent off a cluster: single-node bytes stay as they were
  return encode_value(value_type::effect_marker, j, time_ms);
}

result<effect_marker> decode_effect_marker(std::string_view bytes, std::string_view what) {
  auto j = decode_value(value_type::effect_marker, bytes, what);
  if (!j) return j.error();
  return extract<effect_marker>(what, [&](effect_marker& v) {
    v.agent = j->at("agent").get<std::string>();
    v.kind = closed<effect_kind>(j->at("kind"), effect_kind_from_string, "effect kind");
    v.tool = j->at("tool").get<std::string>();
    v.attempt = j->at("attempt").get<uint32_t>();
    v.queue = j->at("queue").get<std::string>();
    v.lease_ms = j->at("lease_ms").get<uint32_t>();
    v.arguments = j->at("arguments");
    v.node_crashes = j->value("node_crashes", uint32_t{0});
    v.idempotent = j->value("idempotent", false);
    v.term = j->value("term", uint64_t{0});
  });
}

result<agent_meta> decode_agent_meta(std::string_view bytes, std::string_view what) {
  auto j = decode_value(value_type::agent_meta, bytes, what);
  if (!j) return j.error();
  return extract<agent_meta>(what, [&](agent_meta& v) {
    v.id = j->at("id").get<uint64_t>();
    v.type = j->at("type").get<std::string>();
    v.status = closed<agent_status>(j->at("status"), agent_status_from_string, "agent status");
    v.created_ms = j->at("created_ms").get<int64_t>();
    v.snapshot_seq = j->at("snapshot_seq").get<uint64_t>();
    v.clean = j->at("clean").get<bool>();
    v.compacted_seq = j->value("compacted_seq", uint64_t{0});
    v.compacted_head = j->value("compacted_head", "");
    v.origin = closed<agent_origin>(j->value("origin", json("")), agent_origin_from_string,
                                    "agent origin");
    v.parent = j->value("parent", "");
    v.fork_seq = j->value("fork_seq", uint64_t{0});
    v.unverified = j->value("unverified", false);
    v.phase = j->value("phase", "");  // absent in entries of earlier versions
    v.paused = j->value("paused", false);
  });
}

result<inbox_entry> decode_inbox_entry(std::string_view bytes, std::string_view what) {
  auto j = decode_value(value_type::inbox_entry, bytes, what);
  if (!j) return j.error();
  return extract<inbox_entry>(what, [&](inbox_entry& v) {
    v.agent = j->at("agent").get<std::string>();
    v.arrival = j->at("arrival").get<uint64_t>();
    v.kind = closed<inbox_kind>(j->at("kind"), inbox_kind_from_string, "inbox entry kind");
    v.id = j->at("id").get<std::string>();
    v.from = j->at("from").get<std::string>();
    v.body = j->at("body");
    v.dedupe = j->value("dedupe", "");  // absent in entries written before it existed
  });
}

result<dedupe_entry> decode_dedupe_entry(std::string_view bytes, std::string_view what) {
  auto j = decode_value(value_type::dedupe_entry, bytes, what);
  if (!j) return j.error();
  return extract<dedupe_entry>(what, [&](dedupe_entry& v) {
    v.arrival = j->at("arrival").get<uint64_t>();
    v.processed = j->at("processed").get<bool>();
    v.reply = j->at("reply");
    v.expires_ms = j->value("expires_ms", int64_t{0});
  });
}

result<timer_entry> decode_timer_entry(std::string_view bytes, std::string_view what) {
  auto j = decode_value(value_type::timer_entry, bytes, what);
  if (!j) return j.error();
  return extract<timer_entry>(what, [&](timer_entry& v) {
    v.agent = j->at("agent").get<std::string>();
    v.payload = j->at("payload");
  });
}

}  // namespace keel::persistence
