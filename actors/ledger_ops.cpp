// Whole-ledger operations: audit, replay, fork sources, import,
// compaction and retention. They read the store on the caller's thread (an HTTP
// server thread, never a CAF one) and change an agent only through its
// shell, which owns the agent's directory entry.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <future>

#include "actors/ledger_ops.hpp"
#include "actors/runtime.hpp"
#include "agent/loop.hpp"
#include "agent/registry.hpp"
#include "agent/replay.hpp"
#include "base/clock.hpp"
#include "base/durable_file.hpp"
#include "base/names.hpp"
#include "ledger/audit.hpp"
#include "ledger/type_catalog.hpp"
#include "persistence/keys.hpp"

namespace keel::actors {

namespace {

// What replay, fork and compaction start from: the agent's type and the
// state before its first stored event (the compaction snapshot, if any).
struct history {
  persistence::agent_meta meta;
  const agent::agent_type* type = nullptr;  // the latest version (for what no version changes)
  // Every version the ledger may name, each step replayed with its own.
  std::shared_ptr<const agent::type_versions> versions;
  agent::agent_state base;
};

// The agent's directory entry. Errors: invalid_argument (name), not_found.
result<persistence::agent_meta> directory_entry(runtime& rt, std::string_view name) {
  KEEL_TRY(validate_agent_name(name));
  auto meta = rt.db->get_agent(name);
  if (!meta) return meta.error();
  if (!*meta) return error(code::not_found, "agent " + std::string(name) + " does not exist");
  return std::move(**meta);
}

result<history> load_history(runtime& rt, std::string_view name) {
  auto meta = directory_entry(rt, name);
  if (!meta) return meta.error();
  history h;
  h.meta = std::move(*meta);
  h.type = rt.catalog->for_folding(h.meta.type);
  h.versions = std::make_shared<catalog_versions>(*rt.catalog, h.meta.type);
  if (!h.type) return type_not_loaded(name, h.meta.type);
  if (h.meta.compacted_seq > 0) {
    auto snap = rt.db->read_snapshot(h.meta.id, h.meta.compacted_seq, name);
    if (!snap) return snap.error();
    if (!*snap)
      return error(code::corruption, "the compaction snapshot of " + std::string(name) +
                                         " at seq " + std::to_string(h.meta.compacted_seq) +
                                         " is missing");
    auto st = snapshot_from_record(**snap, "snapshot of " + std::string(name), store_blobs(*rt.db));
    if (!st) return st.error();
    h.base = std::move(*st);
  }
  return h;
}

std::vector<agent::recorded_event> recorded(std::vector<stored_event>&& events) {
  std::vector<agent::recorded_event> out;
  out.reserve(events.size());
  for (auto& e : events) out.push_back({e.seq, std::move(e.ev)});
  return out;
}

result<agent::what_if_options> what_if_from(const json& options) {
  agent::what_if_options o;
  for (const auto& [key, value] : options["overrides"].items()) {
    uint64_t seq = 0;
    auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), seq);
    if (ec != std::errc() || end != key.data() + key.size() || seq == 0)
      return error(code::invalid_argument, "override keys are seqs (1, 2, ...), got '" + key + "'");
    o.overrides[seq] = value;
  }
  if (options.contains("policy")) {
    auto p = options["policy"].is_string()
                 ? agent::mock_policy_from_string(options["policy"].get<std::string>())
                 : std::nullopt;
    if (!p)
      return error(code::invalid_argument, "policy must be \"recorded\", \"scripted\" or \"stop\"");
    o.policy = *p;
  }
  if (options.contains("script")) {
    if (!options["script"].is_object())
      return error(code::invalid_argument, "script must be an object {\"model\", \"tools\"}");
    o.script = options["script"];
  }
  return o;
}

// A replay's "spec" option: an agent-type spec for the agent's type, as
// PUT /v1/types takes it (a scripted model's script inline).
result<std::shared_ptr<const config::agent_spec>> candidate_spec(const json& j,
                                                                 const std::string& type) {
  auto spec = config::parse_agent_spec_body(j, "the replay's spec");
  if (!spec) return spec.error();
  if ((*spec)->name != type)
    return error(code::invalid_argument, "the replay's spec is for agent type '" + (*spec)->name +
                                             "', but the agent's type is '" + type + "'");
  return spec;
}

