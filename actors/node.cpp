#include "actors/node.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "actors/caf_types.hpp"
#include "actors/timer_service.hpp"
#include "agent/core.hpp"
#include "agent/registry.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/names.hpp"
#include "effects/exec_tool.hpp"
#include "effects/scripted_model.hpp"
#include "effects/secret_table.hpp"
#include "ledger/codec.hpp"
#include "ledger/retention.hpp"
#include "ledger/type_catalog.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors {

void fail(request& r, const status& s) {
  call_once(r.viewed, s);
  call_once(r.accepted, s);
  call_once(r.replied, s);
  call_once(r.answered, s);
}

// Messages and spawns an agent here addressed to an agent elsewhere go to
// the cluster; anything else for a name not served here is refused (the
// HTTP API forwards calls to the owner before they reach the node).
bool hand_elsewhere(runtime& rt, request_ptr& r) {
  auto rr = rt.router.load(std::memory_order_acquire);
  if (!rr || rr->is_local(r->name)) return false;
  switch (r->what) {
    case request::kind::message:
      rr->send(std::move(r->name),
               inbound_message{std::move(r->id), std::move(r->from), std::move(r->body)},
               std::move(r->accepted));
      break;
    case request::kind::spawn:
      rr->spawn(std::move(r->name), std::move(r->type), std::move(r->body), std::move(r->viewed));
      break;
    default:
      fail(*r, error(code::unavailable, rr->elsewhere(r->name)));
  }
  return true;
}

namespace {

// The byte a key must not hold: ASCII control characters (NUL among them)
// would cut or garble it in logs, files and terminals.
std::optional<std::size_t> control_char_at(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return i;
  }
  return std::nullopt;
}

}  // namespace

status validate_message_id(std::string_view id) {
  if (id.size() > 256) return error(code::invalid_argument, "message id is longer than 256 bytes");
  if (auto at = control_char_at(id))
    return error(code::invalid_argument, "message id has a control character at byte " +
                                             std::to_string(*at) + "; ids are printable text");
  if (is_generated_id(id))
    return error(code::invalid_argument, "message ids starting with \"" +
                                             std::string(generated_id_prefix) +
                                             "\" are reserved for ids the node generates");
  return status::ok();
}

status validate_dedupe_key(std::string_view key) {
  if (key.size() > 256) return error(code::invalid_argument, "dedupe key is longer than 256 bytes");
  if (auto at = control_char_at(key))
    return error(code::invalid_argument,
                 "dedupe key has a control character at byte " + std::to_string(*at));
  return status::ok();
}

status validate_client_message_id(std::string_view id) {
  KEEL_TRY(validate_message_id(id));
  if (id.starts_with(cluster_id_prefix))
    return error(code::invalid_argument, "message ids starting with \"" +
                                             std::string(cluster_id_prefix) +
                                             "\" are reserved for ids the cluster generates");
  return status::ok();
}

request::~request() {
  fail(*this,
       error(code::unavailable, "request dropped: the agent stopped or the node is shutting down"));
}

struct node::impl {
  runtime rt;
  std::unique_ptr<persistence::store> db;
  std::unique_ptr<persistence::journal_writer> journal;
  std::unique_ptr<timer_service> timers;
  std::unique_ptr<agent::type_registry> types;
  std::unique_ptr<type_catalog> catalog;
  // Started last and stopped first: it calls into the node.
  std::unique_ptr<retention_worker> retention;
  // Before the pool: destroyed after it, so no call outlives it.
  std::unique_ptr<secret_table> secrets;
  std::unique_ptr<effect_pool> pool;
  std::unique_ptr<caf::actor_system_config> caf_cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor supervisor;
  std::mutex stop_mu;
  std::atomic<bool> stopped{false};
  // start_options::hold_recovery: no recovery and no timers until begin().
  std::atomic<bool> held{false};

  status recover();
  // Wakes the agents with accepted, unconsumed messages or effects in
  // flight (not worker tasks: those wait in the queues).
  status wake_pending(bool requeue_tasks);
  // Counts a crash since the last clean stop against every effect that was
  // running through it, then marks this run as running.
  void count_crash();

  void submit(request_ptr r) {
    if (stopped.load(std::memory_order_acquire)) {
      fail(*r, error(code::unavailable, "node is shutting down"));
      return;
    }
    if (hand_elsewhere(rt, r)) return;
    r->received_ns = mono_ns();
    caf::anon_send(supervisor, std::move(r));
  }

