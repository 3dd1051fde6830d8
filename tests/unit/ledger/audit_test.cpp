// The hash chain and what rests on it, in process: audit, export and
// import, compaction, replay, fork and pause of agents in a real node on a
// temp directory (store, journal, actors), with in-process model and tool
// fakes or the scripted model.

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "actors/ledger_ops.hpp"
#include "actors/node.hpp"
#include "base/sha256.hpp"
#include "ledger/audit.hpp"
#include "ledger/codec.hpp"
#include "persistence/keys.hpp"
#include "persistence/msgpack.hpp"
#include "persistence/store.hpp"
#include "persistence/values.hpp"
#include "support/in_process_node.hpp"
#include "support/replay_check.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using json = nlohmann::json;
using keel::test::eventually;
using keel::test::future_value;
using namespace keel::test::in_process;

namespace {

// --- agent types on the fakes (support/in_process_node.hpp) --------------------------

// "scripted": answers from the script file `script` (effects/scripted_model.hpp);
// "fake": the node's fake_model.
std::shared_ptr<const config::agent_spec> loop_spec(const std::string& name,
                                                    const std::string& provider,
                                                    const std::string& script,
                                                    std::vector<config::tool_spec> tools) {
  auto s = std::make_shared<config::agent_spec>();
  s->name = name;
  s->model.provider = provider;
  s->model.script = script;
  s->model.retry.timeout_ms = 5'000;
  s->tools = std::move(tools);
  return s;
}

// --- a node on a temp directory ------------------------------------------------------

struct sent_later {
  std::shared_ptr<future_value<result<actors::agent_reply>>> reply;
  uint64_t seq = 0;
};

struct test_node {
  keel::test::temp_dir dir;
  config::node_config cfg;
  std::vector<std::shared_ptr<const config::agent_spec>> types;
  std::shared_ptr<fake_model> model = std::make_shared<fake_model>();
  std::shared_ptr<fake_tools> tools = std::make_shared<fake_tools>();
  std::unique_ptr<actors::node> node;
  bool replay_check = true;

  explicit test_node(uint32_t idle_ms = 60'000,
                     std::vector<std::shared_ptr<const config::agent_spec>> t = {})
      : types(std::move(t)) {
    cfg.data_dir = (dir.path() / "data").string();
    cfg.idle_ms = idle_ms;
    cfg.scheduler_threads = 2;
    cfg.block_cache_bytes = 8 << 20;
    cfg.effect_threads = 4;
    start();
  }
  // Every ledger the test leaves must replay strictly, unless the test
  // damaged one on purpose.
  ~test_node() {
    if (node && replay_check) keel::test::check_strict_replays(*node);
  }
  test_node(const test_node&) = delete;
  test_node& operator=(const test_node&) = delete;

  void start() { node = start_node(cfg, types, model, tools); }
  void stop() {
    node->stop();
    node.reset();
  }
  void restart() {
    stop();
    start();
  }

  // Writes a scripted model's replies; returns the file's path.
  std::string write_script(const std::string& file, const json& replies) {
    const auto p = dir.path() / file;
    std::ofstream out(p);
    out << json{{"replies", replies}}.dump();
    REQUIRE(out.good());
    return p.string();
  }

  result<actors::agent_view> try_spawn(const std::string& name, const std::string& type,
                                       json input = nullptr) {
    future_value<result<actors::agent_view>> v;
    node->spawn(name, type, std::move(input),
                [&v](result<actors::agent_view> r) { v.set(std::move(r)); });
    auto r = v.wait();
    REQUIRE(r);
    return *r;
  }
  actors::agent_view spawn(const std::string& name, const std::string& type = "counter",
                           json input = nullptr) {
    auto r = try_spawn(name, type, std::move(input));
    REQUIRE_MESSAGE(r, r.error().to_string());
    return *r;
  }

  // Sends and waits for the acknowledgement only; the reply comes later
  // (callbacks may run after this returns, so the futures are shared).
  result<sent_later> send_later(const std::string& name, json body) {
    auto a = std::make_shared<future_value<result<actors::send_ack>>>();
    auto r = std::make_shared<future_value<result<actors::agent_reply>>>();
    node->send(
        name, {"", "test", std::move(body)},
        [a](result<actors::send_ack> x) { a->set(std::move(x)); },
        [r](result<actors::agent_reply> x) { r->set(std::move(x)); });
    auto ack = a->wait();
    REQUIRE(ack);
    if (!*ack) return ack->error();
    return sent_later{r, (*ack)->seq};
  }
  // Sends and waits for the agent's reply.
  actors::agent_reply send(const std::string& name, json body) {
    auto s = send_later(name, std::move(body));
    REQUIRE_MESSAGE(s, s.error().to_string());
    auto r = s->reply->wait();
    REQUIRE(r);
    REQUIRE_MESSAGE(*r, r->error().to_string());
    return **r;
  }
  actors::agent_reply signal(const std::string& name, const std::string& sig, json payload) {
    auto a = std::make_shared<future_value<result<actors::send_ack>>>();
    auto r = std::make_shared<future_value<result<actors::agent_reply>>>();
    node->signal(
        name, sig, std::move(payload), [a](result<actors::send_ack> x) { a->set(std::move(x)); },
        [r](result<actors::agent_reply> x) { r->set(std::move(x)); });
    auto ack = a->wait();
    REQUIRE(ack);
    REQUIRE_MESSAGE(*ack, ack->error().to_string());
    auto rep = r->wait();
    REQUIRE(rep);
    REQUIRE_MESSAGE(*rep, rep->error().to_string());
    return **rep;
  }

  // How a signal refused before it is recorded fails (its acknowledgement).
  status refused_signal(const std::string& name, const std::string& sig, json payload) {
    future_value<result<actors::send_ack>> a;
    node->signal(
        name, sig, std::move(payload), [&a](result<actors::send_ack> x) { a.set(std::move(x)); },
        nullptr);
    auto ack = a.wait();
    REQUIRE(ack);
    return ack->error();  // ok when it was accepted
  }

