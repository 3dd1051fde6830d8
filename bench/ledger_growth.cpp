// ledger_growth: bytes on disk as one conversation grows, against the text
// that went through it.
//
// One agent of a type built in code, with an in-process model provider and
// one in-process http tool. Turn t (1-based): the user sends ~200
// characters; the model answers with ~400 characters, and on every other
// turn (even t) first calls the tool, whose result is ~1,500 characters (a
// string >= 1 KiB: stored once, by hash, in the blobs family). The model's
// reply is decided from the request alone, and the provider checks that the
// request holds exactly the conversation so far (every earlier user message,
// reply and tool result, nothing twice), so a restart that lost or repeated
// anything ends the bench.
//
// At each checkpoint (--checkpoints turns) the agent is left idle until it
// hibernates (a snapshot of its state, which holds the whole conversation,
// replaces the previous one), the node is stopped (RocksDB flushes its
// memtables on close) and the data directory is measured: all files by
// kind (SST, WAL, MANIFEST, RocksDB's info logs, the rest) and the SST
// bytes of each column family (RocksDB's live-file metadata, read from a
// read-only open that writes nothing). A copy of the directory is then
// fully compacted, which leaves only live data: the difference is garbage
// (deleted snapshots, overwritten keys and their tombstones) that RocksDB
// drops at its own pace. Then the node is restarted and the conversation
// goes on. The payload is the text sent and received: user messages, model
// replies, tool results and tool-call arguments.
//
// Scenarios (--hibernate-every): 0 = the agent runs its turns back to back
// and hibernates only at checkpoints; H = it also hibernates after every H
// turns, as an agent of a human-paced chat would (idle_ms < think time), so
// a snapshot of the whole conversation is written that often.
//
// The text is random letters in words (RocksDB's Snappy finds little to
// compress in it): bytes on disk are close to an upper bound.

#include <algorithm>
#include <cstdarg>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>

#include "bench/bench_util.hpp"
#include "bench/node_driver.hpp"

namespace keel::bench {

namespace {

constexpr const char* agent_type_name = "bench-chat";
constexpr const char* agent = "ledger/chat-000000";
constexpr std::size_t user_chars = 200;
constexpr std::size_t reply_chars = 400;
constexpr std::size_t tool_chars = 1500;
constexpr uint32_t steady_idle_ms = 2000;

// --- deterministic text ------------------------------------------------------

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// `n` characters of lowercase words (2-9 letters) separated by spaces.
std::string text(uint64_t seed, std::size_t n) {
  std::string s;
  s.reserve(n);
  uint64_t x = mix(seed);
  while (s.size() < n) {
    x = mix(x);
    std::size_t len = 2 + x % 8;
    for (std::size_t i = 0; i < len && s.size() < n; ++i) {
      x = mix(x);
      s.push_back(static_cast<char>('a' + x % 26));
    }
    if (s.size() < n) s.push_back(' ');
  }
  return s;
}

bool with_tool(uint64_t turn) {
  return turn % 2 == 0;
}
std::string user_text(uint64_t turn) {
  return text(turn * 3 + 0, user_chars);
}
std::string reply_text(uint64_t turn) {
  return text(turn * 3 + 1, reply_chars);
}
std::string tool_text(uint64_t page) {
  return text(page * 3 + 2, tool_chars);
}
json tool_arguments(uint64_t turn) {
  return {{"page", turn}};
}

// Payload of turn t: what was sent and received as text.
uint64_t turn_payload(uint64_t turn) {
  uint64_t b = user_chars + reply_chars;
  if (with_tool(turn)) b += tool_chars + tool_arguments(turn).dump().size();
  return b;
}

// Messages of the model request once turns [1, t) are complete: the system
// message, then per turn user + (assistant tool call + tool result) + reply.
std::size_t messages_before(uint64_t turn) {
  std::size_t n = 1;
  for (uint64_t i = 1; i < turn; ++i) n += with_tool(i) ? 4 : 2;
  return n;
}

// --- the agent type and its in-process model and tool --------------------------

std::shared_ptr<const config::agent_spec> chat_spec() {
  auto s = std::make_shared<config::agent_spec>();
  s->name = agent_type_name;
  s->description = "ledger_growth: a chat with a page-fetching tool";
  s->instructions = "You are a benchmark agent. Fetch a page every other turn.";
  s->model.provider = "instant";
  s->model.model = "instant";
  config::tool_spec t;
  t.name = "fetch_page";
  t.description = "Returns a page of text (answered in process).";
  t.kind = config::tool_kind::http;
  t.url = "http://127.0.0.1:1/unused";  // the in-process runner never calls it
  t.parameters = {{"type", "object"},
                  {"properties", {{"page", {{"type", "integer"}}}}},
                  {"required", {"page"}}};
  t.idempotent = true;
  s->tools.push_back(std::move(t));
  s->hash = "ledger_growth-v1";
  return s;
}

class chat_model final : public actors::model_provider {
 public:
  // The turn the driver is running; requests for any other are refused.
  std::atomic<uint64_t> expected_turn{0};