  // Requests naming an agent validate the name before anything else.
  bool reject_bad_name(request& r) {
    status s = validate_agent_name(r.name);
    if (s) return false;
    fail(r, s);
    return true;
  }
};

status node::impl::recover() {
  return wake_pending(true);
}

status node::impl::wake_pending(bool requeue_tasks) {
  // Recovery: activate only agents with accepted, unconsumed messages; the
  // rest stay on disk. Due timers are found by the timer service's first scan.
  auto pending = db->agents_with_inbox();
  if (!pending) return pending.error();
  // Effects in flight when the node stopped: worker tasks are queued again;
  // the agents of the others are activated and recover them.
  auto running = db->running_effects();
  if (!running) return running.error();
  for (auto& e : *running) {
    const auto& m = e.marker;
    if (m.kind == "worker") {
      if (!requeue_tasks) continue;
      if (auto rr = rt.router.load(); rr && !rr->is_local(m.agent)) continue;
      rt.tasks.add({task_id(e.agent_id, e.effect, m.attempt),
                    m.queue,
                    m.agent,
                    e.effect,
                    m.attempt,
                    m.tool,
                    m.arguments,
                    m.lease_ms,
                    {},
                    0,
                    0,
                    m.idempotent},
                   wall_ms() + m.lease_ms);
      continue;
    }
    pending->push_back(m.agent);
  }
  std::sort(pending->begin(), pending->end());
  pending->erase(std::unique(pending->begin(), pending->end()), pending->end());
  for (auto& name : *pending) {
    if (auto rr = rt.router.load(); rr && !rr->is_local(name)) continue;
    auto r = std::make_shared<request>();
    r->what = request::kind::wake;
    r->name = std::move(name);
    submit(std::move(r));
  }
  return status::ok();
}

namespace {
// In meta while a node runs; removed by a clean stop.
constexpr std::string_view running_key = "node_running";

// What every exec tool call's sandbox hides and who it runs as: a tool
// never sees the node's own files.
sandbox_options tool_sandbox(const config::node_config& cfg,
                             const std::vector<std::string>& hidden) {
  sandbox_options o;
  std::error_code ec;
  o.hidden.push_back(std::filesystem::weakly_canonical(cfg.data_dir, ec).string());
  for (const auto& path : hidden)
    if (!path.empty()) o.hidden.push_back(std::filesystem::weakly_canonical(path, ec).string());
  o.tool_uid = cfg.tool_uid;
  o.tool_gid = cfg.tool_gid;
  return o;
}
}  // namespace

void node::impl::count_crash() {
  auto prev = db->get(persistence::family::meta, running_key);
  if (!prev) return;  // unreadable: counted at the next start instead
  persistence::write_set ops;
  if (*prev) {
    auto running = db->running_effects();
    if (running) {
      for (auto& e : *running) {
        if (e.marker.kind == "worker") continue;  // runs outside the node
        e.marker.node_crashes += 1;
        ledger::batch_builder(ops).start_effect(e.agent_id, e.effect, e.marker, wall_ms());
      }
      if (!ops.empty())
        log::warn("the node did not stop cleanly; " + std::to_string(ops.size()) +
                  " model or tool calls were running and recover now");
    }
  }
  ops.push_back({persistence::family::meta, false, std::string(running_key), "1"});
  if (status s = db->write(ops, true); !s)
    log::warn("cannot record the start (" + s.message() + "); crashes are not counted this time");
}

node::node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

status node::begin() {
  if (!impl_->held.exchange(false)) return status::ok();
  KEEL_TRY(impl_->recover());
  impl_->timers->notify(0);
  return status::ok();
}

node::~node() {
  stop();
}