  result<actors::agent_view> try_view(const std::string& name) {
    future_value<result<actors::agent_view>> v;
    node->get(name, [&v](result<actors::agent_view> r) { v.set(std::move(r)); });
    auto r = v.wait();
    REQUIRE(r);
    return *r;
  }
  actors::agent_view view(const std::string& name) {
    auto r = try_view(name);
    REQUIRE_MESSAGE(r, r.error().to_string());
    return *r;
  }
  int64_t total(const std::string& name) { return view(name).state.value("total", int64_t{-1}); }
  json query(const std::string& name, json q) {
    future_value<result<json>> f;
    node->query(name, std::move(q), [&f](result<json> r) { f.set(std::move(r)); });
    auto r = f.wait();
    REQUIRE(r);
    REQUIRE_MESSAGE(*r, r->error().to_string());
    return **r;
  }
  std::vector<actors::ledger_entry> ledger(const std::string& name) {
    auto l = node->ledger(name, 1, 10'000);
    REQUIRE_MESSAGE(l, l.error().to_string());
    return l->events;
  }
  actors::audit_report audit(const std::string& name) {
    auto a = node->ledgers().audit(name);
    REQUIRE_MESSAGE(a, a.error().to_string());
    return *a;
  }
  result<actors::agent_view> import(const std::string& name, const json& body) {
    future_value<result<actors::agent_view>> v;
    node->ledgers().import(name, body, [&v](result<actors::agent_view> r) { v.set(std::move(r)); });
    auto r = v.wait();
    REQUIRE(r);
    return *r;
  }
  // Waits until the agent's view satisfies `pred`.
  actors::agent_view wait_view(const std::string& name,
                               const std::function<bool(const actors::agent_view&)>& pred,
                               const std::string& what) {
    actors::agent_view v;
    const bool ok = eventually([&] {
      v = view(name);
      return pred(v);
    });
    REQUIRE_MESSAGE(ok, name << ": " << what << " did not happen; state " << v.state.dump());
    return v;
  }
};

// The export line of a ledger entry, as ledger/audit.hpp export_line
// writes it.
json line_of(const actors::ledger_entry& e) {
  return {{"seq", e.seq},   {"type", e.type}, {"time", e.time_ms},
          {"data", e.data}, {"prev", e.prev}, {"hash", e.hash}};
}
json export_lines(const std::vector<actors::ledger_entry>& entries) {
  json lines = json::array();
  for (const auto& e : entries) lines.push_back(line_of(e));
  return lines;
}

actors::chain_hash hash_from_hex(const std::string& hex) {
  auto bytes = from_hex(hex);
  REQUIRE(bytes);
  REQUIRE(bytes->size() == 32);
  actors::chain_hash h{};
  std::copy(bytes->begin(), bytes->end(), h.begin());
  return h;
}

uint64_t first_seq_of(const std::vector<actors::ledger_entry>& l, const std::string& type,
                      uint64_t after = 0) {
  for (const auto& e : l)
    if (e.seq > after && e.type == type) return e.seq;
  return 0;
}

int count_of(const std::vector<actors::ledger_entry>& l, const std::string& type) {
  return static_cast<int>(
      std::count_if(l.begin(), l.end(), [&](const auto& e) { return e.type == type; }));
}

std::string summary(const std::vector<actors::ledger_entry>& l) {
  std::string s;
  for (const auto& e : l) s += std::to_string(e.seq) + ":" + e.type + " " + e.data.dump() + "\n";
  return s;
}

// The error code of a failed result; code::ok when it succeeded.
template <class T>
code code_of(const result<T>& r) {
  return r ? code::ok : r.error().error_code();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::unique_ptr<persistence::store> open_store(const std::string& dir) {
  auto s = persistence::store::open({dir, 8 << 20, false});
  REQUIRE_MESSAGE(s, s.error().to_string());
  return std::move(*s);
}

uint64_t agent_id(persistence::store& db, const std::string& name) {
  auto meta = db.get_agent(name);
  REQUIRE(meta);
  REQUIRE(meta->has_value());
  return (**meta).id;
}

// Rewrites the ledger record at `seq` with `edit` applied to its event data:
// the chain fields stay as they were and the record's checksum is valid,
// as a careful forger would leave it.
void rewrite_event_data(persistence::store& db, uint64_t id, uint64_t seq,
                        const std::function<void(json&)>& edit) {
  const std::string key = persistence::agent_seq_key(id, seq);
  auto raw = db.get(persistence::family::ledger, key);
  REQUIRE(raw);
  REQUIRE(raw->has_value());
  auto rec = persistence::decode_record(**raw, "test");
  REQUIRE(rec);
  REQUIRE((rec->type & actors::chain_flag) != 0);
  const std::string chain = rec->payload.substr(0, 64);
  auto data = persistence::from_msgpack(std::string_view(rec->payload).substr(64), "test");
  REQUIRE(data);
  edit(*data);
  rec->payload = chain + persistence::to_msgpack(*data);
  const std::string bytes = persistence::encode_record(*rec);
  REQUIRE(persistence::decode_record(bytes, "test"));  // the checksum holds
  REQUIRE(db.write({{persistence::family::ledger, false, key, bytes}}, true));
}

// A blob reader over a map, for codec tests without a store.
actors::blob_reader map_reader(const std::map<std::string, std::string>& blobs) {
  return [&blobs](std::string_view key) -> result<std::optional<std::string>> {
    auto it = blobs.find(std::string(key));
    if (it == blobs.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  };
}

}  // namespace

// --- the chain codec -----------------------------------------------------------------

TEST_CASE("chained records link each hash to the next and expose a changed payload") {
  const std::string big(3000, 'b');
  const std::vector<agent::event> events = {
      {agent::event_type::spawned,
       100,
       {{"type", "counter"}, {"input", nullptr}, {"data", {{"total", 0}}}}},
      {agent::event_type::message_received,
       101,
       {{"arrival", 1}, {"id", "m1"}, {"from", "t"}, {"body", {{"add", 5}}}}},
      {agent::event_type::state_changed, 101, {{"total", 5}}},
      {agent::event_type::effect_completed, 102, {{"effect", 4}, {"result", {{"page", big}}}}},
      {agent::event_type::paused, 103, {{"by", "op"}}},
  };
  actors::chain_hash head{};
  actors::blob_list blobs;
  std::vector<persistence::record> recs;
  std::vector<actors::chain_hash> hashes;
  for (std::size_t i = 0; i < events.size(); ++i) {
    recs.push_back(actors::chained_record(events[i], i + 1, head, &blobs));
    hashes.push_back(head);
  }
  std::map<std::string, std::string> blob_map(blobs.begin(), blobs.end());
  const auto reader = map_reader(blob_map);

  for (std::size_t i = 0; i < recs.size(); ++i) {
    CAPTURE(i);
    CHECK((recs[i].type & actors::chain_flag) != 0);
    auto link = actors::ledger_link(recs[i], i + 1);
    REQUIRE(link);
    CHECK(link->matches);
    CHECK(link->hash == hashes[i]);
    CHECK(link->prev == (i == 0 ? actors::chain_hash{} : hashes[i - 1]));
    // The hash covers the seq: the same record elsewhere does not match.
    auto moved = actors::ledger_link(recs[i], i + 2);
    REQUIRE(moved);
    CHECK_FALSE(moved->matches);
    auto back = actors::event_from_record(recs[i], "chained", reader);
    REQUIRE_MESSAGE(back, back.error().to_string());
    CHECK(*back == events[i]);
  }
  CHECK(head == hashes.back());
  // Distinct events, distinct hashes.
  for (std::size_t i = 1; i < hashes.size(); ++i) CHECK(hashes[i] != hashes[i - 1]);

  SUBCASE("chaining again from the same start gives the same hashes") {
    actors::chain_hash again{};
    actors::blob_list more;
    for (std::size_t i = 0; i < events.size(); ++i) {
      CHECK(actors::chained_record(events[i], i + 1, again, &more) == recs[i]);
      CHECK(again == hashes[i]);
    }
    // Kept inline, the large string is other bytes: another hash from there on.
    actors::chain_hash inline_head{};
    for (std::size_t i = 0; i < events.size(); ++i) {
      actors::chained_record(events[i], i + 1, inline_head);
      CHECK((inline_head == hashes[i]) == (i < 3));
    }
  }
  SUBCASE("a record with a large string chains through its blob reference") {
    const auto& r = recs[3];
    CHECK((r.type & actors::blob_ref_flag) != 0);
    REQUIRE(blobs.size() == 1);
    CHECK(blobs[0].second == big);
    CHECK(r.payload.size() < 200);  // prev + hash + a reference
    auto missing = actors::event_from_record(r, "chained");
    REQUIRE_FALSE(missing);
    CHECK(missing.error().error_code() == code::corruption);
  }
  SUBCASE("a changed field, time or type breaks the match but not the stored hash") {
    persistence::record changed = recs[2];
    auto data = persistence::from_msgpack(std::string_view(changed.payload).substr(64), "t");
    REQUIRE(data);
    (*data)["total"] = 6;
    changed.payload = changed.payload.substr(0, 64) + persistence::to_msgpack(*data);
    auto link = actors::ledger_link(changed, 3);
    REQUIRE(link);
    CHECK_FALSE(link->matches);
    CHECK(link->hash == hashes[2]);
    auto decoded = actors::event_from_record(changed, "changed");
    REQUIRE(decoded);
    CHECK(decoded->data["total"] == 6);  // it still reads: only the chain tells

    persistence::record later = recs[2];
    later.time_ms += 1;
    CHECK_FALSE(actors::ledger_link(later, 3)->matches);

    persistence::record retyped = recs[2];
    retyped.type = static_cast<uint16_t>(agent::event_type::timer_fired) | actors::chain_flag;
    CHECK_FALSE(actors::ledger_link(retyped, 3)->matches);
  }
  SUBCASE("a record without chain fields has no link and still decodes") {
    auto plain = actors::to_record(events[1]);
    CHECK_FALSE(actors::ledger_link(plain, 2));
    auto back = actors::event_from_record(plain, "plain");
    REQUIRE(back);
    CHECK(*back == events[1]);
    persistence::record cut = recs[1];
    cut.payload.resize(40);
    CHECK_FALSE(actors::ledger_link(cut, 2));
    auto bad = actors::event_from_record(cut, "cut record");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().error_code() == code::corruption);
    CHECK(contains(bad.error().message(), "cut record"));
  }
}

// --- audit on a node -----------------------------------------------------------------

TEST_CASE("audit finds an intact chain, then the seq of an altered or a deleted record") {
  test_node n;
  n.spawn("au/1");
  for (int i = 1; i <= 5; ++i) n.send("au/1", {{"add", i}});
  const auto before = n.ledger("au/1");
  REQUIRE(before.size() == 11);
  for (std::size_t i = 0; i < before.size(); ++i) {
    CAPTURE(i);
    CHECK(before[i].hash.size() == 64);
    CHECK(before[i].prev == (i == 0 ? std::string(64, '0') : before[i - 1].hash));
  }
  auto a = n.audit("au/1");
  CHECK(a.intact());
  CHECK(a.chain.events == 11);
  CHECK(a.chain.first_seq == 1);
  CHECK(a.chain.last_seq == 11);
  CHECK(a.chain.head == before.back().hash);
  CHECK(a.chain.bad_seq == 0);

  const uint64_t altered = 5;
  REQUIRE(before[altered - 1].type == "state_changed");
  n.stop();
  enum class damage { altered, deleted, rehashed } done = damage::altered;
  {
    auto db = open_store(n.cfg.data_dir);
    const uint64_t id = agent_id(*db, "au/1");
    SUBCASE("a record whose data was changed") {
      rewrite_event_data(*db, id, altered, [](json& d) { d["total"] = 999; });
      done = damage::altered;
    }
    SUBCASE("a record deleted from the middle") {
      REQUIRE(db->write(
          {{persistence::family::ledger, true, persistence::agent_seq_key(id, altered), {}}},
          true));
      done = damage::deleted;
    }
    SUBCASE("a record changed and hashed again breaks the link of the next one") {
      // The forger chains the new record from the one before it; the
      // record after it still names the old hash.
      const actors::chain_hash head = hash_from_hex(before[altered - 2].hash);
      actors::chain_hash h = head;
      agent::event forged{
          agent::event_type::state_changed, before[altered - 1].time_ms, {{"total", 999}}};
      REQUIRE(
          db->write({{persistence::family::ledger, false, persistence::agent_seq_key(id, altered),
                      persistence::encode_record(actors::chained_record(forged, altered, h))}},
                    true));
      done = damage::rehashed;
    }
  }
  n.replay_check = false;  // the damaged ledger cannot replay
  n.start();
  auto broken = n.audit("au/1");
  CHECK_FALSE(broken.intact());
  CHECK_FALSE(broken.chain.intact);  // so no head is pinned
  const std::string reason = broken.chain.reason;
  CAPTURE(reason);
  switch (done) {
    case damage::altered:
      CHECK(broken.chain.bad_seq == altered);
      CHECK(contains(reason, "altered"));
      // The record still reads (its checksum holds): only the chain tells.
      CHECK(n.ledger("au/1")[altered - 1].data["total"] == 999);
      break;
    case damage::deleted:
      CHECK(broken.chain.bad_seq == altered);
      CHECK(contains(reason, "missing"));
      CHECK(contains(reason, std::to_string(altered)));
      CHECK(n.ledger("au/1").size() == 10);
      break;
    case damage::rehashed:
      CHECK(broken.chain.bad_seq == altered + 1);
      CHECK(contains(reason, "does not link to seq " + std::to_string(altered)));
      break;
  }
}

// --- export and import ---------------------------------------------------------------

TEST_CASE("an exported ledger imports as a read-only agent with the same chain") {
  test_node n;
  n.spawn("ex/src", "counter", {{"total", 2}});
  for (int i = 1; i <= 4; ++i) n.send("ex/src", {{"add", i}});
  n.signal("ex/src", "reset", nullptr);
  n.send("ex/src", {{"add", 7}});
  const auto entries = n.ledger("ex/src");
  REQUIRE(entries.size() == 13);
  const json lines = export_lines(entries);

  // The lines have the shape the product's export writes.
  for (const auto& e : entries) {
    auto type = agent::event_type_from_name(e.type);
    REQUIRE(type);
    CHECK(actors::export_line(e.seq, agent::event{*type, e.time_ms, e.data}, hash_from_hex(e.prev),
                              hash_from_hex(e.hash)) == line_of(e));
  }
  const auto source_audit = n.audit("ex/src");
  REQUIRE(source_audit.intact());

  auto v = n.import("ex/copy", {{"events", lines}});
  REQUIRE_MESSAGE(v, v.error().to_string());
  CHECK(v->origin == persistence::agent_origin::imported);
  CHECK(v->type == "counter");
  CHECK(v->last_seq == entries.back().seq);
  CHECK(v->state.value("total", -1) == 7);
  CHECK(n.total("ex/copy") == 7);

  auto a = n.audit("ex/copy");
  CHECK(a.intact());
  CHECK(a.chain.events == entries.size());
  CHECK(a.chain.head == source_audit.chain.head);
  const auto copied = n.ledger("ex/copy");
  REQUIRE(copied.size() == entries.size());
  for (std::size_t i = 0; i < copied.size(); ++i) {
    CHECK(copied[i].hash == entries[i].hash);
    CHECK(copied[i].data == entries[i].data);
  }

  SUBCASE("the imported agent takes no input") {
    auto s = n.send_later("ex/copy", {{"add", 1}});
    REQUIRE_FALSE(s);
    CHECK(s.error().error_code() == code::conflict);
    CHECK(n.total("ex/copy") == 7);
    CHECK(n.ledger("ex/copy").size() == entries.size());
    // Nor is it a fork source.
    auto f = n.node->ledgers().fork_source_of("ex/copy", 2, false);
    REQUIRE_FALSE(f);
    CHECK(f.error().error_code() == code::invalid_argument);
  }
  SUBCASE("a name taken is refused") {
    auto again = n.import("ex/copy", {{"events", lines}});
    REQUIRE_FALSE(again);
    CHECK(again.error().error_code() == code::already_exists);
  }
  SUBCASE("an altered line is refused, naming its seq") {
    json forged = lines;
    REQUIRE(forged[4]["type"] == "state_changed");
    forged[4]["data"]["total"] = 1000;
    auto r = n.import("ex/forged", {{"events", forged}});
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(r.error().message(), "seq 5"), r.error().message());
    CHECK(code_of(n.try_view("ex/forged")) == code::not_found);
  }
  SUBCASE("an altered hash is refused too") {
    json forged = lines;
    forged[2]["hash"] = std::string(64, 'a');
    auto r = n.import("ex/forged", {{"events", forged}});
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(r.error().message(), "seq 3"), r.error().message());
  }
  SUBCASE("a ledger with a gap is refused") {
    json gap = lines;
    gap.erase(gap.begin() + 5);
    auto r = n.import("ex/gap", {{"events", gap}});
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(r.error().message(), "seq 7"), r.error().message());
    CHECK(code_of(n.try_view("ex/gap")) == code::not_found);
  }
  SUBCASE("an export stripped of its chain is refused, or loaded only as unverified") {
    // Without hash and prev a line can say anything: this one was altered.
    json stripped = lines;
    for (auto& l : stripped) {
      l.erase("hash");
      l.erase("prev");
    }
    json altered = stripped;
    altered[4]["data"]["total"] = 1000;
    auto r = n.import("ex/stripped", {{"events", altered}});
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK_MESSAGE(contains(r.error().message(), "line 1 has no \"hash\""), r.error().message());
    CHECK(code_of(n.try_view("ex/stripped")) == code::not_found);

    // On the operator's word it loads; audit never calls it intact.
    auto u = n.import("ex/stripped", {{"events", stripped}, {"unverified", true}});
    REQUIRE_MESSAGE(u, u.error().to_string());
    auto a = n.audit("ex/stripped");
    CHECK(!a.intact());
    CHECK(a.unverified);
    CHECK(a.chain.intact);  // the chain made at the import checks out
    // Once loaded it stays so, across a restart.
    n.restart();
    CHECK(n.audit("ex/stripped").unverified);
  }
  SUBCASE("a line whose prev does not link to the line before is refused") {
    json relinked = lines;
    relinked[3]["prev"] = relinked[1]["hash"];
    auto r = n.import("ex/relinked", {{"events", relinked}});
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(contains(r.error().message(), "seq 4 does not link"), r.error().message());
  }
  SUBCASE("a ledger that does not start with the spawn is refused") {
    json headless = lines;
    headless.erase(headless.begin());
    for (std::size_t i = 0; i < headless.size(); ++i) headless[i]["seq"] = i + 1;
    auto r = n.import("ex/headless", {{"events", headless}});
    REQUIRE_FALSE(r);
    CHECK(r.error().error_code() == code::invalid_argument);
  }
}