// A file name for an agent name: bytes outside [A-Za-z0-9._-] as %XX.
std::string file_safe(std::string_view name) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : name) {
    if (std::isalnum(c) || c == '.' || c == '_' || c == '-') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 15]);
    }
  }
  return out;
}

// Replays the first `count` of `events` strictly: they must end where a
// step (one decision) ends. Returns the state after them. `seq` and `what`
// name the point in errors ("fork at 9: ...").
result<agent::agent_state> check_step_boundary(const agent::type_versions& t,
                                               const agent::agent_state& base,
                                               const std::vector<stored_event>& events,
                                               std::size_t count, std::string_view name,
                                               uint64_t seq, const char* what) {
  std::vector<agent::recorded_event> prefix;
  prefix.reserve(count);
  for (std::size_t i = 0; i < count; ++i) prefix.push_back({events[i].seq, events[i].ev});
  auto r = agent::replay_strict(t, base, prefix);
  if (r.identical) return std::move(r.state);
  const uint64_t last = prefix.empty() ? base.last_seq : prefix.back().seq;
  if (r.diverged->seq > last)
    return error(code::invalid_argument,
                 std::string(what) + " " + std::to_string(seq) + ": seq " + std::to_string(last) +
                     " of " + std::string(name) +
                     " is inside a step (its decision goes on past it); pick a seq where a step "
                     "begins (see keel ledger)");
  return error(code::conflict, std::string(what) + " " + std::to_string(seq) + ": the ledger of " +
                                   std::string(name) + " does not replay at seq " +
                                   std::to_string(r.diverged->seq) + ": " + r.diverged->reason);
}

std::string hex_of(const chain_hash& h) {
  return to_hex(h);
}

}  // namespace

result<audit_report> ledger_ops::audit(std::string_view name) {
  runtime* rt = live();
  if (!rt) return error(code::unavailable, "node is shutting down");
  auto meta = directory_entry(*rt, name);
  if (!meta) return meta.error();
  auto rep = verify_ledger(*rt->db, *meta, name);
  if (!rep) return rep.error();
  audit_report a;
  a.agent = std::string(name);
  a.chain = std::move(*rep);
  a.unverified = a.chain.intact && meta->unverified;
  a.compacted_seq = meta->compacted_seq;
  if (meta->compacted_seq > 0) a.anchor = meta->compacted_head;
  return a;
}

result<uint64_t> ledger_ops::ledger_end(std::string_view name) {
  runtime* rt = live();
  if (!rt) return error(code::unavailable, "node is shutting down");
  auto meta = directory_entry(*rt, name);
  if (!meta) return meta.error();
  return rt->db->last_ledger_seq(meta->id);
}

result<replay_report> ledger_ops::replay(std::string_view name, const json& options) {
  runtime* rt = live();
  if (!rt) return error(code::unavailable, "node is shutting down");
  if (!options.is_null() && !options.is_object())
    return error(code::invalid_argument, "replay options must be a JSON object");
  const json opts = options.is_object() ? options : json::object();
  if (opts.contains("overrides") && !opts["overrides"].is_object())
    return error(code::invalid_argument, "overrides must be an object {\"SEQ\": replacement}");
  auto h = load_history(*rt, name);
  if (!h) return h.error();
  // Replay reads the events only; audit is what checks their hashes.
  auto stored =
      read_events(*rt->db, h->meta.id, name, h->meta.compacted_seq + 1, UINT64_MAX, false);
  if (!stored) return stored.error();
  const auto events = recorded(std::move(*stored));
  // Another spec standing in for every version the ledger ran: how an edit
  // is tried on recorded runs before it is rolled out.
  std::shared_ptr<const agent::type_versions> versions = h->versions;
  std::string candidate;
  if (opts.contains("spec")) {
    auto spec = candidate_spec(opts["spec"], h->meta.type);
    if (!spec) return spec.error();
    candidate = (*spec)->hash;
    versions = std::make_shared<agent::stand_in_versions>(std::move(*spec));
  }
  const bool what_if = opts.contains("overrides") && !opts["overrides"].empty();
  replay_report rep;
  rep.agent = std::string(name);
  rep.spec = std::move(candidate);
  rep.from_seq = h->meta.compacted_seq + 1;
  if (!what_if) {
    rep.strict = agent::replay_strict(*versions, h->base, events);
    return rep;
  }
  auto o = what_if_from(opts);
  if (!o) return o.error();
  auto r = agent::replay_what_if(*versions, h->base, events, *o);
  if (!r) return r.error();
  rep.what_if = std::move(*r);
  rep.policy = o->policy;
  return rep;
}