result<std::unique_ptr<node>> node::start(const config::node_config& cfg, start_options opts) {
  KEEL_TRY(config::validate(cfg));
  auto types = std::make_unique<agent::type_registry>();
  uint32_t sweep_idle_ms = cfg.idle_ms;
  std::map<std::string, std::string> file_of;
  for (const auto& spec : opts.agent_types) {
    if (spec->idle_ms) sweep_idle_ms = std::min(sweep_idle_ms, *spec->idle_ms);
    if (agent::find_builtin_type(spec->name))
      return error(code::already_exists,
                   "agent type '" + spec->name + "' is a built-in type (" + spec->source + ")");
    if (auto [it, fresh] = file_of.emplace(spec->name, spec->source); !fresh)
      return error(code::already_exists, "agent type '" + spec->name + "' is defined twice (" +
                                             it->second + ", " + spec->source + ")");
  }
  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  if (ec)
    return error(code::io_error,
                 "cannot create data directory " + cfg.data_dir + ": " + ec.message());

  auto p = std::make_unique<impl>();
  p->rt.cfg = cfg;
  p->rt.sweep_idle_ms = std::max<uint32_t>(1, sweep_idle_ms);
  p->types = std::move(types);
  p->rt.types = p->types.get();
  p->rt.plugins = std::move(opts.plugins);
  if (!p->rt.plugins.providers.count("scripted"))
    p->rt.plugins.providers["scripted"] = std::make_shared<scripted_model>();
  if (!p->rt.plugins.runners.count(config::tool_kind::exec))
    p->rt.plugins.runners[config::tool_kind::exec] =
        std::make_shared<exec_tool>(tool_sandbox(cfg, opts.hidden_paths));
  p->pool =
      std::make_unique<effect_pool>(opts.effect_threads ? opts.effect_threads : cfg.effect_threads);
  p->rt.pool = p->pool.get();
  p->rt.route = [raw = p.get()](request_ptr r) { raw->submit(std::move(r)); };
  persistence::store_options so{cfg.data_dir, cfg.block_cache_bytes, true};
  so.reserved_disk_bytes = cfg.reserved_disk_bytes;
  so.dedupe_default_window_ms = static_cast<int64_t>(
      std::min<uint64_t>(cfg.dedupe_window_ms, std::numeric_limits<int64_t>::max() / 2));
  so.max_open_files = cfg.store_open_files;
  auto db = persistence::store::open(so);
  if (!db) return db.error();
  p->db = std::move(*db);
  {
    std::vector<std::string> notes;
    auto secrets = secret_table::open(cfg, *p->db, notes);
    for (const auto& n : notes) log::warn(n);
    if (!secrets) return secrets.error();
    p->secrets = std::move(*secrets);
    p->rt.secrets = p->secrets.get();
  }
  // Every version the store holds, then the files: before any agent runs.
  p->catalog = std::make_unique<type_catalog>(*p->db, *p->types);
  p->rt.catalog = p->catalog.get();
  {
    std::vector<std::string> notes;
    KEEL_TRY(p->catalog->open(opts.agent_types, notes));
    for (const auto& n : notes) log::warn(n);
    // Versions from the store sweep as often as their idle_ms needs too.
    for (const auto& name : p->types->names())
      for (const auto& v : p->types->versions(name))
        if (v.spec->idle_ms) p->rt.lower_sweep_idle(std::max<uint32_t>(1, *v.spec->idle_ms));
  }
  // The agent gauges: one read of the directory, kept exact from here on.
  KEEL_TRY(p->rt.census.count(*p->db));
  p->count_crash();
  p->rt.db = p->db.get();
  p->journal = std::make_unique<persistence::journal_writer>(*p->db, cfg.sync);
  p->rt.journal = p->journal.get();

  p->caf_cfg = std::make_unique<caf::actor_system_config>();
  unsigned threads = cfg.scheduler_threads ? cfg.scheduler_threads
                                           : std::max(1u, std::thread::hardware_concurrency());
  p->caf_cfg->set("scheduler.max-threads", static_cast<size_t>(threads));
  // An idle CAF worker polls (aggressive), then polls with 50 us sleeps for
  // ~25 ms (moderate), then waits on a condition variable that an enqueue
  // signals (relaxed). A request arriving from an HTTP or journal thread in
  // the moderate phase waited up to one 50 us sleep (live query p50 ~50 us
  // here); skipping that phase makes the wake-up a signal instead.
  p->caf_cfg->set("work-stealing.aggressive-poll-attempts",
                  static_cast<size_t>(cfg.scheduler_poll_attempts));
  p->caf_cfg->set("work-stealing.moderate-poll-attempts", size_t{0});
  p->sys = std::make_unique<caf::actor_system>(*p->caf_cfg);
  p->supervisor = spawn_supervisor(*p->sys, &p->rt);

  impl* raw = p.get();
  p->timers =
      std::make_unique<timer_service>(*p->db, [raw](const std::string& agent, uint64_t timer_id) {
        if (raw->held.load(std::memory_order_acquire)) return;  // offered again later
        auto r = std::make_shared<request>();
        r->what = request::kind::timer;
        r->name = agent;
        r->timer_id = timer_id;
        raw->submit(std::move(r));
      });
  p->rt.timers = p->timers.get();

  if (opts.hold_recovery)
    p->held.store(true);
  else
    KEEL_TRY(p->recover());
  // Writes that failed while the store was stopped left their agents on
  // disk with what they had accepted: once writes resume, they go on.
  p->db->on_writable([raw] {
    if (raw->stopped.load() || raw->held.load()) return;
    if (status s = raw->wake_pending(false); !s)
      log::error("waking agents after the store recovered: " + s.message());
    raw->timers->notify(0);
  });
  auto n = std::unique_ptr<node>(new node(std::move(p)));
  node* self = n.get();
  retention_worker::options ro;
  ro.interval_ms = cfg.retention_interval_ms;
  raw->retention = std::make_unique<retention_worker>(
      *raw->db, *raw->types, ro,
      [self](const std::string& name) {
        auto r = self->apply_retention(name);
        if (!r) {
          log::warn("retention of " + name + ": " + r.error().message(), {{"agent", name}});
          return false;
        }
        return r->value("compacted", false);
      },
      [raw](const std::string& name) {
        auto rr = raw->rt.router.load(std::memory_order_acquire);
        return !rr || rr->is_local(name);
      });
  return n;
}

