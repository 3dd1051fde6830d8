#include "ledger/writer.hpp"

#include <cassert>

#include "base/bytes.hpp"
#include "ledger/transfer.hpp"
#include "ledger/type_catalog.hpp"
#include "persistence/keys.hpp"
#include "persistence/record.hpp"

namespace keel::ledger {

using persistence::family;
using persistence::value_type;

batch_builder::~batch_builder() {
  // Blobs spilled and never written would leave records naming missing blobs.
  assert(spilled_.empty());
}

void batch_builder::append_event(uint64_t agent_id, uint64_t seq, const agent::event& e,
                                 chain_hash& head) {
  put(family::ledger, persistence::agent_seq_key(agent_id, seq),
      persistence::encode_record(actors::chained_record(e, seq, head, &spilled_)));
}

void batch_builder::put_event_record(uint64_t agent_id, uint64_t seq, std::string record) {
  put(family::ledger, persistence::agent_seq_key(agent_id, seq), std::move(record));
}

void batch_builder::erase_event(uint64_t agent_id, uint64_t seq) {
  erase(family::ledger, persistence::agent_seq_key(agent_id, seq));
}

void batch_builder::put_snapshot(uint64_t agent_id, uint64_t seq, const agent::agent_state& st,
                                 int64_t now) {
  put(family::snapshots, persistence::agent_seq_key(agent_id, seq),
      persistence::encode_record(actors::snapshot_record(st, now, &spilled_)));
}

void batch_builder::put_snapshot_record(uint64_t agent_id, uint64_t seq, std::string record) {
  put(family::snapshots, persistence::agent_seq_key(agent_id, seq), std::move(record));
}

void batch_builder::erase_snapshot(uint64_t agent_id, uint64_t seq) {
  erase(family::snapshots, persistence::agent_seq_key(agent_id, seq));
}

void batch_builder::spill_to_inbox(uint64_t agent_id, const persistence::inbox_entry& e,
                                   int64_t now) {
  put(family::inbox, persistence::agent_seq_key(agent_id, e.arrival), persistence::encode(e, now));
}

void batch_builder::remove_from_inbox(uint64_t agent_id, uint64_t arrival) {
  erase(family::inbox, persistence::agent_seq_key(agent_id, arrival));
}

void batch_builder::mark_seen(uint64_t agent_id, std::string_view id, uint64_t arrival,
                              int64_t now) {
  put(family::dedupe, persistence::dedupe_key(agent_id, id),
      persistence::encode(persistence::dedupe_entry{arrival, false, nullptr}, now));
}

void batch_builder::mark_seen_with_reply(uint64_t agent_id, std::string_view id, uint64_t arrival,
                                         const nlohmann::json& reply, int64_t expires_ms,
                                         int64_t now) {
  put(family::dedupe, persistence::dedupe_key(agent_id, id),
      persistence::encode(persistence::dedupe_entry{arrival, true, reply, expires_ms}, now));
}

void batch_builder::start_effect(uint64_t agent_id, uint64_t effect,
                                 const persistence::effect_marker& m, int64_t now) {
  put(family::effects, persistence::agent_seq_key(agent_id, effect), persistence::encode(m, now));
}

void batch_builder::end_effect(uint64_t agent_id, uint64_t effect) {
  erase(family::effects, persistence::agent_seq_key(agent_id, effect));
}

void batch_builder::put_timer(uint64_t agent_id, uint64_t timer_id, int64_t due_ms,
                              const persistence::timer_entry& t, int64_t now) {
  put(family::timers, persistence::timer_key(due_ms, agent_id, timer_id),
      persistence::encode(t, now));
}

void batch_builder::erase_timer(uint64_t agent_id, uint64_t timer_id, int64_t due_ms) {
  erase(family::timers, persistence::timer_key(due_ms, agent_id, timer_id));
}

void batch_builder::put_directory_entry(std::string_view name, const persistence::agent_meta& m,
                                        int64_t now) {
  put(family::agents, std::string(name), persistence::encode(m, now));
}

bool batch_builder::is_directory_entry(const persistence::write_op& op, std::string_view name) {
  return op.cf == family::agents && op.key == name;
}

bool batch_builder::is_ledger_or_inbox(const persistence::write_op& op) {
  return op.cf == family::ledger || op.cf == family::inbox;
}

void batch_builder::put_blobs(const blob_list& blobs) {
  for (const auto& [key, content] : blobs) put(family::blobs, key, content);
}

void batch_builder::put_spilled_blobs(const std::function<bool(std::string_view key)>& stored) {
  if (stored) std::erase_if(spilled_, [&stored](const auto& b) { return stored(b.first); });
  for (auto& [key, content] : spilled_) put(family::blobs, std::move(key), std::move(content));
  spilled_.clear();
}

namespace {

std::string with_id(std::string_view key, std::size_t at, uint64_t id) {
  std::string out(key);
  std::string enc;
  put_u64_be(enc, id);
  out.replace(at, 8, enc);
  return out;
}

}  // namespace

status batch_builder::put_bundle(const actors::agent_bundle& b, uint64_t local_id) {
  ops_.reserve(ops_.size() + b.kvs.size());
  for (const auto& kv : b.kvs) {
    switch (kv.cf) {
      case family::agents: {
        auto meta = persistence::decode_agent_meta(kv.value, b.name);
        if (!meta) return meta.error();
        meta->id = local_id;
        auto r = persistence::decode_record(kv.value, b.name);
        if (!r) return r.error();
        put_directory_entry(b.name, *meta, r->time_ms);
        break;
      }
      case family::timers:
        if (kv.key.size() != 24) return error(code::corruption, "bad timer key in a bundle");
        put(family::timers, with_id(kv.key, 8, local_id), kv.value);
        break;
      case family::blobs:
        ops_.push_back(kv);
        break;
      case family::meta:
        // Only agent-type versions travel in the meta family.
        if (!actors::is_type_version_key(kv.key))
          return error(code::corruption, "unexpected meta key in a bundle: " + kv.key);
        ops_.push_back(kv);
        break;
      default:
        if (kv.key.size() < 8) return error(code::corruption, "bad key in a bundle");
        put(kv.cf, with_id(kv.key, 0, local_id), kv.value);
    }
  }
  return status::ok();
}

void batch_builder::erase_bundle(const actors::agent_bundle& b) {
  for (const auto& kv : b.kvs)
    // Blobs and type versions may be shared with other agents.
    if (kv.cf != family::blobs && kv.cf != family::meta) erase(kv.cf, kv.key);
}

void batch_builder::put_type_version(std::string_view name, std::string_view hash,
                                     const nlohmann::json& spec, std::string_view source,
                                     int64_t now) {
  put(family::meta, actors::type_version_key(name, hash),
      persistence::encode_object(value_type::type_version,
                                 {{"spec", spec}, {"source", source}, {"added_ms", now}}, now));
}

void batch_builder::put_type_latest(std::string_view name, std::string_view hash, int64_t now) {
  put(family::meta, actors::type_latest_key(name),
      persistence::encode_object(value_type::type_latest, {{"hash", hash}}, now));
}

void batch_builder::put_cluster_state(std::string_view key, const nlohmann::json& state,
                                      int64_t now) {
  put(family::meta, std::string(key),
      persistence::encode_object(value_type::cluster_state, state, now));
}

void batch_builder::erase_cluster_state(std::string_view key) {
  erase(family::meta, std::string(key));
}

void batch_builder::put_outbox_entry(std::string key, const nlohmann::json& entry,
                                     int64_t created_ms) {
  put(family::outbox, std::move(key),
      persistence::encode_object(value_type::outbox_entry, entry, created_ms));
}

void batch_builder::erase_outbox_entry(std::string key) {
  erase(family::outbox, std::move(key));
}

void batch_builder::reserve_lost_name(std::string_view name, const nlohmann::json& note) {
  // Plain JSON, not a record: the format has always stored it so.
  put(family::meta, lost_name_key(name), note.dump());
}

std::string lost_name_key(std::string_view name) {
  return "lost_agent/" + std::string(name);
}

}  // namespace keel::ledger