result<fork_source> ledger_ops::fork_source_of(std::string_view name, uint64_t at,
                                               bool with_override) {
  runtime* rt = live();
  if (!rt) return error(code::unavailable, "node is shutting down");
  auto h = load_history(*rt, name);
  if (!h) return h.error();
  if (h->meta.origin == persistence::agent_origin::imported)
    return error(code::invalid_argument,
                 "agent " + std::string(name) + " is an imported ledger; replay it instead");
  if (h->meta.compacted_seq > 0)
    return error(code::invalid_argument,
                 "the ledger of " + std::string(name) + " was compacted through seq " +
                     std::to_string(h->meta.compacted_seq) +
                     "; a fork copies the whole history, so fork before compacting");
  auto last = rt->db->last_ledger_seq(h->meta.id);
  if (!last) return last.error();
  if (at == 0 || at > *last)
    return error(code::invalid_argument, "the fork point (at) must be a seq from 1 to " +
                                             std::to_string(*last) + ", got " + std::to_string(at));
  if (with_override && at == 1)
    return error(code::invalid_argument, "seq 1 is the spawn; it cannot be overridden");
  auto events = read_events(*rt->db, h->meta.id, name, 1, at);
  if (!events) return events.error();
  if (events->size() != at)
    return error(code::corruption, "the ledger of " + std::string(name) + " has gaps before seq " +
                                       std::to_string(at));
  const std::size_t keep = with_override ? at - 1 : at;
  // A fork starts between two steps, from a history that replays: else it
  // would hold half a decision and never go on.
  auto st = check_step_boundary(*h->versions, h->base, *events, keep, name, at, "fork at");
  if (!st) return st.error();
  // Without an override a fork goes on as after a crash; what it would wait
  // for without anything running for it (a worker task, which stays the
  // parent's) would never come.
  if (!with_override && !h->type->open_effects(*st).empty() && !h->type->needs_recovery(*st))
    return error(code::invalid_argument,
                 "at seq " + std::to_string(at) + " " + std::string(name) +
                     " waits for a worker task, which a fork does not take over; fork at "
                     "another seq, or with an override that answers it");
  fork_source src;
  src.type = h->meta.type;
  for (std::size_t i = 0; i < events->size(); ++i) {
    const auto& e = (*events)[i];
    chain_hash prev{}, hash{};
    if (e.link) {
      prev = e.link->prev;
      hash = e.link->hash;
    }
    json line = export_line(e.seq, e.ev, prev, hash);
    if (!e.link) line.erase("hash");  // a record from before the chain: rehashed on import
    if (i < keep) {
      src.bytes += line.dump().size() + 1;
      src.events.push_back(std::move(line));
    } else {
      src.replaced = std::move(line);
    }
  }
  return src;
}