void node::stop() {
  std::lock_guard lk(impl_->stop_mu);
  if (impl_->stopped.exchange(true)) return;
  impl_->retention.reset();
  impl_->rt.router.store(nullptr, std::memory_order_release);
  impl_->timers->stop();
  caf::anon_send(impl_->supervisor, shutdown_atom::value);
  impl_->supervisor = nullptr;
  impl_->sys->await_all_actors_done();
  // Calls in progress finish (bounded by their timeouts); their results are
  // dropped and the agents recover them at the next start.
  impl_->pool->stop();
  // Writes still queued are applied and their callbacks run; the actors they
  // would notify are gone, but the data is durable.
  impl_->journal->stop();
  // A clean stop: the next start counts no crash against running effects.
  impl_->db->write({{persistence::family::meta, true, std::string(running_key), {}}}, true)
      .ignore();
  impl_->sys.reset();
  impl_->caf_cfg.reset();
  impl_->timers.reset();
  impl_->journal.reset();
  impl_->db.reset();
}

void node::set_router(std::shared_ptr<remote_router> r) {
  impl_->rt.router.store(std::move(r), std::memory_order_release);
}

persistence::store& node::storage() {
  return *impl_->db;
}

void node::commit(persistence::write_set ops, std::function<void(const status&)> done) {
  impl_->journal->submit(std::move(ops), std::move(done));
}

status node::write_agents(const persistence::write_set& ops) {
  if (impl_->stopped) return error(code::unavailable, "node is shutting down");
  return write_counted(*impl_->db, impl_->rt.census, ops);
}

void node::evict(std::function<bool(std::string_view)> pick, std::function<void()> done) {
  auto e = std::make_shared<evict_order>();
  e->pick = std::move(pick);
  persistence::journal_writer* journal = impl_->journal.get();
  // Writes are applied in submission order: once an empty write submitted
  // after the shells stopped is durable, so is everything they submitted.
  task_queue* tasks = &impl_->rt.tasks;
  // Once every stopped shell is down: their worker tasks leave with them,
  // and, writes being applied in submission order, an empty write
  // submitted now is durable only after everything they submitted.
  e->done = [journal, tasks, pick = e->pick, done = std::move(done)](std::size_t) {
    tasks->remove_where([&](const worker_task& t) { return pick(t.agent); });
    journal->submit({}, [done](const status&) { done(); });
  };
  if (impl_->stopped.load(std::memory_order_acquire)) return;
  caf::anon_send(impl_->supervisor, evict_atom::value, std::move(e));
}

status node::adopt(const std::vector<std::string>& names) {
  auto& db = *impl_->db;
  for (const auto& name : names) {
    auto meta = db.get_agent(name);
    if (!meta) return meta.error();
    if (!*meta) continue;
    auto effects = db.scan(persistence::family::effects, persistence::agent_prefix((*meta)->id), {},
                           std::numeric_limits<std::size_t>::max());
    if (!effects) return effects.error();
    bool wake = false;
    for (auto& [k, v] : *effects) {
      auto m = persistence::decode_effect_marker(v, name);
      if (!m) return m.error();
      if (m->kind != "worker") {
        wake = true;
        continue;
      }
      uint64_t effect = persistence::key_seq(k);
      impl_->rt.tasks.add({task_id((*meta)->id, effect, m->attempt),
                           m->queue,
                           m->agent,
                           effect,
                           m->attempt,
                           m->tool,
                           m->arguments,
                           m->lease_ms,
                           {},
                           0,
                           0,
                           m->idempotent},
                          wall_ms() + m->lease_ms);
    }
    auto inbox = db.read_inbox((*meta)->id, name);
    if (!inbox) return inbox.error();
    if (wake || !inbox->empty()) {
      auto r = std::make_shared<request>();
      r->what = request::kind::wake;
      r->name = name;
      impl_->submit(std::move(r));
    }
  }
  impl_->timers->notify(0);
  return status::ok();
}