// --- compaction ----------------------------------------------------------------------

TEST_CASE("compaction archives a prefix and the agent, audit and replay go on from it") {
  test_node n;
  n.spawn("cp/1");
  // A query by message, which the counter only records (one event), so
  // that seq 11 begins a decision: the adds take two events each, 3..22.
  n.send("cp/1", {{"get", true}});
  for (int i = 1; i <= 10; ++i) n.send("cp/1", {{"add", i}});
  const auto before = n.ledger("cp/1");
  REQUIRE(before.size() == 22);
  REQUIRE(before[10].type == "message_received");

  auto c = n.node->ledgers().compact("cp/1", 11);
  REQUIRE_MESSAGE(c, c.error().to_string());
  CHECK(c->archived == 10);
  CHECK(c->compacted_seq == 10);
  CHECK(c->head == before[9].hash);

  // The archive: a header, then the ten events as exported.
  const std::string path = c->archive;
  REQUIRE(std::filesystem::exists(path));
  std::ifstream in(path);
  std::vector<json> archive;
  for (std::string line; std::getline(in, line);) archive.push_back(json::parse(line));
  REQUIRE(archive.size() == 11);
  CHECK(archive[0]["archive"] == 1);
  CHECK(archive[0]["agent"] == "cp/1");
  CHECK(archive[0]["from"] == 1);
  CHECK(archive[0]["through"] == 10);
  for (std::size_t i = 1; i < archive.size(); ++i) CHECK(archive[i] == line_of(before[i - 1]));

  auto after = n.ledger("cp/1");
  REQUIRE(after.size() == 12);
  CHECK(after.front().seq == 11);
  CHECK(after.front().hash == before[10].hash);
  CHECK(n.view("cp/1").compacted_seq == 10);
  CHECK(n.total("cp/1") == 55);

  auto a = n.audit("cp/1");
  CHECK(a.intact());
  CHECK(a.chain.first_seq == 11);
  CHECK(a.chain.last_seq == 22);
  CHECK(a.chain.events == 12);
  CHECK(a.compacted_seq == 10);
  CHECK(a.anchor == before[9].hash);
  CHECK(a.chain.head == before.back().hash);

  auto r = n.node->ledgers().replay("cp/1", json::object());
  REQUIRE_MESSAGE(r, r.error().to_string());
  REQUIRE(r->strict);
  CHECK(r->identical());
  CHECK(r->from_seq == 11);
  CHECK(r->strict->events == 12);

  SUBCASE("compacting what is compacted, or the last event, is refused") {
    for (uint64_t b : {uint64_t{11}, uint64_t{5}, uint64_t{23}, uint64_t{100}}) {
      CAPTURE(b);
      auto again = n.node->ledgers().compact("cp/1", b);
      REQUIRE_FALSE(again);
      CHECK(again.error().error_code() == code::invalid_argument);
    }
    auto none = n.node->ledgers().compact("cp/none", 2);
    REQUIRE_FALSE(none);
    CHECK(none.error().error_code() == code::not_found);
    // Forks copy whole histories: not from a compacted ledger.
    auto f = n.node->ledgers().fork_source_of("cp/1", 15, false);
    REQUIRE_FALSE(f);
    CHECK(f.error().error_code() == code::invalid_argument);
  }
  SUBCASE("the agent goes on after a restart and a hibernation") {
    n.restart();
    CHECK(n.send("cp/1", {{"add", 100}}).body == json{{"total", 155}});
    n.cfg.idle_ms = 20;
    n.restart();
    CHECK(n.send("cp/1", {{"add", 1}}).body == json{{"total", 156}});
    REQUIRE(eventually([&] { return n.node->live_agents() == 0; }));
    auto v = n.view("cp/1");
    CHECK(v.hibernated);
    CHECK(v.state.value("total", 0) == 156);
    CHECK(v.compacted_seq == 10);
    CHECK(n.send("cp/1", {{"add", 4}}).body == json{{"total", 160}});
    auto a2 = n.audit("cp/1");
    CHECK(a2.intact());
    CHECK(a2.chain.first_seq == 11);
    CHECK(a2.chain.events == 18);
    auto r2 = n.node->ledgers().replay("cp/1", json::object());
    REQUIRE(r2);
    CHECK(r2->identical());

    // A second compaction continues the archive's chain.
    auto c2 = n.node->ledgers().compact("cp/1", 23);
    REQUIRE_MESSAGE(c2, c2.error().to_string());
    CHECK(c2->archived == 12);
    std::ifstream in2(c2->archive);
    std::string header;
    REQUIRE(std::getline(in2, header));
    CHECK(json::parse(header)["prev"] == before[9].hash);
    CHECK(json::parse(header)["from"] == 11);
    auto a3 = n.audit("cp/1");
    CHECK(a3.intact());
    CHECK(a3.chain.first_seq == 23);
    CHECK(a3.chain.head == a2.chain.head);
    n.restart();
    CHECK(n.total("cp/1") == 160);
    CHECK(n.send("cp/1", {{"add", 1}}).body == json{{"total", 161}});
    auto r3 = n.node->ledgers().replay("cp/1", json::object());
    REQUIRE(r3);
    CHECK(r3->identical());
    CHECK(r3->from_seq == 23);
  }
}

