// What a node tells about its agents without activating any: listings,
// read from the directory entries, and the Prometheus text of its metrics,
// whose agent gauges come from the census (actors/agent_census.hpp).
// CAF-free.

#include <algorithm>
#include <sstream>

#include "actors/runtime.hpp"

namespace keel::actors {

namespace {

bool keeps(const list_filter& f, const persistence::agent_meta& m, const std::string& phase) {
  if (!f.phases.empty())
    return std::find(f.phases.begin(), f.phases.end(), phase) != f.phases.end();
  return f.all || m.status != agent_status::terminated;
}

// Entries read per store call, and at most per page of a filtered listing:
// a filter few agents pass ends a page early (with next_after) rather than
// reading the whole directory in one request.
constexpr std::size_t read_chunk = 512;
constexpr std::size_t max_read_per_page = 100'000;

}  // namespace

result<agent_list> list_agents(runtime& rt, std::string_view prefix, std::string_view after,
                               std::size_t limit, const list_filter& filter) {
  agent_list out;
  std::string from(after);
  std::size_t read = 0;
  for (;;) {
    auto page = rt.db->list_agents(prefix, from, read_chunk);
    if (!page) return page.error();
    for (auto& a : *page) {
      ++read;
      from = a.name;
      // Replicated, this store also holds the groups it follows: their
      // leaders list those agents.
      if (rt.repl && !rt.repl->leading(rt.repl->group_of(a.name))) continue;
      std::string phase = listed_phase_of(a.meta);
      if (!keeps(filter, a.meta, phase)) continue;
      if (out.agents.size() == limit) {
        // One more than asked: another page exists.
        out.next_after = out.agents.back().name;
        return out;
      }
      const bool live = rt.is_live(a.name);
      out.agents.push_back({std::move(a.name), a.meta.type, std::string(to_string(a.meta.status)),
                            a.meta.created_ms, live, std::move(phase), a.meta.paused});
    }
    if (page->size() < read_chunk) return out;
    if (read >= max_read_per_page) {
      out.next_after = from;
      return out;
    }
  }
}

namespace {

void counter_line(std::ostringstream& o, const char* name, const char* help, uint64_t v,
                  const char* type = "counter") {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
    << name << ' ' << v << '\n';
}

void summary(std::ostringstream& o, const char* name, const char* help, const histogram& h,
             double scale) {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " summary\n";
  for (double q : {0.5, 0.9, 0.99, 0.999})
    o << name << "{quantile=\"" << q << "\"} " << static_cast<double>(h.quantile(q)) * scale
      << '\n';
  o << name << "_sum " << static_cast<double>(h.sum()) * scale << '\n'
    << name << "_count " << h.count() << '\n';
}

}  // namespace

namespace {

// The node's own counters, in the order /metrics lists them.
struct node_counter {
  const char* name;
  const char* help;
  std::atomic<uint64_t> node_metrics::*value;
};
constexpr node_counter node_counters[] = {
    {"keel_activations_total", "Agent actors started.", &node_metrics::activations},
    {"keel_hibernations_total", "Agent actors that hibernated.", &node_metrics::hibernations},
    {"keel_snapshots_total", "Snapshots written.", &node_metrics::snapshots},
    {"keel_spawns_total", "Agents created.", &node_metrics::spawns},
    {"keel_messages_total", "Messages accepted.", &node_metrics::messages},
    {"keel_duplicate_messages_total", "Messages refused as duplicates.", &node_metrics::duplicates},
    {"keel_signals_total", "Signals accepted.", &node_metrics::signals},
    {"keel_signals_refused_total",
     "Signals refused before being recorded (unknown to the type, or not applying).",
     &node_metrics::signals_refused},
    {"keel_queries_total", "Read-only queries answered.", &node_metrics::queries},
    {"keel_events_appended_total", "Ledger events appended.", &node_metrics::events},
    {"keel_inbox_spills_total", "Messages acknowledged from the durable inbox.",
     &node_metrics::inbox_spills},
    {"keel_timers_fired_total", "Durable timers delivered.", &node_metrics::timers_fired},
    {"keel_agent_failures_total", "Agents stopped by an internal error.",
     &node_metrics::agent_failures},
    {"keel_model_calls_total", "Model calls started.", &node_metrics::model_calls},
    {"keel_tool_calls_total", "Tool calls started.", &node_metrics::tool_calls},
    {"keel_effect_failures_total", "Effect attempts that failed.", &node_metrics::effect_failures},
    {"keel_recoveries_total", "Activations that recovered interrupted effects.",
     &node_metrics::recoveries},
};

}  // namespace

std::string render_metrics(runtime& rt, persistence::journal_writer* journal,
                           persistence::store* db) {
  const auto& m = rt.metrics;
  std::ostringstream o;
  counter_line(o, "keel_agents_live", "Agents with a live actor.", m.live.load(), "gauge");
  counter_line(o, "keel_agents_hibernated",
               "Active agents on disk without a live actor (exact, from the directory).",
               rt.census.hibernated(), "gauge");
  o << "# HELP keel_agents Agents on this node's disk by phase (terminated and failed ones by "
       "status; unknown: not written since an upgrade).\n# TYPE keel_agents gauge\n";
  for (const auto& [phase, n] : rt.census.by_phase())
    o << "keel_agents{phase=\"" << phase << "\"} " << n << '\n';
  for (const auto& c : node_counters) counter_line(o, c.name, c.help, (m.*c.value).load());
  counter_line(o, "keel_worker_tasks_requeued_total", "Worker tasks whose lease ran out.",
               rt.tasks.requeued());
  counter_line(o, "keel_effect_calls_in_flight",
               "Blocking effect calls (models, http and exec tools) queued or running.",
               rt.calls.in_flight(), "gauge");
  counter_line(o, "keel_effect_calls_aborted_total",
               "Blocking effect calls aborted (node::abort_effects).", rt.calls.aborted());
  if (journal) {
    const auto& j = journal->stats();
    counter_line(o, "keel_journal_batches_total", "Journal writes (fsyncs when sync is on).",
                 j.batches.load());
    counter_line(o, "keel_journal_appends_total", "Write sets submitted to the journal.",
                 j.submits.load());
    counter_line(o, "keel_journal_ops_total", "Keys written or erased by the journal.",
                 j.ops.load());
    counter_line(o, "keel_journal_failures_total", "Journal writes that failed.",
                 j.failures.load());
    summary(o, "keel_journal_batch_appends", "Write sets per journal batch.", j.batch_submits, 1.0);
    summary(o, "keel_journal_commit_seconds", "Submit to durable, per write set.", j.commit_ns,
            1e-9);
    summary(o, "keel_journal_write_seconds", "One journal write including fsync.", j.write_ns,
            1e-9);
  }
  if (db) {
    const auto h = db->health();
    counter_line(o, "keel_store_writable",
                 "1 when the store takes writes, 0 when they are refused.", h.writable ? 1 : 0,
                 "gauge");
    counter_line(o, "keel_store_read_only", "1 when the store is open read-only.",
                 h.read_only ? 1 : 0, "gauge");
    counter_line(o, "keel_store_free_bytes", "Free space on the store's disk.", h.free_bytes,
                 "gauge");
    counter_line(o, "keel_store_write_errors_total", "Store writes refused or failed.",
                 h.write_errors);
    counter_line(o, "keel_store_recoveries_total", "Times store writes resumed after a stop.",
                 h.recoveries);
    counter_line(o, "keel_store_damaged_files", "Table files found corrupt.", h.damage.size(),
                 "gauge");
  }
  summary(o, "keel_activation_seconds", "Loading an agent (snapshot + ledger tail).",
          m.activation_ns, 1e-9);
  summary(o, "keel_accept_seconds", "Request received to durable acknowledgement.", m.accept_ns,
          1e-9);
  return o.str();
}

}  // namespace keel::actors