  actors::effect_outcome complete(const config::model_spec&, const json& request,
                                  const actors::model_call_context&) override {
    const json& messages = request.at("messages");
    uint64_t users = 0, results_since_user = 0;
    for (const auto& m : messages) {
      const std::string role = m.value("role", "");
      if (role == "user") {
        ++users;
        results_since_user = 0;
      } else if (role == "tool") {
        ++results_since_user;
      }
    }
    const uint64_t t = users;
    auto refuse = [](std::string why) {
      return actors::effect_outcome::failure("chat model: " + why, false);
    };
    if (t != expected_turn.load(std::memory_order_acquire))
      return refuse("the request holds " + std::to_string(t) + " user messages, expected " +
                    std::to_string(expected_turn.load()));
    const std::size_t want = messages_before(t) + 1 + (results_since_user ? 2 : 0);
    if (messages.size() != want)
      return refuse("turn " + std::to_string(t) + ": the request holds " +
                    std::to_string(messages.size()) + " messages, expected " +
                    std::to_string(want));
    if (messages[1].value("content", "") != user_text(1) ||
        messages.back().value("content", "") != (results_since_user ? tool_text(t) : user_text(t)))
      return refuse("turn " + std::to_string(t) + ": the conversation's text is not what was sent");
    const json usage = {{"prompt_tokens", 100}, {"completion_tokens", 100}};
    if (with_tool(t) && results_since_user == 0) {
      json call = {{"id", "call_" + std::to_string(t)},
                   {"name", "fetch_page"},
                   {"arguments", tool_arguments(t)}};
      return actors::effect_outcome::success({{"content", nullptr},
                                              {"tool_calls", json::array({std::move(call)})},
                                              {"usage", usage},
                                              {"finish_reason", "tool_calls"}});
    }
    return actors::effect_outcome::success({{"content", reply_text(t)},
                                            {"tool_calls", json::array()},
                                            {"usage", usage},
                                            {"finish_reason", "stop"}});
  }
};

class page_tool final : public actors::tool_runner {
 public:
  actors::effect_outcome run(const config::tool_spec&, const json& arguments,
                             const actors::tool_call_context&) override {
    return actors::effect_outcome::success(json(tool_text(arguments.value("page", uint64_t{0}))));
  }
};

struct chat_node {
  std::shared_ptr<chat_model> model = std::make_shared<chat_model>();
  std::unique_ptr<actors::node> node;