TEST_CASE("a compaction or a fork inside a step is refused") {
  test_node n;
  n.spawn("cp/mid");
  n.send("cp/mid", {{"add", 1}});
  n.send("cp/mid", {{"add", 2}});
  const auto l = n.ledger("cp/mid");
  REQUIRE(l[3].type == "message_received");
  // Before 5 would archive the message at seq 4 and keep its state_changed.
  auto c = n.node->ledgers().compact("cp/mid", 5);
  REQUIRE_FALSE(c);
  CHECK(c.error().error_code() == code::invalid_argument);
  CHECK_MESSAGE(contains(c.error().message(), "inside a step"), c.error().message());
  CHECK(n.ledger("cp/mid").size() == l.size());
  CHECK(n.audit("cp/mid").chain.first_seq == 1);
  CHECK(n.view("cp/mid").compacted_seq == 0);
  auto f = n.node->ledgers().fork_source_of("cp/mid", 4, false);
  REQUIRE_FALSE(f);
  CHECK(f.error().error_code() == code::invalid_argument);
  // One seq later both are fine.
  auto ok = n.node->ledgers().compact("cp/mid", 4);
  REQUIRE_MESSAGE(ok, ok.error().to_string());
  CHECK(n.audit("cp/mid").chain.first_seq == 4);
}

