#include "actors/salvage.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <vector>

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/durable_file.hpp"
#include "ledger/codec.hpp"
#include "persistence/keys.hpp"
#include "persistence/store.hpp"
#include "persistence/wal_reader.hpp"

namespace keel::actors {

namespace {

namespace fs = std::filesystem;
using persistence::family;
using json = nlohmann::json;

// Message ids a report and an agent's `salvaged` event list at most.
constexpr std::size_t max_listed_ids = 1000;

std::string utc_stamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

status fsync_path(const fs::path& p, bool dir) {
  int fd = ::open(p.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return error(code::io_error, "cannot open " + p.string() + " to sync it");
  int r = ::fsync(fd);
  ::close(fd);
  return r == 0 ? status::ok() : error(code::io_error, "cannot sync " + p.string());
}

// What one agent lost.
struct agent_loss {
  std::string name;
  bool lost_entirely = false;  // its creation was in what was dropped
  uint64_t ledger_from = 0, ledger_through = 0, ledger_events = 0;
  uint64_t messages_received = 0;  // message_received events among them
  uint64_t inbox_entries = 0;      // accepted messages not yet consumed
  std::set<std::string> message_ids;
  // Ids read from the damaged record itself: lost, if they are read right.
  std::set<std::string> uncertain_ids;

  json to_json(uint64_t id) const {
    json j = {{"name", name},
              {"id", id},
              {"lost_entirely", lost_entirely},
              {"ledger_events_lost", ledger_events},
              {"messages_lost",
               std::max<uint64_t>(messages_received + inbox_entries, message_ids.size())},
              {"inbox_entries_lost", inbox_entries}};
    j["ledger_lost"] = ledger_events ? json::array({ledger_from, ledger_through}) : json(nullptr);
    json ids = json::array();
    for (const auto& m : message_ids) {
      if (ids.size() == max_listed_ids) break;
      ids.push_back(m);
    }
    j["message_ids_lost"] = std::move(ids);
    if (!uncertain_ids.empty()) j["message_ids_in_damaged_record"] = uncertain_ids;
    return j;
  }
};

// Step 4: what the dropped batches held that the store no longer does.
struct loss_survey {
  std::map<uint64_t, agent_loss> agents;  // by agent id
  std::map<std::string, uint64_t> other;  // family -> keys lost
  uint64_t keys_compared = 0, keys_lost = 0;
};

// The keys a dropped range erase would have removed that the store still
// holds, other than those the dropped batches wrote (compared one by one):
// an erase that did not happen loses no agent data, so each counts under
// its family in `other`, once however many ranges cover it.
status survey_ranges(
    persistence::store& db,
    const std::vector<std::pair<family, const persistence::wal_op*>>& ranges,
    const std::map<std::pair<int, std::string>, const persistence::wal_op*>& written,
    loss_survey& out) {
  std::set<std::pair<int, std::string>> counted;
  for (const auto& [f, op] : ranges) {
    std::string from = op->key;
    for (bool more = true; more;) {
      auto page = db.scan(f, "", from, 1024);
      if (!page) return page.error();
      more = page->size() == 1024;
      for (const auto& kv : *page) {
        if (kv.first >= op->range_end) {
          more = false;
          break;
        }
        const std::pair<int, std::string> fk{static_cast<int>(f), kv.first};
        if (written.count(fk) || !counted.insert(fk).second) continue;
        ++out.keys_compared;
        ++out.keys_lost;
        ++out.other[persistence::family_name(f)];
      }
      if (more) from = page->back().first + '\0';
    }
  }
  return status::ok();
}

result<loss_survey> survey(persistence::store& db, const persistence::wal_scan& scan) {
  std::map<uint32_t, family> families;
  for (int i = 0; i < persistence::family_count; ++i)
    families[db.family_id(static_cast<family>(i))] = static_cast<family>(i);
  // The last write to each key among the dropped batches is what it would
  // hold had nothing been dropped.
  std::map<std::pair<int, std::string>, const persistence::wal_op*> last;
  // Range erases among them (the raft family's log truncations): they also
  // erase keys the dropped batches never named, compared after the others.
  std::vector<std::pair<family, const persistence::wal_op*>> ranges;
  loss_survey out;
  for (const auto& b : scan.after_damage)
    for (const auto& op : b.ops) {
      auto f = families.find(op.family_id);
      if (f == families.end()) continue;  // RocksDB's default family: unused
      if (!b.intact) {
        // The damaged record may be garbled: its message ids are reported
        // apart, as what was probably lost, and nothing else is counted.
        if (op.erase) continue;
        if (f->second == family::dedupe && op.key.size() > 8)
          out.agents[get_u64_be(op.key.data())].uncertain_ids.insert(op.key.substr(8));
        if (f->second == family::inbox && op.key.size() == 16)
          if (auto e = persistence::decode_inbox_entry(op.value, "damaged inbox entry");
              e && e->kind == persistence::inbox_kind::message)
            out.agents[get_u64_be(op.key.data())].uncertain_ids.insert(e->id);
        continue;
      }
      const int fi = static_cast<int>(f->second);
      if (op.erase && !op.range_end.empty()) {
        // Every key the batches before it wrote in the range ends erased.
        for (auto it = last.lower_bound({fi, op.key});
             it != last.end() && it->first.first == fi && it->first.second < op.range_end; ++it)
          it->second = &op;
        ranges.emplace_back(f->second, &op);
        continue;
      }
      last[{fi, op.key}] = &op;
    }
  for (const auto& [fk, op] : last) {
    const auto f = static_cast<family>(fk.first);
    const std::string& key = fk.second;
    auto now = db.get(f, key);
    if (!now) return now.error();
    ++out.keys_compared;
    if (op->erase ? !*now : (*now && **now == op->value)) continue;
    ++out.keys_lost;
    switch (f) {
      case family::agents: {
        auto meta = persistence::decode_agent_meta(op->value, "dropped agents entry of " + key);
        if (op->erase || !meta) break;
        auto& loss = out.agents[meta->id];
        loss.name = key;
        auto exists = db.get_agent(key);
        if (!exists) return exists.error();
        loss.lost_entirely = !*exists;
        break;
      }
      case family::ledger: {
        if (key.size() != 16) break;
        auto& loss = out.agents[persistence::key_agent_id(key)];
        const uint64_t seq = persistence::key_seq(key);
        loss.ledger_from = loss.ledger_events ? std::min(loss.ledger_from, seq) : seq;
        loss.ledger_through = std::max(loss.ledger_through, seq);
        ++loss.ledger_events;
        auto rec = persistence::decode_record(op->value, "dropped ledger record");
        if (rec && (rec->type & ~(blob_ref_flag | chain_flag)) ==
                       static_cast<uint16_t>(agent::event_type::message_received))
          ++loss.messages_received;
        break;
      }
      case family::inbox: {
        if (key.size() != 16 || op->erase) break;
        auto& loss = out.agents[persistence::key_agent_id(key)];
        ++loss.inbox_entries;
        auto e = persistence::decode_inbox_entry(op->value, "dropped inbox entry");
        if (e && e->kind == persistence::inbox_kind::message && !e->id.starts_with("auto-"))
          loss.message_ids.insert(e->id);
        break;
      }
      case family::dedupe:
        // Written when a message with an id is accepted: that id was
        // acknowledged, and its sender may send it again now.
        if (key.size() > 8 && !op->erase)
          out.agents[get_u64_be(key.data())].message_ids.insert(key.substr(8));
        break;
      default:
        // Node-wide families, and the raft family: a replicated group's log
        // and state are keys of the node, never an agent's loss.
        ++out.other[persistence::family_name(f)];
    }
  }
  KEEL_TRY(survey_ranges(db, ranges, last, out));
  // Names of agents that kept their entry: one pass over the directory.
  std::size_t unnamed = 0;
  for (const auto& [id, loss] : out.agents) unnamed += loss.name.empty();
  std::string after;
  while (unnamed > 0) {
    auto page = db.list_agents("", after, 1000);
    if (!page) return page.error();
    if (page->empty()) break;
    for (const auto& a : *page) {
      auto it = out.agents.find(a.meta.id);
      if (it != out.agents.end() && it->second.name.empty()) {
        it->second.name = a.name;
        --unnamed;
      }
    }
    after = page->back().name;
  }
  return out;
}

// Step 6: each surviving agent that lost something records it.
json note_in_ledgers(node& n, const loss_survey& lost, const std::string& stamp,
                     const std::string& report, const json& damage) {
  json noted = json::array(), not_noted = json::array();
  for (const auto& [id, loss] : lost.agents) {
    if (loss.lost_entirely || loss.name.empty()) continue;
    json payload = loss.to_json(id);
    payload.erase("name");
    payload.erase("id");
    payload.erase("lost_entirely");
    payload["report"] = report;
    payload["damage"] = damage;
    payload["by"] = "keeld --salvage";
    auto done = std::make_shared<std::promise<status>>();
    auto fut = done->get_future();
    auto once = std::make_shared<std::once_flag>();
    auto finish = [done, once](status s) { std::call_once(*once, [&] { done->set_value(s); }); };
    n.signal(
        loss.name, "salvaged", std::move(payload),
        [finish](result<send_ack> a) {
          if (!a) finish(a.error());
        },
        [finish](result<agent_reply> r) {
          if (!r)
            finish(r.error());
          else if (!r->ok)
            finish(error(code::conflict, r->message));
          else
            finish(status::ok());
        },
        std::string(cluster_id_prefix) + "salvage-" + stamp);
    if (fut.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      not_noted.push_back({{"name", loss.name}, {"why", "no answer within 30 s"}});
      continue;
    }
    status s = fut.get();
    if (s)
      noted.push_back(loss.name);
    else
      not_noted.push_back({{"name", loss.name}, {"why", s.to_string()}});
  }
  return {{"noted", std::move(noted)}, {"not_noted", std::move(not_noted)}};
}

json losses_json(const loss_survey& lost) {
  json agents = json::array();
  for (const auto& [id, loss] : lost.agents) agents.push_back(loss.to_json(id));
  return {{"agents", std::move(agents)},
          {"other_keys_lost", lost.other},
          {"keys_compared", lost.keys_compared},
          {"keys_lost", lost.keys_lost}};
}

}  // namespace

result<json> survey_losses(persistence::store& db, const persistence::wal_scan& scan) {
  auto lost = survey(db, scan);
  if (!lost) return lost.error();
  return losses_json(*lost);
}

result<json> salvage(const config::node_config& cfg, start_options opts) {
  auto scan = persistence::scan_wal(cfg.data_dir);
  if (!scan) return scan.error();
  if (!scan->damage)
    return error(code::not_found,
                 "no write-ahead log in " + cfg.data_dir +
                     " is damaged: nothing to salvage (if keeld refuses to start, its message "
                     "says why; docs/operations.md, \"Faults\")");
  const auto& d = *scan->damage;
  const std::string stamp = utc_stamp();
  const fs::path evidence = fs::path(cfg.data_dir) / "salvage" / stamp;
  std::error_code ec;
  fs::create_directories(evidence, ec);
  if (ec) return error(code::io_error, "cannot create " + evidence.string() + ": " + ec.message());
  for (const auto& f : scan->files) {
    fs::copy_file(f, evidence / fs::path(f).filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) return error(code::io_error, "cannot copy " + f + ": " + ec.message());
    KEEL_TRY(fsync_path(evidence / fs::path(f).filename(), false));
  }
  KEEL_TRY(fsync_path(evidence, true));
  const std::string report_path = (evidence / "report.json").string();
  const json damage = {{"file", d.file}, {"offset", d.offset}, {"reason", d.reason}};

  json report = {{"salvaged_at", utc_stamp()},
                 {"data_dir", cfg.data_dir},
                 {"damage", damage},
                 {"evidence", evidence.string()},
                 {"batches_dropped", scan->after_damage.size()},
                 // Writes in these bytes are lost without a trace: not listed below.
                 {"bytes_unreadable", scan->unreadable_bytes}};
  {
    persistence::store_options so{cfg.data_dir, cfg.block_cache_bytes, false};
    so.point_in_time_recovery = true;
    so.max_open_files = cfg.store_open_files;
    auto db = persistence::store::open(so);
    if (!db) return db.error();
    auto lost = survey(**db, *scan);
    if (!lost) return lost.error();
    persistence::write_set reserve;
    for (const auto& [id, loss] : lost->agents)
      if (loss.lost_entirely)
        ledger::batch_builder(reserve).reserve_lost_name(
            loss.name, {{"salvage", stamp}, {"report", report_path}});
    report.update(losses_json(*lost));
    if (!reserve.empty()) KEEL_TRY((*db)->write(reserve, true));
    KEEL_TRY(write_durably(report_path, report.dump(2) + "\n"));
    // The node below needs the store to itself.
    db->reset();

    auto started = node::start(cfg, std::move(opts));
    if (!started) {
      report["ledgers"] = {{"error", started.error().to_string()}};
    } else {
      report["ledgers"] = note_in_ledgers(**started, *lost, stamp, report_path, damage);
      (*started)->stop();
    }
  }
  KEEL_TRY(write_durably(report_path, report.dump(2) + "\n"));
  report["report"] = report_path;
  return report;
}

}  // namespace keel::actors