  explicit chat_node(const config::node_config& cfg) {
    actors::start_options o;
    o.agent_types.push_back(chat_spec());
    o.plugins.providers["instant"] = model;
    o.plugins.runners[config::tool_kind::http] = std::make_shared<page_tool>();
    o.effect_threads = 2;
    auto n = actors::node::start(cfg, std::move(o));
    if (!n) die("node::start: " + n.error().to_string());
    node = std::move(*n);
  }
};

// --- driving the conversation --------------------------------------------------

// Waits for a callback's result; dies after 60 s (the callback, which refers
// to the promise, can then no longer run: the process is gone).
template <class T>
T await(std::future<T>& f, const std::string& what) {
  if (f.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
    die("no answer within 60 s: " + what);
  return f.get();
}

actors::agent_view get_view(actors::node& n) {
  std::promise<result<actors::agent_view>> p;
  auto f = p.get_future();
  n.get(agent, [&p](result<actors::agent_view> v) { p.set_value(std::move(v)); });
  auto v = await(f, "get");
  if (!v) die(std::string("get ") + agent + ": " + v.error().to_string());
  return std::move(*v);
}

void spawn_chat(actors::node& n) {
  std::promise<result<actors::agent_view>> p;
  auto f = p.get_future();
  n.spawn(agent, agent_type_name, nullptr,
          [&p](result<actors::agent_view> v) { p.set_value(std::move(v)); });
  auto v = await(f, "spawn");
  if (!v) die(std::string("spawn ") + agent + ": " + v.error().to_string());
}

// Runs turn t to completion: the send's `replied` callback carries the
// turn's outcome once turn_completed is durable.
void run_turn(chat_node& cn, uint64_t t) {
  actors::node& n = *cn.node;
  cn.model->expected_turn.store(t, std::memory_order_release);
  std::promise<result<actors::agent_reply>> p;
  auto f = p.get_future();
  n.send(
      agent, actors::inbound_message{"t" + std::to_string(t), "user", json(user_text(t))},
      [](result<actors::send_ack>) {},  // the reply reports a failure
      [&p](result<actors::agent_reply> r) { p.set_value(std::move(r)); });
  auto r = await(f, "turn " + std::to_string(t));
  if (!r) die("turn " + std::to_string(t) + ": " + r.error().to_string());
  if (!r->ok || r->body.value("turn", uint64_t{0}) != t ||
      r->body.value("status", "") != "completed" || r->body.value("answer", "") != reply_text(t))
    die("turn " + std::to_string(t) + " answered " + r->body.dump() + " " + r->code + " " +
        r->message);
}

// --- measuring the directory ----------------------------------------------------

// Files of a closed RocksDB directory by kind.
struct dir_sizes {
  uint64_t total = 0, sst = 0, wal = 0, manifest = 0, info_logs = 0, other = 0;
  uint64_t info_log_files = 0;
};

dir_sizes measure_dir(const std::string& dir) {
  dir_sizes d;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    const uint64_t size = e.file_size();
    d.total += size;
    auto ends = [&](std::string_view suf) {
      return name.size() >= suf.size() &&
             name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends(".sst")) {
      d.sst += size;
    } else if (ends(".log")) {
      d.wal += size;
    } else if (name.rfind("MANIFEST", 0) == 0) {
      d.manifest += size;
    } else if (name.rfind("LOG", 0) == 0) {
      d.info_logs += size;
      ++d.info_log_files;
    } else {
      d.other += size;  // OPTIONS, CURRENT, IDENTITY, LOCK
    }
  }
  return d;
}

// Keeps RocksDB from writing (or rotating) an info log in the measured dir.
class no_log final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const rocksdb::InfoLogLevel, const char*, va_list) override {}
};

struct family_sizes {
  std::map<std::string, uint64_t> sst_bytes;  // per column family
  std::map<std::string, uint64_t> entries;
  std::map<std::string, uint64_t> deletions;
  uint64_t total = 0;
};

// Opens the closed database (read-only, or read-write to compact it fully
// first) and sums its live SST files per column family.
family_sizes families_of(const std::string& dir, bool compact) {
  rocksdb::DBOptions o;
  o.info_log = std::make_shared<no_log>();
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(o, dir, &names);
  if (!s.ok()) die("ListColumnFamilies " + dir + ": " + s.ToString());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) descs.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> hs;
  rocksdb::DB* raw = nullptr;
  s = compact ? rocksdb::DB::Open(o, dir, descs, &hs, &raw)
              : rocksdb::DB::OpenForReadOnly(o, dir, descs, &hs, &raw);
  if (!s.ok()) die("opening " + dir + ": " + s.ToString());
  std::unique_ptr<rocksdb::DB> db(raw);
  if (compact) {
    rocksdb::CompactRangeOptions c;
    c.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (auto* h : hs) {
      s = db->CompactRange(c, h, nullptr, nullptr);
      if (!s.ok()) die("compacting " + dir + ": " + s.ToString());
    }
  }
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  family_sizes f;
  for (const auto& m : files) {
    f.sst_bytes[m.column_family_name] += m.size;
    f.entries[m.column_family_name] += m.num_entries;
    f.deletions[m.column_family_name] += m.num_deletions;
    f.total += m.size;
  }
  for (auto* h : hs) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  db->Close().PermitUncheckedError();
  return f;
}

// Bytes this process has passed to write(2) and friends (/proc/self/io
// wchar): WAL, flushes and compactions, as RocksDB runs them in process.
uint64_t bytes_written() {
  std::ifstream f("/proc/self/io");
  std::string key;
  uint64_t v = 0;
  while (f >> key >> v)
    if (key == "wchar:") return v;
  return 0;
}

ordered_json to_json(const std::map<std::string, uint64_t>& m) {
  ordered_json j = ordered_json::object();
  for (const auto& [k, v] : m)
    if (v) j[k] = v;
  return j;
}

std::string scenario_name(uint64_t every) {
  return every == 0 ? "steady" : "idle_every_" + std::to_string(every);
}