// --- replay --------------------------------------------------------------------------

namespace {

// A node with the "desk" type: the scripted model proposes lookup(order 7),
// then answers; the lookup tool runs in process.
struct desk_node {
  std::unique_ptr<test_node> n;
  explicit desk_node(uint32_t idle_ms = 60'000) {
    // The script lives in the node's temp dir; the type needs its path, so
    // the node starts again with it.
    n = std::make_unique<test_node>(idle_ms);
    const std::string script = n->write_script(
        "desk.json",
        json::array(
            {{{"tool_calls", json::array({{{"name", "lookup"}, {"arguments", {{"order", 7}}}}})}},
             {{"content", "order 7 shipped"}}}));
    n->types = {loop_spec("desk", "scripted", script, {tool("lookup", config::tool_kind::http)})};
    n->restart();
  }
  // Spawns `name` and runs one turn to its end.
  std::vector<actors::ledger_entry> one_turn(const std::string& name) {
    n->spawn(name, "desk");
    auto s = n->send_later(name, "where is order 7?");
    REQUIRE_MESSAGE(s, s.error().to_string());
    n->wait_view(
        name, [](const actors::agent_view& v) { return v.state.value("turns", 0) >= 1; },
        "the first turn");
    auto l = n->ledger(name);
    REQUIRE_MESSAGE(count_of(l, "turn_completed") == 1, summary(l));
    REQUIRE_MESSAGE(count_of(l, "model_replied") == 2, summary(l));
    return l;
  }
};

std::string last_answer(const std::vector<agent::trace_step>& steps) {
  std::string answer;
  for (const auto& s : steps)
    if (s.kind == "answer") answer = s.text;
  return answer;
}

}  // namespace

TEST_CASE("a loop agent replays identically, and a what-if answers differently") {
  desk_node d;
  test_node& n = *d.n;
  const auto l = d.one_turn("rp/1");
  CHECK(n.view("rp/1").state["last"]["answer"] == "order 7 shipped");
  const std::size_t tool_calls = n.tools->count();
  CHECK(tool_calls == 1);

  auto strict = n.node->ledgers().replay("rp/1", json::object());
  REQUIRE_MESSAGE(strict, strict.error().to_string());
  REQUIRE(strict->strict);
  CHECK(strict->identical());
  CHECK(strict->strict->events == l.size());
  CHECK_FALSE(strict->strict->diverged);

  // The second model reply says something else.
  const uint64_t last_reply = first_seq_of(l, "model_replied", first_seq_of(l, "model_replied"));
  REQUIRE(last_reply > 0);
  auto w = n.node->ledgers().replay(
      "rp/1", {{"overrides", {{std::to_string(last_reply), {{"content", "order 7 is lost"}}}}}});
  REQUIRE_MESSAGE(w, w.error().to_string());
  REQUIRE(w->what_if);
  CHECK(w->what_if->stopped == "");
  CHECK(w->what_if->prefix.identical);
  CHECK(last_answer(w->what_if->original) == "order 7 shipped");
  CHECK(last_answer(w->what_if->replayed) == "order 7 is lost");
  bool lost = false;
  for (const auto& e : w->what_if->events)
    if (e.ev.type == agent::event_type::turn_completed)
      lost = e.ev.data["answer"] == "order 7 is lost";
  CHECK(lost);

  // Replays run nothing and write nothing.
  CHECK(n.tools->count() == tool_calls);
  CHECK(n.ledger("rp/1").size() == l.size());

  SUBCASE("an override of an event that is no effect's outcome is refused") {
    auto bad = n.node->ledgers().replay("rp/1", {{"overrides", {{"1", {{"content", "x"}}}}}});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().error_code() == code::invalid_argument);
    auto policy = n.node->ledgers().replay(
        "rp/1", {{"overrides", {{std::to_string(last_reply), {{"content", "x"}}}}},
                 {"policy", "sometimes"}});
    REQUIRE_FALSE(policy);
    CHECK(policy.error().error_code() == code::invalid_argument);
  }
  SUBCASE("a what-if whose new call has no recorded answer stops under policy stop") {
    const uint64_t first_reply = first_seq_of(l, "model_replied");
    auto s = n.node->ledgers().replay(
        "rp/1",
        {{"overrides",
          {{std::to_string(first_reply),
            {{"tool_calls", json::array({{{"name", "lookup"}, {"arguments", {{"order", 8}}}}})}}}}},
         {"policy", "stop"}});
    REQUIRE_MESSAGE(s, s.error().to_string());
    REQUIRE(s->what_if);
    CHECK(s->what_if->stopped != "");
    CHECK(s->what_if->replayed.back().kind == "stopped");
    CHECK(n.tools->count() == tool_calls);
  }
}

// --- fork ----------------------------------------------------------------------------

