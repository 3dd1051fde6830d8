#include "net/cluster/outbox.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "base/bytes.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "ledger/writer.hpp"
#include "persistence/keys.hpp"
#include "persistence/values.hpp"

namespace keel::net {

using json = nlohmann::json;
using persistence::family;

json to_json(const outbox_item& i) {
  json j{{"seq", i.seq},   {"name", i.name}, {"kind", to_string(i.kind)}, {"id", i.id},
         {"from", i.from}, {"body", i.body}, {"created_ms", i.created_ms}};
  if (i.wait) {
    j["wait"] = true;
    j["ref"] = i.ref;
  }
  return j;
}

result<outbox_item> outbox_item_from_json(const json& j) {
  try {
    outbox_item i;
    i.seq = j.at("seq").get<uint64_t>();
    i.name = j.at("name").get<std::string>();
    i.id = j.at("id").get<std::string>();
    i.from = j.at("from").get<std::string>();
    i.body = j.at("body");
    i.wait = j.value("wait", false);
    i.ref = j.value("ref", "");
    i.created_ms = j.value("created_ms", int64_t{0});
    const auto kind = persistence::inbox_kind_from_string(j.at("kind").get<std::string>());
    if (!kind) return error(code::invalid_argument, "outbox item kind must be message or signal");
    i.kind = *kind;
    return i;
  } catch (const json::exception& e) {
    return error(code::invalid_argument, std::string("bad outbox item: ") + e.what());
  }
}

json to_json(const delivery_ack& a) {
  if (a.ok) {
    json j{{"ok", true}, {"id", a.ack.id}, {"seq", a.ack.seq}};
    if (a.ack.duplicate) j["duplicate"] = true;
    return j;
  }
  return {{"ok", false}, {"retry", a.retry}, {"code", a.code}, {"message", a.message}};
}

result<delivery_ack> delivery_ack_from_json(const json& j) {
  try {
    delivery_ack a;
    a.ok = j.at("ok").get<bool>();
    if (a.ok) {
      a.ack.id = j.at("id").get<std::string>();
      a.ack.seq = j.at("seq").get<uint64_t>();
      a.ack.duplicate = j.value("duplicate", false);
    } else {
      a.retry = j.at("retry").get<bool>();
      a.code = j.at("code").get<std::string>();
      a.message = j.at("message").get<std::string>();
    }
    return a;
  } catch (const json::exception& e) {
    return error(code::invalid_argument, std::string("bad delivery ack: ") + e.what());
  }
}

namespace {

std::string outbox_key(uint64_t seq) {
  std::string k;
  put_u64_be(k, seq);
  return k;
}

// The group an entry lives in: a group's ids carry g + 1 in their top 16
// bits (the first two bytes of the key); the node's own entries none.
std::optional<uint32_t> group_of_seq(uint64_t seq) {
  const uint64_t top = seq >> 48;
  if (top == 0) return std::nullopt;
  return static_cast<uint32_t>(top - 1);
}

// The key prefix of group g's entries.
std::string group_prefix(uint32_t g) {
  return outbox_key(uint64_t{g + 1} << 48).substr(0, 2);
}

// Every entry whose key starts with `prefix`, in seq order.
result<std::vector<outbox_item>> load_entries(persistence::store& db, const std::string& prefix) {
  std::vector<outbox_item> loaded;
  std::string from = prefix;
  for (;;) {
    auto page = db.scan(family::outbox, prefix, from, 1024);
    if (!page) return page.error();
    for (auto& [k, v] : *page) {
      auto j = persistence::decode_object(persistence::value_type::outbox_entry, v, "outbox entry");
      if (!j) return j.error();
      auto item = outbox_item_from_json(*j);
      if (!item)
        return error(code::corruption, "outbox entry " + std::to_string(get_u64_be(k.data())) +
                                           ": " + item.error().message());
      loaded.push_back(std::move(*item));
    }
    if (page->size() < 1024) break;
    from = page->back().first + '\0';
  }
  return loaded;
}

}  // namespace

cluster_outbox::cluster_outbox(actors::node& node, owner_fn owner, up_fn up, deliver_fn deliver,
                               options opts)
    : node_(node),
      owner_(std::move(owner)),
      up_(std::move(up)),
      deliver_(std::move(deliver)),
      opts_(opts) {}

cluster_outbox::~cluster_outbox() {
  stop();
}

status cluster_outbox::start() {
  auto loaded = load_entries(node_.storage(), "");
  if (!loaded) return loaded.error();
  {
    std::lock_guard lk(mu_);
    for (auto& i : *loaded) {
      // A group's entries wait until this member leads the group.
      if (group_of_seq(i.seq)) continue;
      known_.insert(i.seq);
      ++per_name_[i.name];
      enqueue_locked(std::move(i));
    }
  }
  thread_ = std::thread([this] { run(); });
  return status::ok();
}

uint64_t cluster_outbox::lead(uint32_t g) {
  std::lock_guard lk(mu_);
  led_.insert(g);
  return ++lead_changes_[g];
}

status cluster_outbox::adopt(uint32_t g, uint64_t lead_number) {
  auto loaded = load_entries(node_.storage(), group_prefix(g));
  if (!loaded) return loaded.error();
  {
    std::lock_guard lk(mu_);
    if (stopping_ || lead_changes_[g] != lead_number) return status::ok();
    for (auto& i : *loaded) {
      if (!known_.insert(i.seq).second) continue;  // appended here meanwhile
      ++per_name_[i.name];
      enqueue_locked(std::move(i));
    }
    kick_ = true;
  }
  cv_.notify_one();
  return status::ok();
}

void cluster_outbox::release(uint32_t g) {
  std::vector<std::function<void(result<delivery_ack>)>> waiting;
  {
    std::lock_guard lk(mu_);
    led_.erase(g);
    ++lead_changes_[g];
    auto drop = [&](std::deque<outbox_item>& q) {
      for (auto it = q.begin(); it != q.end();) {
        if (group_of_seq(it->seq) != g) {
          ++it;
          continue;
        }
        known_.erase(it->seq);
        if (auto pn = per_name_.find(it->name); pn != per_name_.end() && --pn->second == 0)
          per_name_.erase(pn);
        if (auto cb = delivered_cbs_.extract(it->seq); !cb.empty())
          waiting.push_back(std::move(cb.mapped()));
        it = q.erase(it);
      }
    };
    drop(unplaced_);
    for (auto& [n, d] : by_node_) drop(d.items);
  }
  for (auto& cb : waiting)
    cb(error(code::unavailable, "the sender's group is now led by another member"));
}

bool cluster_outbox::ours_locked(uint64_t seq) const {
  auto g = group_of_seq(seq);
  return !g || led_.count(*g) != 0;
}

void cluster_outbox::write(std::optional<uint32_t> group, persistence::write_set ops, bool sync,
                           std::function<void(const status&)> done) {
  if (!group) {
    if (sync) return node_.commit(std::move(ops), std::move(done));
    return done(node_.storage().write(ops, false));
  }
  auto term = opts_.repl != nullptr ? opts_.repl->leading(*group) : std::nullopt;
  if (!term)
    return done(error(code::unavailable,
                      "this member does not lead group " + std::to_string(*group) + " now"));
  opts_.repl->propose(*group, *term, std::move(ops), std::move(done));
}

void cluster_outbox::append(outbox_item item, std::function<void(result<outbox_item>)> durable,
                            std::function<void(result<delivery_ack>)> delivered) {
  // An id that is never reused: the entry's key. Replicated, one of the
  // sender's group, so the entry is in the group's key range (and log).
  std::optional<uint32_t> group;
  if (opts_.repl != nullptr && !item.from.empty()) group = opts_.repl->group_of(item.from);
  auto seq = group ? opts_.repl->allocate_agent_id(*group) : node_.storage().allocate_agent_id();
  if (!seq) return durable(seq.error());
  item.seq = *seq;
  if (item.created_ms == 0) item.created_ms = wall_ms();
  persistence::write_set ops;
  ledger::batch_builder(ops).put_outbox_entry(outbox_key(item.seq), to_json(item), item.created_ms);
  write(group, std::move(ops), true,
        [this, item = std::move(item), durable = std::move(durable),
         delivered = std::move(delivered)](const status& s) mutable {
          if (!s) return durable(s);
          outbox_item copy = item;
          bool answer_now = false;
          {
            std::lock_guard lk(mu_);
            // Not queued here when an adopt already read it from the store,
            // or when the group is another member's by now (that member's
            // adopt reads it: it was committed before its first entry).
            if (ours_locked(item.seq) && known_.insert(item.seq).second) {
              ++per_name_[item.name];
              // A sender waits for the owner's acknowledgement only when the
              // owner can take it now; otherwise "queued" at once (the entry
              // is durable).
              if (delivered) {
                std::string owner = owner_(item.name);
                auto d = by_node_.find(owner);
                answer_now = owner.empty() || !up_(owner) ||
                             (d != by_node_.end() && d->second.next_attempt_ms > wall_ms());
                if (!answer_now) delivered_cbs_.emplace(item.seq, std::move(delivered));
              }
              enqueue_locked(std::move(item));
              kick_ = true;
            } else {
              answer_now = static_cast<bool>(delivered);
            }
          }
          cv_.notify_one();
          durable(std::move(copy));
          if (answer_now) delivered(error(code::unavailable, "the owner cannot take it now"));
        });
}

bool cluster_outbox::holds(std::string_view name) {
  std::lock_guard lk(mu_);
  return per_name_.find(name) != per_name_.end();
}

void cluster_outbox::enqueue_locked(outbox_item item) {
  std::string owner = owner_(item.name);
  if (owner.empty())
    unplaced_.push_back(std::move(item));
  else
    by_node_[owner].items.push_back(std::move(item));
}

void cluster_outbox::wake() {
  {
    std::lock_guard lk(mu_);
    rebucket_ = true;
    kick_ = true;
    for (auto& [n, d] : by_node_) d.next_attempt_ms = 0;
  }
  cv_.notify_one();
}

// Owners may have changed: every entry not in flight is sorted again by its
// owner now, keeping seq order within each destination.
void cluster_outbox::rebucket_locked() {
  std::vector<outbox_item> all(std::make_move_iterator(unplaced_.begin()),
                               std::make_move_iterator(unplaced_.end()));
  unplaced_.clear();
  for (auto& [n, d] : by_node_) {
    for (auto& i : d.items) all.push_back(std::move(i));
    d.items.clear();
  }
  std::sort(all.begin(), all.end(),
            [](const outbox_item& a, const outbox_item& b) { return a.seq < b.seq; });
  for (auto& i : all) enqueue_locked(std::move(i));
}

void cluster_outbox::run() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    if (!to_erase_.empty()) {
      std::map<std::optional<uint32_t>, persistence::write_set> by_group;
      for (auto& k : to_erase_) {
        auto g = group_of_seq(get_u64_be(k.data()));
        ledger::batch_builder(by_group[g]).erase_outbox_entry(std::move(k));
      }
      to_erase_.clear();
      lk.unlock();
      // Not fsynced: an erase lost in a crash only redelivers a message the
      // owner already has, and its dedupe absorbs that. A group's erase
      // that does not commit (leadership moved) is the same: the next
      // leader delivers the entry again.
      for (auto& [g, ops] : by_group)
        write(g, std::move(ops), false, [local = !g](const status& s) {
          if (!s && local) log::error("outbox: erase failed: " + s.message());
        });
      lk.lock();
    }
    if (rebucket_) {
      rebucket_ = false;
      bool busy = std::any_of(by_node_.begin(), by_node_.end(),
                              [](const auto& e) { return e.second.in_flight; });
      if (busy)
        rebucket_ = true;  // after the batches in flight come back
      else
        rebucket_locked();
    }
    std::vector<std::function<void(result<delivery_ack>)>> queued_now;
    int64_t now = wall_ms();
    int64_t next = now + 200;
    for (auto& [n, d] : by_node_) {
      // While a re-sort waits for the batches in flight, nothing new goes
      // out by the old owners.
      if (rebucket_) break;
      if (d.items.empty() || d.in_flight) continue;
      if (d.next_attempt_ms > now) {
        next = std::min(next, d.next_attempt_ms);
        continue;
      }
      if (!up_(n)) {
        // The owner went down with senders still waiting: "queued" now.
        answer_queued_locked(d, queued_now);
        // Peer-up events wake() us; poll rarely in case one was missed.
        d.next_attempt_ms = now + 500;
        next = std::min(next, d.next_attempt_ms);
        continue;
      }
      send_batch_locked(n, d);
    }
    if (!queued_now.empty()) {
      lk.unlock();
      for (auto& cb : queued_now) cb(error(code::unavailable, "the owner cannot be reached now"));
      lk.lock();
    }
    // kick_: something changed, possibly while the lock was released above.
    cv_.wait_until(lk,
                   std::chrono::system_clock::now() +
                       std::chrono::milliseconds(std::max<int64_t>(1, next - now)),
                   [this] { return kick_ || stopping_; });
    kick_ = false;
  }
}