// Runs one scenario in `dir`; adds its figures to `rep`, named after it.
void run_scenario(const std::vector<uint64_t>& checkpoints, uint64_t every, uint32_t idle_ms,
                  const std::string& dir, report& rep) {
  // With hibernate-every, idle_ms; without, long enough that the agent
  // hibernates only when the driver waits for it at a checkpoint.
  const std::string name = scenario_name(every);
  config::node_config cfg;
  cfg.data_dir = dir + "/node";
  cfg.idle_ms = every == 0 ? steady_idle_ms : idle_ms;
  cfg.sync = true;
  auto cn = std::make_unique<chat_node>(cfg);
  spawn_chat(*cn->node);

  uint64_t turn = 0, payload = 0, prev_bytes = 0, prev_turns = 0, restarts = 0;
  uint64_t snapshots = 0;  // keel_snapshots_total over the node incarnations
  // Bytes written while a node ran (not while this bench copied and
  // compacted the directory to measure it).
  uint64_t written = 0;
  uint64_t w_mark = bytes_written();
  for (uint64_t cp : checkpoints) {
    while (turn < cp) {
      ++turn;
      run_turn(*cn, turn);
      payload += turn_payload(turn);
      if (every != 0 && turn % every == 0 && turn != cp)
        if (!poll_until([&] { return cn->node->live_agents() == 0; }, std::chrono::seconds(30),
                        std::chrono::milliseconds(1)))
          die("the agent did not hibernate within 30 s");
    }
    // Checkpoint: let it hibernate (snapshot), stop (flush), measure.
    if (!poll_until([&] { return cn->node->live_agents() == 0; }, std::chrono::seconds(30),
                    std::chrono::milliseconds(1)))
      die("the agent did not hibernate within 30 s");
    snapshots += static_cast<uint64_t>(node_metric(*cn->node, "snapshots_total"));
    cn->node->stop();
    cn.reset();
    written += bytes_written() - w_mark;
    const dir_sizes d = measure_dir(cfg.data_dir);
    const family_sizes live = families_of(cfg.data_dir, false);
    const std::string copy = dir + "/compacted";
    std::filesystem::remove_all(copy);
    std::filesystem::copy(cfg.data_dir, copy, std::filesystem::copy_options::recursive);
    const family_sizes compacted = families_of(copy, true);
    std::filesystem::remove_all(copy);

    const double pl = static_cast<double>(payload);
    const double nt = static_cast<double>(turn);
    const std::string p = name + "_turns" + std::to_string(turn) + "_";
    rep.metric(p + "payload_bytes", payload);
    rep.metric(p + "disk_bytes", d.total);
    rep.metric(p + "sst_bytes", d.sst);
    rep.metric(p + "wal_bytes", d.wal);
    rep.metric(p + "manifest_bytes", d.manifest);
    rep.metric(p + "info_log_bytes", d.info_logs);
    rep.metric(p + "info_log_files", d.info_log_files);
    rep.metric(p + "other_bytes", d.other);
    rep.metric(p + "sst_bytes_by_family", to_json(live.sst_bytes));
    rep.metric(p + "deletions_by_family", to_json(live.deletions));
    rep.metric(p + "compacted_sst_bytes", compacted.total);
    rep.metric(p + "compacted_sst_bytes_by_family", to_json(compacted.sst_bytes));
    rep.metric(p + "disk_bytes_per_turn", round2(static_cast<double>(d.total) / nt));
    rep.metric(p + "data_bytes_per_turn", round2(static_cast<double>(d.sst + d.wal) / nt));
    // Growth since the previous checkpoint, per turn: flat if O(total text).
    rep.metric(p + "data_bytes_per_turn_since_previous",
               round2((static_cast<double>(d.sst + d.wal) - static_cast<double>(prev_bytes)) /
                      static_cast<double>(turn - prev_turns)));
    rep.metric(p + "disk_over_payload", round2(static_cast<double>(d.total) / pl));
    rep.metric(p + "data_over_payload", round2(static_cast<double>(d.sst + d.wal) / pl));
    rep.metric(p + "compacted_over_payload", round2(static_cast<double>(compacted.total) / pl));
    rep.metric(p + "bytes_written", written);
    rep.metric(p + "bytes_written_over_payload", round2(static_cast<double>(written) / pl));
    rep.metric(p + "snapshots_written", snapshots);
    rep.metric(p + "restarts", restarts);
    std::printf(
        "%s, %llu turns: payload %llu B; on disk %llu B (sst %llu, wal %llu, info logs %llu, "
        "manifest %llu, other %llu) = %.2f x payload; sst+wal %.2f x; fully compacted %llu B = "
        "%.2f x; written %llu B = %.1f x\n",
        name.c_str(), static_cast<unsigned long long>(turn),
        static_cast<unsigned long long>(payload), static_cast<unsigned long long>(d.total),
        static_cast<unsigned long long>(d.sst), static_cast<unsigned long long>(d.wal),
        static_cast<unsigned long long>(d.info_logs), static_cast<unsigned long long>(d.manifest),
        static_cast<unsigned long long>(d.other), static_cast<double>(d.total) / pl,
        static_cast<double>(d.sst + d.wal) / pl, static_cast<unsigned long long>(compacted.total),
        static_cast<double>(compacted.total) / pl, static_cast<unsigned long long>(written),
        static_cast<double>(written) / pl);
    std::fflush(stdout);
    prev_bytes = d.sst + d.wal;
    prev_turns = turn;

    // Restart and go on; after the last checkpoint, check what the
    // restarted node holds.
    w_mark = bytes_written();
    cn = std::make_unique<chat_node>(cfg);
    ++restarts;
  }
  auto v = get_view(*cn->node);
  if (v.state.value("turns", uint64_t{0}) != turn)
    die("after the last restart the agent reports " + v.state.value("turns", json()).dump() +
        " turns, expected " + std::to_string(turn));
  std::promise<result<json>> p;
  auto f = p.get_future();
  cn->node->query(agent, json{{"conversation", true}},
                  [&p](result<json> r) { p.set_value(std::move(r)); });
  auto conv = await(f, "query conversation");
  if (!conv) die("query conversation: " + conv.error().to_string());
  const std::size_t want = messages_before(turn + 1) - 1;  // without the system message
  if ((*conv)["conversation"].size() != want)
    die("after the last restart the conversation has " +
        std::to_string((*conv)["conversation"].size()) + " messages, expected " +
        std::to_string(want));
  rep.metric(name + "_restart_check",
             "ok: " + std::to_string(turn) + " turns, " + std::to_string(want) + " messages");
  cn->node->stop();
}

}  // namespace