TEST_CASE("a fork with an override shares its parent's prefix and goes on live") {
  desk_node d;
  test_node& n = *d.n;
  const auto parent = d.one_turn("fk/p");
  const uint64_t at = first_seq_of(parent, "model_replied");
  REQUIRE(at > 2);

  auto src = n.node->ledgers().fork_source_of("fk/p", at, true);
  REQUIRE_MESSAGE(src, src.error().to_string());
  CHECK(src->type == "desk");
  REQUIRE(src->events.size() == at - 1);
  CHECK(src->replaced["seq"] == at);
  CHECK(src->replaced["type"] == "model_replied");
  for (uint64_t i = 0; i < at - 1; ++i) CHECK(src->events[i] == line_of(parent[i]));

  const json replacement = {
      {"tool_calls", json::array({{{"name", "lookup"}, {"arguments", {{"order", 8}}}}})}};
  auto v = n.import("fk/c", {{"events", src->events},
                             {"origin", "fork"},
                             {"parent", "fk/p"},
                             {"at", at},
                             {"by", "tester"},
                             {"replacement", replacement},
                             {"replaced", src->replaced}});
  REQUIRE_MESSAGE(v, v.error().to_string());
  CHECK(v->origin == persistence::agent_origin::forked);
  CHECK(v->parent == "fk/p");
  CHECK(v->fork_seq == at);

  // The fork runs the replacement's call, then asks the model again (the
  // script's second reply) and ends its turn.
  n.wait_view(
      "fk/c", [](const actors::agent_view& a) { return a.state.value("turns", 0) >= 1; },
      "the fork's turn");
  const auto child = n.ledger("fk/c");
  REQUIRE_MESSAGE(child.size() > at, summary(child));
  // Its own history begins at `at`: where it came from, then the override.
  CHECK(child[at - 1].type == "fork_started");
  CHECK(child[at - 1].data["parent"] == "fk/p");
  CHECK(child[at - 1].data["at"] == at);
  CHECK(child[at - 1].data["by"] == "tester");
  const uint64_t replied = first_seq_of(child, "model_replied", at - 1);
  REQUIRE_MESSAGE(replied == at + 1, summary(child));
  CHECK(child[replied - 1].data["tool_calls"][0]["arguments"] == json{{"order", 8}});
  const uint64_t started = first_seq_of(child, "effect_started", replied);
  REQUIRE_MESSAGE(started > at, summary(child));
  CHECK(child[started - 1].data["arguments"] == json{{"order", 8}});
  CHECK(first_seq_of(child, "turn_completed", started) > started);
  CHECK(n.view("fk/c").state["last"]["answer"] == "order 7 shipped");
  {
    std::lock_guard lk(n.tools->mu);
    REQUIRE(n.tools->seen.size() == 2);
    CHECK(n.tools->seen[1] == json{{"order", 8}});
  }
  for (uint64_t i = 0; i + 1 < at; ++i) {
    CAPTURE(i);
    CHECK(child[i].hash == parent[i].hash);
  }
  CHECK(child[at - 1].prev == parent[at - 2].hash);
  CHECK(child[at - 1].hash != parent[at - 1].hash);
  CHECK(n.audit("fk/c").intact());
  CHECK(n.ledger("fk/p").size() == parent.size());  // the parent is untouched

  // The parent records the relation.
  auto rep = n.signal("fk/p", "forked", {{"as", "fk/c"}, {"at", at}, {"by", "tester"}});
  CHECK(rep.ok);
  auto pv = n.view("fk/p");
  CHECK(pv.forks == json::array({{{"name", "fk/c"}, {"at", at}}}));
  CHECK(n.ledger("fk/p").back().type == "forked");
  CHECK(n.audit("fk/p").intact());

  SUBCASE("fork points outside the ledger are refused") {
    const uint64_t last = n.ledger("fk/p").back().seq;
    const std::vector<std::pair<uint64_t, bool>> points = {
        {0, false}, {last + 1, false}, {last + 50, true}, {1, true}};
    for (const auto& [point, with] : points) {
      CAPTURE(point);
      auto bad = n.node->ledgers().fork_source_of("fk/p", point, with);
      REQUIRE_FALSE(bad);
      CHECK(bad.error().error_code() == code::invalid_argument);
    }
    auto none = n.node->ledgers().fork_source_of("fk/none", 2, false);
    REQUIRE_FALSE(none);
    CHECK(none.error().error_code() == code::not_found);
    // A replacement that does not fit the replaced event is refused.
    auto wrong = n.import("fk/bad", {{"events", src->events},
                                     {"origin", "fork"},
                                     {"parent", "fk/p"},
                                     {"at", at},
                                     {"replacement", {{"result", 1}}},
                                     {"replaced", src->replaced}});
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().error_code() == code::invalid_argument);
  }
}

TEST_CASE("a hibernated agent can be forked, and the fork goes on live") {
  test_node n(/*idle_ms=*/20);
  n.spawn("hf/p");
  for (int i = 1; i <= 3; ++i) n.send("hf/p", {{"add", i}});
  const auto parent = n.ledger("hf/p");
  REQUIRE(parent.size() == 7);
  REQUIRE(eventually([&] { return n.node->live_agents() == 0; }));

  auto src = n.node->ledgers().fork_source_of("hf/p", 5, false);
  REQUIRE_MESSAGE(src, src.error().to_string());
  REQUIRE(src->events.size() == 5);
  CHECK(src->replaced.is_null());
  CHECK(src->bytes > 0);
  auto v = n.import("hf/c", {{"events", src->events},
                             {"origin", "fork"},
                             {"parent", "hf/p"},
                             {"at", 5},
                             {"by", "tester"}});
  REQUIRE_MESSAGE(v, v.error().to_string());
  CHECK(v->origin == persistence::agent_origin::forked);
  CHECK(v->state.value("total", -1) == 3);  // 1 + 2: the state at seq 5
  CHECK(n.send("hf/c", {{"add", 10}}).body == json{{"total", 13}});
  const auto child = n.ledger("hf/c");
  REQUIRE_MESSAGE(child.size() == 8, summary(child));
  for (std::size_t i = 0; i < 5; ++i) CHECK(child[i].hash == parent[i].hash);
  CHECK(child[5].type == "fork_started");
  CHECK(child[5].prev == parent[4].hash);
  CHECK(n.audit("hf/c").intact());

  // The parent, dormant, wakes to record the fork and is otherwise as it was.
  REQUIRE(eventually([&] { return n.node->live_agents() == 0; }));
  CHECK(n.signal("hf/p", "forked", {{"as", "hf/c"}, {"at", uint64_t{5}}, {"by", "tester"}}).ok);
  auto pv = n.view("hf/p");
  CHECK(pv.state.value("total", -1) == 6);
  CHECK(pv.forks == json::array({{{"name", "hf/c"}, {"at", 5}}}));
  CHECK(n.audit("hf/p").intact());
}

// --- pause and resume ----------------------------------------------------------------

TEST_CASE("a paused counter holds its messages until resumed, also across a restart") {
  test_node n;
  n.spawn("pz/1", "counter", {{"total", 10}});
  auto p = n.signal("pz/1", "pause", {{"by", "op"}});
  REQUIRE(p.ok);
  CHECK(p.body == json{{"paused", true}});
  // A second pause is refused before it is recorded.
  const std::size_t events = n.ledger("pz/1").size();
  auto twice = n.refused_signal("pz/1", "pause", {{"by", "op"}});
  CHECK(twice.error_code() == code::conflict);
  CHECK(twice.message() == "agent pz/1 is already paused");
  CHECK(n.ledger("pz/1").size() == events);
  CHECK(n.view("pz/1").paused);
  const uint64_t paused_at = first_seq_of(n.ledger("pz/1"), "paused");
  REQUIRE(paused_at > 0);

  auto first = n.send_later("pz/1", {{"add", 1}});
  auto second = n.send_later("pz/1", {{"add", 2}});
  REQUIRE_MESSAGE(first, first.error().to_string());
  REQUIRE_MESSAGE(second, second.error().to_string());
  CHECK(second->seq > first->seq);
  // Reads still answer, from the state before the held messages.
  CHECK(n.query("pz/1", {{"get", true}}) == json{{"total", 10}});
  auto v = n.view("pz/1");
  CHECK(v.paused);
  CHECK(v.state.value("total", -1) == 10);
  CHECK_FALSE(first->reply->wait(std::chrono::milliseconds(0)).has_value());
  CHECK(count_of(n.ledger("pz/1"), "message_received") == 0);
  auto third = n.send_later("pz/1", {{"add", 4}});
  REQUIRE(third);

  auto check_applied_in_order = [&] {
    const auto l = n.ledger("pz/1");
    const uint64_t resumed = first_seq_of(l, "resumed");
    REQUIRE_MESSAGE(resumed > paused_at, summary(l));
    std::vector<int64_t> totals;
    for (const auto& e : l) {
      if (e.type == "message_received") CHECK(e.seq > resumed);
      if (e.type == "state_changed") totals.push_back(e.data["total"].get<int64_t>());
    }
    CHECK(totals == std::vector<int64_t>{11, 13, 17});
  };

  SUBCASE("resume applies them in order and answers them") {
    auto r = n.signal("pz/1", "resume", {{"by", "op"}});
    REQUIRE(r.ok);
    CHECK(r.body == json{{"paused", false}});
    auto a = first->reply->wait();
    auto b = second->reply->wait();
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(*a);
    REQUIRE(*b);
    CHECK((*a)->body == json{{"total", 11}});
    CHECK((*b)->body == json{{"total", 13}});
    REQUIRE(eventually([&] { return n.total("pz/1") == 17; }));
    check_applied_in_order();
    auto again = n.refused_signal("pz/1", "resume", {{"by", "op"}});
    CHECK(again.error_code() == code::conflict);
    CHECK(again.message() == "agent pz/1 is not paused");
    CHECK(n.send("pz/1", {{"add", 3}}).body == json{{"total", 20}});
  }
  SUBCASE("the pause and the held messages survive a restart") {
    n.restart();
    auto after = n.view("pz/1");
    CHECK(after.paused);
    CHECK(after.state.value("total", -1) == 10);
    CHECK(count_of(n.ledger("pz/1"), "message_received") == 0);
    // Still held while paused after the restart.
    auto fourth = n.send_later("pz/1", {{"add", 8}});
    REQUIRE(fourth);
    CHECK(n.total("pz/1") == 10);
    REQUIRE(n.signal("pz/1", "resume", {{"by", "op"}}).ok);
    REQUIRE(eventually([&] { return n.total("pz/1") == 25; }));
    auto t = fourth->reply->wait();
    REQUIRE(t);
    REQUIRE(*t);
    CHECK((*t)->body == json{{"total", 25}});
    const auto l = n.ledger("pz/1");
    std::vector<int64_t> totals;
    for (const auto& e : l)
      if (e.type == "state_changed") totals.push_back(e.data["total"].get<int64_t>());
    CHECK(totals == std::vector<int64_t>{11, 13, 17, 25});
  }
  CHECK(n.audit("pz/1").intact());
}