void cluster_outbox::answer_queued_locked(
    destination& d, std::vector<std::function<void(result<delivery_ack>)>>& out) {
  if (delivered_cbs_.empty()) return;
  for (auto& i : d.items) {
    auto cb = delivered_cbs_.extract(i.seq);
    if (!cb.empty()) out.push_back(std::move(cb.mapped()));
  }
}

void cluster_outbox::send_batch_locked(const std::string& node, destination& d) {
  std::size_t n = std::min(d.items.size(), opts_.max_batch);
  std::vector<outbox_item> batch(std::make_move_iterator(d.items.begin()),
                                 std::make_move_iterator(d.items.begin() + n));
  d.items.erase(d.items.begin(), d.items.begin() + n);
  d.in_flight = true;
  std::vector<outbox_item> copy = batch;
  std::string to = node;
  mu_.unlock();
  deliver_(to, std::move(copy),
           [this, to, batch = std::move(batch)](result<std::vector<delivery_ack>> acks) mutable {
             on_acks(to, std::move(batch), std::move(acks));
           });
  mu_.lock();
}

void cluster_outbox::on_acks(const std::string& node, std::vector<outbox_item> batch,
                             result<std::vector<delivery_ack>> acks) {
  std::vector<std::pair<std::function<void(result<delivery_ack>)>, result<delivery_ack>>> calls;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    auto& d = by_node_[node];
    d.in_flight = false;
    std::size_t done = 0;
    if (acks && acks->size() == batch.size()) {
      for (; done < batch.size(); ++done) {
        auto& a = (*acks)[done];
        if (!a.ok && a.retry) break;  // this one and the rest go again, in order
        if (a.ok)
          ++delivered_;
        else
          ++dropped_;
        to_erase_.push_back(outbox_key(batch[done].seq));
        known_.erase(batch[done].seq);
        if (auto pn = per_name_.find(batch[done].name); pn != per_name_.end() && --pn->second == 0)
          per_name_.erase(pn);
        auto cb = delivered_cbs_.extract(batch[done].seq);
        if (!cb.empty()) calls.emplace_back(std::move(cb.mapped()), std::move(a));
      }
    }
    if (done < batch.size()) {
      std::string why = !acks                          ? acks.error().message()
                        : acks->size() != batch.size() ? "wrong number of acknowledgements"
                                                       : (*acks)[done].message;
      for (std::size_t i = done; i < batch.size(); ++i) {
        auto cb = delivered_cbs_.extract(batch[i].seq);
        if (!cb.empty())
          calls.emplace_back(std::move(cb.mapped()),
                             error(code::unavailable, "not delivered yet: " + why));
      }
      // Back to the front, in order; those of a group this member stopped
      // leading meanwhile are the next leader's now.
      std::vector<outbox_item> again;
      for (std::size_t i = done; i < batch.size(); ++i) {
        if (ours_locked(batch[i].seq)) {
          again.push_back(std::move(batch[i]));
          continue;
        }
        known_.erase(batch[i].seq);
        if (auto pn = per_name_.find(batch[i].name); pn != per_name_.end() && --pn->second == 0)
          per_name_.erase(pn);
      }
      d.items.insert(d.items.begin(), std::make_move_iterator(again.begin()),
                     std::make_move_iterator(again.end()));
      // Nothing goes to this owner before the backoff ends: senders still
      // waiting behind the batch hear "queued" now too.
      std::vector<std::function<void(result<delivery_ack>)>> behind;
      answer_queued_locked(d, behind);
      for (auto& cb : behind)
        calls.emplace_back(std::move(cb), error(code::unavailable, "not delivered yet: " + why));
      d.backoff_ms =
          d.backoff_ms == 0 ? opts_.retry_min_ms : std::min(d.backoff_ms * 2, opts_.retry_max_ms);
      d.next_attempt_ms = wall_ms() + d.backoff_ms;
    } else {
      d.backoff_ms = 0;
      d.next_attempt_ms = 0;
    }
    kick_ = true;
  }
  cv_.notify_one();
  for (auto& [cb, a] : calls) cb(std::move(a));
}

json cluster_outbox::stats() {
  std::lock_guard lk(mu_);
  json by = json::object();
  std::size_t total = unplaced_.size();
  for (auto& [n, d] : by_node_) {
    if (d.items.empty()) continue;
    by[n] = d.items.size();
    total += d.items.size();
  }
  if (!unplaced_.empty()) by["?"] = unplaced_.size();
  return {{"queued", total}, {"by_node", by}, {"delivered", delivered_}, {"dropped", dropped_}};
}

void cluster_outbox::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lk(mu_);
  delivered_cbs_.clear();
}

}  // namespace keel::net