// The bench itself; bench_main.cpp is main().
int run(int argc, char** argv) {
  options opts("ledger_growth",
               "Bytes on disk after N turns of one conversation (200-char messages, "
               "400-char replies, a 1,500-char tool result every other turn), against the "
               "text that went through it.");
  opts.add("checkpoints", "10,100,1000", "turns at which the node is stopped and measured");
  opts.add("hibernate-every", "0,1",
           "scenarios: 0 = hibernate only at checkpoints; H = also after every H turns");
  opts.add("idle-ms", "20",
           "idle_ms of the hibernating scenarios (the steady one uses 2,000 ms and waits)");
  opts.add("dir", "", "work directory (default: a fresh temp dir, removed at the end)");
  opts.add_switch("keep", "keep the work directory");
  opts.parse(argc, argv);

  auto checkpoints = opts.u64_list("checkpoints");
  if (checkpoints.empty() || !std::is_sorted(checkpoints.begin(), checkpoints.end()) ||
      checkpoints.front() == 0 ||
      std::adjacent_find(checkpoints.begin(), checkpoints.end()) != checkpoints.end())
    die("--checkpoints needs increasing positive numbers");
  auto scenarios = opts.u64_list("hibernate-every");
  if (scenarios.empty()) die("--hibernate-every needs at least one scenario");
  const auto idle_ms = static_cast<uint32_t>(std::max<uint64_t>(1, opts.u64("idle-ms")));

  temp_dir tmp("keel-bench-ledger");
  if (opts.on("keep")) tmp.keep();
  std::string work = opts.str("dir").empty() ? tmp.path() : opts.str("dir");

  report rep("ledger_growth");
  rep.params() = opts.params();
  rep.params()["work_dir"] = work;
  for (uint64_t every : scenarios)
    run_scenario(checkpoints, every, idle_ms, work + "/" + scenario_name(every), rep);

  rep.note(
      "payload = user text + model reply text + tool result text + tool-call arguments; "
      "disk = every file of the data dir after a clean stop (memtables flushed); data = SST + "
      "WAL; compacted = SST bytes of a fully compacted copy (live data only)");
  rep.note(
      "bytes_written = /proc/self/io wchar since the scenario began (WAL, flushes, "
      "compactions, manifests, info logs)");
  rep.note(
      "each checkpoint waits for the agent to hibernate (one snapshot of the whole state), "
      "stops the node, measures, restarts it; the restarted node must hand the model the "
      "whole conversation so far, or the bench fails");
  rep.finish(opts.str("json"));
  return 0;
}

}  // namespace keel::bench