TEST_CASE("a loop agent paused during a tool call records the result but calls no model") {
  // Declared before the node, which may call the model until it stops.
  std::atomic<bool> resumed_before_second_call{false};
  test_node n;
  n.types = {loop_spec("clerk", "fake", "", {tool("charge", config::tool_kind::worker)})};
  n.restart();
  n.model->reply = [&](const json&, uint64_t i) {
    if (i == 0) return tool_call_reply("charge", {{"amount", 5}});
    // Called on an effect thread: the ledger must already say "resumed".
    auto l = n.node->ledger("pw/1", 1, 10'000);
    resumed_before_second_call = l && first_seq_of(l->events, "resumed") > 0;
    return text_reply("charged");
  };
  n.spawn("pw/1", "clerk");
  REQUIRE(n.send_later("pw/1", "charge it"));
  n.wait_view(
      "pw/1", [](const actors::agent_view& v) { return v.phase == "waiting_worker"; },
      "the worker call");
  std::optional<actors::task_view> task;
  REQUIRE(eventually([&] { return (task = n.node->poll_task("q", "w1")).has_value(); }));
  CHECK(n.model->calls.load() == 1);

  REQUIRE(n.signal("pw/1", "pause", {{"by", "op"}}).ok);
  future_value<result<json>> done;
  n.node->complete_task(task->id, "w1", {true, {{"charged", 5}}, "", false},
                        [&done](result<json> r) { done.set(std::move(r)); });
  auto d = done.wait();
  REQUIRE(d);
  REQUIRE_MESSAGE(*d, d->error().to_string());

  // The result is recorded and the next model call decided (its
  // model_requested is durable), but the call itself is held.
  auto v = n.view("pw/1");
  CHECK(v.paused);
  CHECK(v.phase == "thinking");
  auto l = n.ledger("pw/1");
  const uint64_t completed = first_seq_of(l, "effect_completed");
  REQUIRE_MESSAGE(completed > 0, summary(l));
  const uint64_t requested = first_seq_of(l, "model_requested", completed);
  CHECK_MESSAGE(requested > completed, summary(l));
  CHECK_MESSAGE(first_seq_of(l, "model_replied", completed) == 0, summary(l));
  CHECK(n.model->calls.load() == 1);
  CHECK(n.query("pw/1", json::object())["phase"] == "thinking");
  CHECK(n.model->calls.load() == 1);

  REQUIRE(n.signal("pw/1", "resume", {{"by", "op"}}).ok);
  n.wait_view(
      "pw/1", [](const actors::agent_view& a) { return a.state.value("turns", 0) >= 1; },
      "the turn after resume");
  CHECK(n.model->calls.load() == 2);
  CHECK(resumed_before_second_call.load());
  l = n.ledger("pw/1");
  const uint64_t resumed = first_seq_of(l, "resumed");
  CHECK(resumed > requested);
  CHECK_MESSAGE(first_seq_of(l, "model_replied", completed) > resumed, summary(l));
  CHECK(n.view("pw/1").state["last"]["answer"] == "charged");
  CHECK(n.audit("pw/1").intact());
}

// --- snapshot extras -----------------------------------------------------------------

TEST_CASE("a snapshot keeps the pause and the forks, with and without blobs") {
  agent::agent_state s;
  s.type = "counter";
  s.last_seq = 42;
  s.last_arrival = 17;
  s.next_timer_id = 3;
  s.timers[2] = {1'700'000'000'000, {{"add", 1}}};
  s.data = {{"total", 9}};

  auto plain = actors::snapshot_record(s, 5);
  CHECK((plain.type & actors::snapshot_extras_flag) == 0);

  s.paused = true;
  s.forks = {{"a/fork", 3}, {"b/fork", 40}};
  auto rec = actors::snapshot_record(s, 5);
  CHECK((rec.type & actors::snapshot_extras_flag) != 0);
  CHECK(rec.payload.size() > plain.payload.size());
  auto back = actors::snapshot_from_record(rec, "snap");
  REQUIRE_MESSAGE(back, back.error().to_string());
  CHECK(*back == s);
  CHECK(back->paused);
  REQUIRE(back->forks.size() == 2);
  CHECK(back->forks[1] == agent::fork_ref{"b/fork", 40});

  SUBCASE("only forks") {
    s.paused = false;
    auto r = actors::snapshot_from_record(actors::snapshot_record(s, 5), "snap");
    REQUIRE(r);
    CHECK(*r == s);
  }
  SUBCASE("with blobs") {
    s.data["conversation"] = json::array({{{"role", "tool"}, {"content", std::string(2000, 'c')}}});
    actors::blob_list blobs;
    auto r = actors::snapshot_record(s, 5, &blobs);
    REQUIRE(blobs.size() == 1);
    CHECK(r.type == (actors::snapshot_with_blobs_type | actors::snapshot_extras_flag));
    std::map<std::string, std::string> m(blobs.begin(), blobs.end());
    auto b = actors::snapshot_from_record(r, "snap", map_reader(m));
    REQUIRE_MESSAGE(b, b.error().to_string());
    CHECK(*b == s);
  }
}

TEST_CASE("a paused agent with forks hibernates and wakes paused, with its forks") {
  test_node n(/*idle_ms=*/20);
  n.spawn("hx/p", "counter", {{"total", 1}});
  n.send("hx/p", {{"add", 1}});
  auto src = n.node->ledgers().fork_source_of("hx/p", 3, false);
  REQUIRE_MESSAGE(src, src.error().to_string());
  auto fv = n.import("hx/c", {{"events", src->events},
                              {"origin", "fork"},
                              {"parent", "hx/p"},
                              {"at", 3},
                              {"by", "tester"}});
  REQUIRE_MESSAGE(fv, fv.error().to_string());
  REQUIRE(n.signal("hx/p", "forked", {{"as", "hx/c"}, {"at", uint64_t{3}}, {"by", "tester"}}).ok);
  REQUIRE(n.signal("hx/p", "pause", {{"by", "op"}}).ok);

  REQUIRE(eventually([&] { return n.node->live_agents() == 0; }));
  auto v = n.view("hx/p");
  CHECK(v.hibernated);
  CHECK(v.paused);
  CHECK(v.forks == json::array({{{"name", "hx/c"}, {"at", 3}}}));
  CHECK(v.state.value("total", -1) == 2);

  SUBCASE("woken while the node runs") {}
  SUBCASE("woken after a restart, from the snapshot on disk") {
    REQUIRE(eventually([&] { return n.node->live_agents() == 0; }));
    n.stop();
    {
      auto db = open_store(n.cfg.data_dir);
      auto meta = db->get_agent("hx/p");
      REQUIRE(meta);
      REQUIRE(meta->has_value());
      REQUIRE((**meta).snapshot_seq == 7);
      auto snap = db->read_snapshot((**meta).id, (**meta).snapshot_seq, "hx/p");
      REQUIRE(snap);
      REQUIRE(snap->has_value());
      CHECK(((**snap).type & actors::snapshot_extras_flag) != 0);
      auto st = actors::snapshot_from_record(**snap, "snap", actors::store_blobs(*db));
      REQUIRE_MESSAGE(st, st.error().to_string());
      CHECK(st->paused);
      CHECK(st->forks == std::vector<agent::fork_ref>{{"hx/c", 3}});
    }
    n.start();
    auto w = n.view("hx/p");
    CHECK(w.hibernated);
    CHECK(w.paused);
    CHECK(w.forks.size() == 1);
  }

  // Still paused: a message waits; the resume releases it.
  auto held = n.send_later("hx/p", {{"add", 5}});
  REQUIRE_MESSAGE(held, held.error().to_string());
  CHECK(n.total("hx/p") == 2);
  REQUIRE(n.signal("hx/p", "resume", {{"by", "op"}}).ok);
  REQUIRE(eventually([&] { return n.total("hx/p") == 7; }));
  auto after = n.view("hx/p");
  CHECK_FALSE(after.paused);
  CHECK(after.forks == json::array({{{"name", "hx/c"}, {"at", 3}}}));
  CHECK(n.audit("hx/p").intact());
  auto r = n.node->ledgers().replay("hx/p", json::object());
  REQUIRE(r);
  CHECK(r->identical());
}

// A paused agent that hibernates with held messages is not marked clean,
// so its next activation reads the inbox and the resume releases them.
TEST_CASE("messages held by a paused agent are applied on resume after it hibernated") {
  test_node n(/*idle_ms=*/20);
  n.spawn("hm/1", "counter", {{"total", 1}});
  REQUIRE(n.signal("hm/1", "pause", {{"by", "op"}}).ok);
  auto held = n.send_later("hm/1", {{"add", 5}});
  REQUIRE_MESSAGE(held, held.error().to_string());
  REQUIRE(eventually([&] { return n.node->live_agents() == 0; }));
  REQUIRE(n.signal("hm/1", "resume", {{"by", "op"}}).ok);
  const bool applied =
      eventually([&] { return n.total("hm/1") == 6; }, std::chrono::milliseconds(3'000));
  CHECK_MESSAGE(applied, "the held message was not applied:\n" << summary(n.ledger("hm/1")));
}

// --- guards found in review ------------------------------------------------------------

TEST_CASE("a cancel while paused ends the held call unrun, and resume does not start it") {
  test_node n;
  n.types = {loop_spec("clerk", "fake", "", {tool("charge", config::tool_kind::worker)})};
  n.restart();
  n.model->reply = [](const json&, uint64_t i) {
    return i == 0 ? tool_call_reply("charge", {{"amount", 5}}) : text_reply("charged");
  };
  n.spawn("pc/1", "clerk");
  REQUIRE(n.send_later("pc/1", "charge it"));
  n.wait_view(
      "pc/1", [](const actors::agent_view& v) { return v.phase == "waiting_worker"; },
      "the worker call");
  std::optional<actors::task_view> task;
  REQUIRE(eventually([&] { return (task = n.node->poll_task("q", "w1")).has_value(); }));
  REQUIRE(n.signal("pc/1", "pause", {{"by", "op"}}).ok);
  future_value<result<json>> done;
  n.node->complete_task(task->id, "w1", {true, {{"charged", 5}}, "", false},
                        [&done](result<json> r) { done.set(std::move(r)); });
  auto d = done.wait();
  REQUIRE(d);
  REQUIRE(*d);
  // The next model call is decided and held.
  REQUIRE(n.view("pc/1").phase == "thinking");
  auto c = n.signal("pc/1", "cancel", {{"by", "op"}});
  CHECK(c.ok);
  auto l = n.ledger("pc/1");
  const uint64_t cancel = first_seq_of(l, "signal_received", first_seq_of(l, "paused"));
  REQUIRE_MESSAGE(cancel > 0, summary(l));
  const uint64_t failed = first_seq_of(l, "effect_failed", cancel);
  REQUIRE_MESSAGE(failed > cancel, summary(l));
  CHECK(l[failed - 1].data["error"] == "cancelled while paused: never started");
  REQUIRE(n.signal("pc/1", "resume", {{"by", "op"}}).ok);
  n.wait_view(
      "pc/1", [](const actors::agent_view& v) { return v.state.value("turns", 0) >= 1; },
      "the cancelled turn's end");
  CHECK(n.view("pc/1").state["last"]["status"] == "cancelled");
  // Only the first model call was ever made.
  CHECK(n.model->calls.load() == 1);
}

TEST_CASE("a paused agent that is terminated refuses what it held instead of keeping it") {
  test_node n;
  n.spawn("pt/1");
  REQUIRE(n.signal("pt/1", "pause", {{"by", "op"}}).ok);
  auto held = n.send_later("pt/1", {{"add", 5}});
  REQUIRE(held);
  future_value<result<actors::agent_view>> term;
  n.node->terminate("pt/1", "op",
                    [&term](result<actors::agent_view> v) { term.set(std::move(v)); });
  auto t = term.wait();
  REQUIRE(t);
  REQUIRE(*t);
  CHECK((*t)->status == "terminated");
  // The held message is recorded and refused, and its sender hears so.
  auto reply = held->reply->wait();
  REQUIRE(reply);
  REQUIRE(*reply);
  CHECK_FALSE((*reply)->ok);
  CHECK((*reply)->code == "conflict");
  auto l = n.ledger("pt/1");
  CHECK_MESSAGE(first_seq_of(l, "message_rejected") > first_seq_of(l, "terminated"), summary(l));
}

TEST_CASE("a compaction over an altered record is refused, so the alteration stays visible") {
  test_node n;
  n.spawn("ct/1");
  for (int i = 1; i <= 6; ++i) n.send("ct/1", {{"add", 1}});
  n.replay_check = false;  // the altered ledger cannot replay
  n.stop();
  {
    auto db = open_store(n.cfg.data_dir);
    rewrite_event_data(*db, agent_id(*db, "ct/1"), 5, [](json& d) { d["total"] = 999; });
  }
  n.start();
  auto r = n.node->ledgers().compact("ct/1", 9);
  REQUIRE_FALSE(r);
  CHECK(r.error().message().find("fails its audit") != std::string::npos);
  auto a = n.audit("ct/1");
  CHECK(!a.intact());
  CHECK(a.chain.bad_seq == 5);
}

TEST_CASE("a fork without an override where the agent waits for a worker is refused") {
  test_node n;
  n.types = {loop_spec("clerk", "fake", "", {tool("charge", config::tool_kind::worker)})};
  n.restart();
  n.model->reply = [](const json&, uint64_t) { return tool_call_reply("charge", {{"amount", 5}}); };
  n.spawn("fw/1", "clerk");
  REQUIRE(n.send_later("fw/1", "charge it"));
  n.wait_view(
      "fw/1", [](const actors::agent_view& v) { return v.phase == "waiting_worker"; },
      "the worker call");
  const uint64_t at = n.view("fw/1").last_seq;
  auto src = n.node->ledgers().fork_source_of("fw/1", at, false);
  REQUIRE_FALSE(src);
  CHECK(src.error().message().find("worker") != std::string::npos);
}