void node::spawn(std::string name, std::string type, json input, callback<agent_view> done) {
  auto r = std::make_shared<request>();
  r->what = request::kind::spawn;
  r->name = std::move(name);
  r->type = std::move(type);
  r->body = std::move(input);
  r->viewed = std::move(done);
  if (impl_->reject_bad_name(*r)) return;
  if (!impl_->rt.types->find(r->type)) {
    std::string known;
    for (auto& t : impl_->rt.types->names()) known += (known.empty() ? "" : ", ") + t;
    fail(*r, error(code::invalid_argument,
                   "unknown agent type '" + r->type + "' (known: " + known + ")"));
    return;
  }
  impl_->submit(std::move(r));
}

void node::send(std::string name, inbound_message m, callback<send_ack> accepted,
                callback<agent_reply> replied) {
  auto r = std::make_shared<request>();
  r->what = request::kind::message;
  r->name = std::move(name);
  r->id = std::move(m.id);
  r->from = std::move(m.from);
  r->body = std::move(m.body);
  r->accepted = std::move(accepted);
  r->replied = std::move(replied);
  if (impl_->reject_bad_name(*r)) return;
  if (status s = validate_message_id(r->id); !s) {
    fail(*r, s);
    return;
  }
  impl_->submit(std::move(r));
}

void node::signal(std::string name, std::string signal, json payload, callback<send_ack> accepted,
                  callback<agent_reply> replied, std::string dedupe) {
  auto r = std::make_shared<request>();
  r->what = request::kind::signal;
  r->name = std::move(name);
  r->id = std::move(signal);
  r->dedupe = std::move(dedupe);
  r->body = std::move(payload);
  r->accepted = std::move(accepted);
  r->replied = std::move(replied);
  if (impl_->reject_bad_name(*r)) return;
  if (status s = validate_signal_name(r->id); !s) {
    fail(*r, s);
    return;
  }
  if (status s = validate_dedupe_key(r->dedupe); !s) {
    fail(*r, s);
    return;
  }
  impl_->submit(std::move(r));
}

void node::query(std::string name, json q, callback<json> done) {
  auto r = std::make_shared<request>();
  r->what = request::kind::query;
  r->name = std::move(name);
  r->body = std::move(q);
  r->answered = std::move(done);
  if (impl_->reject_bad_name(*r)) return;
  impl_->submit(std::move(r));
}

void node::get(std::string name, callback<agent_view> done) {
  auto r = std::make_shared<request>();
  r->what = request::kind::get;
  r->name = std::move(name);
  r->viewed = std::move(done);
  if (impl_->reject_bad_name(*r)) return;
  impl_->submit(std::move(r));
}

void node::terminate(std::string name, std::string by, callback<agent_view> done) {
  auto r = std::make_shared<request>();
  r->what = request::kind::terminate;
  r->name = std::move(name);
  r->from = std::move(by);
  r->viewed = std::move(done);
  if (impl_->reject_bad_name(*r)) return;
  impl_->submit(std::move(r));
}

void node::upgrade(std::string name, std::string to, std::string by, callback<json> done) {
  auto r = std::make_shared<request>();
  r->what = request::kind::upgrade;
  r->name = std::move(name);
  r->id = to == "latest" ? std::string() : std::move(to);
  r->from = std::move(by);
  r->answered = std::move(done);
  if (impl_->reject_bad_name(*r)) return;
  if (!r->id.empty() && (r->id.size() < 6 || r->id.size() > 64 ||
                         r->id.find_first_not_of("0123456789abcdef") != std::string::npos)) {
    fail(*r, error(code::invalid_argument,
                   "a version is \"latest\" or a hash (at least its first 6 hex digits)"));
    return;
  }
  impl_->submit(std::move(r));
}