void ledger_ops::import(std::string name, const json& body, callback<agent_view> done) {
  runtime* rt = live();
  if (!rt) return done(error(code::unavailable, "node is shutting down"));
  if (auto s = validate_agent_name(name); !s) return done(s);
  if (!body.is_object() || !body.contains("events"))
    return done(error(code::invalid_argument, "an import needs {\"events\": [line...]}"));
  auto li = std::make_shared<ledger_import>();
  if (auto s = parse_export(body["events"], *li); !s) return done(s);
  // The wire names it; "" (spawned) is no import.
  const auto origin = persistence::agent_origin_from_string(body.value("origin", "import"));
  if (!origin || *origin == persistence::agent_origin::spawned)
    return done(error(code::invalid_argument, "origin must be \"import\" or \"fork\""));
  li->origin = *origin;
  li->unverified = body.value("unverified", false);
  if (li->unverified && li->origin != persistence::agent_origin::imported)
    return done(error(code::invalid_argument, "only an import can be unverified"));
  // An import is only as good as the chain that ties it to its source: a
  // line without one could say anything, so it needs the operator's word.
  if (li->origin == persistence::agent_origin::imported && !li->unverified)
    for (std::size_t i = 0; i < li->hashes.size(); ++i)
      if (li->hashes[i].size() != 64 || li->prevs[i].size() != 64)
        return done(error(code::invalid_argument,
                          "ledger line " + std::to_string(i + 1) +
                              " has no \"hash\" and \"prev\": without its chain the export "
                              "cannot be checked against its source. Load it anyway with "
                              "\"unverified\": true (keel import --unverified); audit will say "
                              "it is unverified"));
  li->parent = body.value("parent", "");
  li->fork_seq = body.value("at", uint64_t{0});
  li->by = body.value("by", "");
  if (body.contains("replacement") && !body["replacement"].is_null()) {
    if (li->origin != persistence::agent_origin::forked)
      return done(error(code::invalid_argument, "only a fork continues with a replacement"));
    const json line = body.value("replaced", json());
    auto type = line.is_object() && line.contains("type") && line["type"].is_string()
                    ? agent::event_type_from_name(line["type"].get<std::string>())
                    : std::nullopt;
    if (!type) return done(error(code::invalid_argument, "a replacement needs the replaced event"));
    li->replaced = agent::event{*type, line.value("time", int64_t{0}), line.value("data", json())};
    li->replacement = body["replacement"];
  }
  rt->route(make_request(std::move(name), import_call{std::move(li), std::move(done)}));
}

result<retention_report> ledger_ops::apply_retention(std::string_view name) {
  runtime* rt = live();
  if (!rt) return error(code::unavailable, "node is shutting down");
  auto skip = [](const char* why) { return retention_report{std::nullopt, why}; };
  auto h = load_history(*rt, name);
  if (!h) return h.error();
  const auto* loop = dynamic_cast<const agent::loop_type*>(h->type);
  if (!loop) return skip("the type has no retention policy");
  const auto& policy = loop->spec().retention;
  if (policy.keep_events == 0 && policy.keep_ms == 0) return skip("the type keeps everything");
  if (h->meta.origin == persistence::agent_origin::imported)
    return skip("an imported ledger is read-only");
  auto last = rt->db->last_ledger_seq(h->meta.id);
  if (!last) return last.error();
  const uint64_t from = h->meta.compacted_seq + 1;
  constexpr uint64_t min_batch = 32;  // archives smaller than this wait for more
  // The first seq to keep live: the last event always stays.
  uint64_t keep = *last;
  if (policy.keep_events)
    keep = std::min(keep, *last >= policy.keep_events ? *last - policy.keep_events + 1 : 1);
  if (keep < from + min_batch) return skip("not enough events outside the live window");
  auto stored = read_events(*rt->db, h->meta.id, name, from, *last, false);
  if (!stored) return stored.error();
  const auto events = recorded(std::move(*stored));
  if (policy.keep_ms) {
    const int64_t horizon =
        wall_ms() - static_cast<int64_t>(std::min<uint64_t>(policy.keep_ms, INT64_MAX / 2));
    for (const auto& e : events)
      if (e.ev.time_ms >= horizon) {
        keep = std::min(keep, e.seq);
        break;
      }
  }
  if (keep < from + min_batch) return skip("not enough events outside the live window");
  // A compaction cuts between two steps: the newest step start at or
  // before `keep`.
  uint64_t before = 0;
  for (uint64_t s : agent::step_starts(*h->versions, h->base, events))
    if (s <= keep) before = s;
  if (before < from + min_batch) return skip("no step begins far enough back");
  auto r = compact(name, before);
  if (!r) return r.error();
  return retention_report{std::move(*r), {}};
}

