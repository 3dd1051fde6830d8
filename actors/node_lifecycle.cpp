// A node's life: start (store, types, actors, recovery), begin, stop,
// and what the cluster layer asks of it (its store, commits, shard
// handoff: evict and adopt; aborting a deposed leader's effect calls). The
// agent calls are in node.cpp.

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <thread>

#include "actors/node_impl.hpp"
#include "base/log.hpp"
#include "effects/exec_tool.hpp"
#include "effects/scripted_model.hpp"
#include "ledger/codec.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"

namespace keel::actors {

status node::impl::recover() {
  return wake_pending(true);
}

status node::impl::wake_pending(bool requeue_tasks) {
  // Recovery: activate only agents with accepted, unconsumed messages; the
  // rest stay on disk. Due timers are found by the timer service's first scan.
  auto pending = db->agents_with_inbox();
  if (!pending) return pending.error();
  // Effects in flight when the node stopped (or started by the previous
  // leader of a group now led here): worker tasks are queued again, leased
  // for one lease as after a restart (a task still queued here is left as
  // it is); the agents of the others are activated and recover them.
  auto running = db->running_effects();
  if (!running) return running.error();
  for (auto& e : *running) {
    const auto& m = e.marker;
    if (m.kind == persistence::effect_kind::worker) {
      if (!requeue_tasks) continue;
      if (auto rr = rt.router.load(); rr && !rr->is_local(m.agent)) continue;
      rt.tasks.add_new({task_id(e.agent_id, e.effect, m.attempt),
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
    submit(make_request(std::move(name), wake_call{}));
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
        if (e.marker.kind == persistence::effect_kind::worker) continue;  // runs outside the node
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

status node::resume() {
  if (impl_->held.load(std::memory_order_acquire) || impl_->stopped.load()) return status::ok();
  KEEL_TRY(impl_->wake_pending(true));
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
  {
    std::unique_ptr<persistence::journal_sink> sink =
        std::make_unique<persistence::store_sink>(*p->db);
    if (opts.wrap_journal_sink) sink = opts.wrap_journal_sink(std::move(sink));
    p->journal = std::make_unique<persistence::journal_writer>(std::move(sink), cfg.sync);
  }
  p->rt.journal = p->journal.get();
  p->rt.repl = opts.repl;

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
        // Another node runs the agent (a replica of its group keeps its
        // timers too): that node fires them.
        if (auto rr = raw->rt.router.load(); rr && !rr->is_local(agent)) return;
        raw->submit(make_request(agent, timer_call{timer_id}));
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
  p->ledgers = std::make_unique<ledger_ops>(p->rt, p->stopped);
  auto n = std::unique_ptr<node>(new node(std::move(p)));
  retention_worker::options ro;
  ro.interval_ms = cfg.retention_interval_ms;
  raw->retention = std::make_unique<retention_worker>(
      *raw->db, *raw->types, ro,
      [raw](const std::string& name) {
        auto r = raw->ledgers->apply_retention(name);
        if (!r) {
          log::warn("retention of " + name + ": " + r.error().message(), {{"agent", name}});
          return false;
        }
        return r->compaction.has_value();
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

std::size_t node::abort_effects(std::function<bool(std::string_view agent)> pick) {
  return impl_->rt.calls.abort(pick);
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
      if (m->kind != persistence::effect_kind::worker) {
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
      impl_->submit(make_request(name, wake_call{}));
    }
  }
  impl_->timers->notify(0);
  return status::ok();
}

}  // namespace keel::actors