void node::cancel(std::string name, std::string by, callback<send_ack> accepted,
                  callback<agent_reply> replied) {
  signal(std::move(name), "cancel", json{{"by", std::move(by)}}, std::move(accepted),
         std::move(replied));
}

std::optional<task_view> node::poll_task(const std::string& queue, const std::string& worker) {
  if (impl_->stopped) return std::nullopt;
  auto t = impl_->rt.tasks.poll(queue, worker, wall_ms());
  if (!t) return std::nullopt;
  return task_view{t->id,
                   t->queue,
                   t->agent,
                   t->tool,
                   t->arguments,
                   t->attempt,
                   t->agent + "#" + std::to_string(t->effect),
                   t->lease_until_ms};
}

void node::complete_task(const std::string& id, const std::string& worker, task_outcome outcome,
                         callback<json> done) {
  auto t = impl_->rt.tasks.find(id, worker, wall_ms());
  if (!t) {
    done(t.error());
    return;
  }
  auto r = std::make_shared<request>();
  r->what = request::kind::effect_result;
  r->name = t->agent;
  r->from = "worker";
  r->body = {{"effect", t->effect},
             {"attempt", t->attempt},
             {"ok", outcome.ok},
             {"result", std::move(outcome.result)},
             {"error", std::move(outcome.error)},
             {"retryable", outcome.retryable},
             {"maybe_applied", outcome.maybe_applied}};
  runtime* rt = &impl_->rt;
  r->answered = [rt, id, done = std::move(done)](result<json> res) {
    if (res) rt->tasks.finish(id);
    done(std::move(res));
  };
  impl_->submit(std::move(r));
}

json node::task_stats() {
  json out = json::object();
  for (const auto& [queue, st] : impl_->rt.tasks.stats(wall_ms()))
    out[queue] = {{"ready", st.ready}, {"leased", st.leased}};
  return {{"queues", std::move(out)}, {"requeued", impl_->rt.tasks.requeued()}};
}

result<ledger_page> node::ledger(std::string_view name, uint64_t from, std::size_t limit,
                                 uint64_t max_bytes) {
  if (impl_->stopped) return error(code::unavailable, "node is shutting down");
  KEEL_TRY(validate_agent_name(name));
  auto meta = impl_->db->get_agent(name);
  if (!meta) return meta.error();
  if (!*meta) return error(code::not_found, "agent " + std::string(name) + " does not exist");
  // One more than asked says whether the ledger goes on.
  from = std::max<uint64_t>(from, 1);
  auto recs = impl_->db->read_ledger((*meta)->id, from, limit + 1, name);
  if (!recs) return recs.error();
  ledger_page page;
  page.events.reserve(std::min(recs->size(), limit));
  // Large payloads live in blobs: what a page weighs is mostly theirs.
  uint64_t bytes = 0;
  const blob_reader read_blob = store_blobs(*impl_->db);
  const blob_reader counted = [&bytes, &read_blob](std::string_view key) {
    auto b = read_blob(key);
    if (b && *b) bytes += (*b)->size();
    return b;
  };
  for (auto& [seq, rec] : *recs) {
    if (page.events.size() == limit || (!page.events.empty() && bytes >= max_bytes)) {
      page.next = seq;
      break;
    }
    bytes += rec.payload.size();
    auto ev = event_from_record(
        rec, "ledger of " + std::string(name) + " seq " + std::to_string(seq), counted);
    if (!ev) return ev.error();
    ledger_entry e;
    e.seq = seq;
    e.type = agent::to_string(ev->type);
    e.time_ms = ev->time_ms;
    e.data = std::move(ev->data);
    if (auto link = ledger_link(rec, seq)) {
      e.prev = to_hex(link->prev);
      e.hash = to_hex(link->hash);
    }
    page.events.push_back(std::move(e));
  }
  return page;
}

runtime* node::live_runtime() {
  return impl_->stopped ? nullptr : &impl_->rt;
}

result<agent_list> node::list(std::string_view prefix, std::string_view after, std::size_t limit,
                              const list_filter& filter) {
  if (impl_->stopped) return error(code::unavailable, "node is shutting down");
  return list_agents(impl_->rt, prefix, after, limit, filter);
}

uint64_t node::live_agents() const {
  return impl_->rt.metrics.live.load();
}

std::string node::metrics_text() {
  const bool up = !impl_->stopped;
  return render_metrics(impl_->rt, impl_->journal.get(), up ? impl_->db.get() : nullptr);
}

}  // namespace keel::actors