result<compaction_report> ledger_ops::compact(std::string_view name, uint64_t before) {
  runtime* rt = live();
  if (!rt) return error(code::unavailable, "node is shutting down");
  auto h = load_history(*rt, name);
  if (!h) return h.error();
  if (h->meta.origin == persistence::agent_origin::imported)
    return error(code::conflict,
                 "agent " + std::string(name) + " is an imported ledger: it is read-only");
  auto last = rt->db->last_ledger_seq(h->meta.id);
  if (!last) return last.error();
  const uint64_t from = h->meta.compacted_seq + 1;
  if (before <= from)
    return error(
        code::invalid_argument,
        "nothing to compact before seq " + std::to_string(before) +
            (from > 1 ? ": seqs up to " + std::to_string(from - 1) + " are compacted" : ""));
  if (before > *last)
    return error(code::invalid_argument, "before must be at most " + std::to_string(*last) +
                                             " (the last event always stays)");
  const uint64_t through = before - 1;
  auto events = read_events(*rt->db, h->meta.id, name, from, through);
  if (!events) return events.error();
  if (events->size() != through - from + 1)
    return error(code::corruption, "the ledger of " + std::string(name) + " has gaps before seq " +
                                       std::to_string(before));
  // Only a history that audits may leave the store: an altered record
  // archived and deleted would vanish from every later audit.
  chain_hash expect{};
  if (from > 1) {
    auto a = from_hex(h->meta.compacted_head);
    if (!a || a->size() != expect.size())
      return error(code::corruption,
                   "the compaction anchor of " + std::string(name) + " is not a hash");
    std::copy(a->begin(), a->end(), expect.begin());
  }
  for (const auto& e : *events) {
    if (e.link && (!e.link->matches || e.link->prev != expect))
      return error(code::corruption, "seq " + std::to_string(e.seq) + " of " + std::string(name) +
                                         " fails its audit (keel audit verify); not compacted");
    if (e.link) expect = e.link->hash;
  }
  // The snapshot must be a state between two steps that replay gives too:
  // replay and audit start from it.
  auto st = check_step_boundary(*h->versions, h->base, *events, events->size(), name, before,
                                "compact before");
  if (!st) return st.error();
  // The archive: a header line, then the events as exported, so it can be
  // checked and imported on its own.
  chain_hash anchor{};
  std::string text = json{{"archive", 1}, {"agent", name},      {"type", h->meta.type},
                          {"from", from}, {"through", through}, {"prev", h->meta.compacted_head}}
                         .dump() +
                     "\n";
  for (const auto& e : *events) {
    if (!e.link)
      return error(code::invalid_argument, "seq " + std::to_string(e.seq) + " of " +
                                               std::string(name) +
                                               " predates the hash chain; it cannot be archived");
    text += export_line(e.seq, e.ev, e.link->prev, e.link->hash).dump() + "\n";
    anchor = e.link->hash;
  }
  const std::filesystem::path dir = std::filesystem::path(rt->cfg.data_dir) / "archive";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return error(code::io_error, "cannot create " + dir.string() + ": " + ec.message());
  const std::filesystem::path file = dir / (file_safe(name) + "." + std::to_string(from) + "-" +
                                            std::to_string(through) + ".jsonl");
  KEEL_TRY(write_durably(file.string(), text));

  auto plan = std::make_shared<compaction_plan>();
  plan->from = from;
  plan->through = through;
  plan->anchor = hex_of(anchor);
  plan->snapshot = persistence::encode_record(snapshot_record(*st, wall_ms(), &plan->blobs));
  std::erase_if(plan->blobs, [rt](const auto& b) { return rt->db->has_blob(b.first); });
  auto promise = std::make_shared<std::promise<result<json>>>();
  auto answer = promise->get_future();
  rt->route(
      make_request(std::string(name), compact_call{std::move(plan), [promise](result<json> a) {
                                                     promise->set_value(std::move(a));
                                                   }}));
  auto done = answer.get();
  if (!done) return done.error();
  return compaction_report{std::string(name), file.string(), through - from + 1, through,
                           hex_of(anchor)};
}

runtime* ledger_ops::live() {
  return stopped_.load(std::memory_order_acquire) ? nullptr : &rt_;
}

}  // namespace keel::actors
