#pragma once
// The node's durable outbox: messages and signals for agents that live on
// other nodes. An entry is written (fsynced, through the node's journal)
// before anything else happens to it, then delivered to the agent's current
// owner in batches, in append order per destination node, with retries and
// backoff until the owner acknowledges that the message is in its durable
// inbox. Only then is the entry erased. A crash between delivery and erase
// delivers it again; the owner's dedupe by message id makes that a no-op,
// so each message takes effect exactly once.
//
// Keys: `outbox` family, seq (8 bytes big endian; never reused). Values:
// records of type outbox_entry (docs/formats.md).
//
// Replicated (options.repl set, docs/replication.md): an agent's entry
// lives in its group's log. Its seq is an id of the sender's group (the
// group in the top 16 bits, handed out like agent ids), it is written and
// erased by proposals to that group, and only the group's leader delivers
// it: adopt(g) loads a group's entries when this member starts leading it,
// release(g) forgets them when it stops. Entries without a sender, and
// those of an unreplicated node, are the node's own (seq below 1 << 48):
// written through its journal, delivered whatever it leads.
//
// Thread-safety: all methods are thread-safe. Callbacks run on the outbox's
// thread or on transport threads: quick, non-blocking.
// Lifetime: stop() joins the delivery thread; callbacks still pending are
// dropped (the entries stay on disk and are delivered after a restart).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/node.hpp"
#include "actors/replicator.hpp"
#include "base/status.hpp"

namespace keel::net {

struct outbox_item {
  uint64_t seq = 0;  // assigned by append()
  std::string name;  // the receiving agent
  persistence::inbox_kind kind = persistence::inbox_kind::message;
  std::string id;    // message id (dedupe key at the owner); signal name for signals
  std::string from;  // sender (agent name or "")
  nlohmann::json body;
  bool wait = false;  // the sender waits for the agent's reply ...
  std::string ref;    // ... and knows it by this key
  int64_t created_ms = 0;
};

// What the owner said about one delivered item.
struct delivery_ack {
  bool ok = false;
  actors::send_ack ack;  // when ok
  // When !ok: retry later (owner not serving the agent yet, stopping), or a
  // permanent refusal (no such agent, bad message) that drops the entry.
  bool retry = false;
  std::string code;
  std::string message;
};

nlohmann::json to_json(const outbox_item& i);
result<outbox_item> outbox_item_from_json(const nlohmann::json& j);
nlohmann::json to_json(const delivery_ack& a);
result<delivery_ack> delivery_ack_from_json(const nlohmann::json& j);

class cluster_outbox {
 public:
  // The node that owns `name` now ("" when unknown).
  using owner_fn = std::function<std::string(std::string_view name)>;
  // Whether a node can be sent to now.
  using up_fn = std::function<bool(const std::string& node)>;
  // Delivers `batch` (in order) to `node`; `done` gets one ack per item, in
  // order, or an error for the whole batch (nothing known delivered).
  using deliver_fn =
      std::function<void(const std::string& node, std::vector<outbox_item> batch,
                         std::function<void(result<std::vector<delivery_ack>>)> done)>;

  struct options {
    std::size_t max_batch = 512;
    uint32_t retry_min_ms = 50;
    uint32_t retry_max_ms = 5000;
    // The node's replicated groups (null: none). Outlives the outbox.
    actors::replicator* repl = nullptr;
  };

  cluster_outbox(actors::node& node, owner_fn owner, up_fn up, deliver_fn deliver, options opts);
  ~cluster_outbox();
  cluster_outbox(const cluster_outbox&) = delete;
  cluster_outbox& operator=(const cluster_outbox&) = delete;

  // Reads the node's own entries left by the last run and starts
  // delivering them (a group's wait for adopt()).
  status start();

  // Replicated, in two steps: lead(g) when this member starts leading
  // group g (quick; call it where leadership changes are ordered, the
  // raft loop), then adopt(g, the number lead returned) off that thread:
  // the group's entries are read from the store and delivered (those
  // already queued or in flight are kept as they are), unless a release(g)
  // came in between. Blocking store reads.
  uint64_t lead(uint32_t g);
  status adopt(uint32_t g, uint64_t lead_number);
  // Replicated: this member no longer leads group g; its queued entries
  // are forgotten here (they stay in the group's log for the next leader)
  // and their senders still waiting hear "queued". Quick.
  void release(uint32_t g);

  // Appends `item` durably: replicated, into the group of item.from, which
  // this member must lead (unavailable otherwise). `durable` runs once it
  // is on disk, committed in the group's log when replicated (or failed),
  // with the item's seq filled in; `delivered` (may be empty) once the owner
  // acknowledged it, refused it for good, or the first delivery attempt
  // failed (then with an unavailable error; the entry stays queued).
  void append(outbox_item item, std::function<void(result<outbox_item>)> durable,
              std::function<void(result<delivery_ack>)> delivered);

  // Something changed that may let waiting entries go: a peer came up, the
  // shard map changed (entries are re-sorted by their new owners).
  void wake();

  // {"queued": N, "by_node": {"n2": 3, ...}, "delivered": N, "dropped": N}
  nlohmann::json stats();
  // Whether an entry for agent `name` waits (queued or in flight).
  bool holds(std::string_view name);

  void stop();

 private:
  struct destination {
    std::deque<outbox_item> items;
    bool in_flight = false;
    int64_t next_attempt_ms = 0;
    uint32_t backoff_ms = 0;
  };
  void run();
  void enqueue_locked(outbox_item item);
  void rebucket_locked();
  void send_batch_locked(const std::string& node, destination& d);
  // Moves the delivered callbacks of d's queued entries to `out` (their
  // senders are told "queued").
  void answer_queued_locked(destination& d,
                            std::vector<std::function<void(result<delivery_ack>)>>& out);
  void on_acks(const std::string& node, std::vector<outbox_item> batch,
               result<std::vector<delivery_ack>> acks);
  // Writes `ops` for an entry of `group` (nullopt: the node's own) and
  // calls done: through the journal, or proposed to the group in the term
  // this member leads it in.
  void write(std::optional<uint32_t> group, persistence::write_set ops, bool sync,
             std::function<void(const status&)> done);
  // Whether an entry of this seq may be delivered from here.
  bool ours_locked(uint64_t seq) const;

  actors::node& node_;
  owner_fn owner_;
  up_fn up_;
  deliver_fn deliver_;
  options opts_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool rebucket_ = false;
  bool kick_ = false;  // work arrived since the delivery thread last looked
  std::map<std::string, destination> by_node_;
  // Items whose owner is unknown (no map yet).
  std::deque<outbox_item> unplaced_;
  std::map<uint64_t, std::function<void(result<delivery_ack>)>> delivered_cbs_;
  std::vector<std::string> to_erase_;
  std::map<std::string, std::size_t, std::less<>> per_name_;  // entries not yet erased
  std::set<uint64_t> known_;                                  // seqs queued or in flight here
  // Replicated: the groups whose entries are this member's to deliver
  // (between lead and release), and each group's count of lead/release
  // calls, so an adopt that a release overtook does nothing.
  std::set<uint32_t> led_;
  std::map<uint32_t, uint64_t> lead_changes_;
  uint64_t delivered_ = 0;
  uint64_t dropped_ = 0;
  std::thread thread_;
};

}  // namespace keel::net
