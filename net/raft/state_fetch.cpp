#include "net/raft/state_fetch.hpp"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "net/raft/io.hpp"

namespace keel::raft {

namespace {

// A reply that may arrive after the fetch stopped waiting for it.
struct reply_slot {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<result<std::string>> got;
};

constexpr auto cancel_poll = std::chrono::milliseconds(50);

}  // namespace

state_fetch::state_fetch(state_fetch_options o, std::function<void(const status&)> done)
    : opts_(std::move(o)) {
  thread_ = std::thread([this, done = std::move(done)] { done(run()); });
}

state_fetch::~state_fetch() {
  cancel_.store(true);
  thread_.join();
}

result<std::string> state_fetch::ask(const std::string& request) {
  auto slot = std::make_shared<reply_slot>();
  opts_.out->fetch(opts_.from, request, [slot](result<std::string> r) {
    std::lock_guard lk(slot->mu);
    if (!slot->got) slot->got = std::move(r);
    slot->cv.notify_all();
  });
  const auto deadline = std::chrono::steady_clock::now() + opts_.page_timeout;
  std::unique_lock lk(slot->mu);
  while (!slot->got) {
    if (cancel_.load()) return error(code::unavailable, "the fetch was cancelled");
    if (std::chrono::steady_clock::now() >= deadline)
      return error(code::unavailable, "no page from " + opts_.from + " in time");
    slot->cv.wait_for(lk, cancel_poll);
  }
  return std::move(*slot->got);
}

status state_fetch::run() {
  const std::string name = "group " + std::to_string(opts_.group) + ": ";
  KEEL_TRY(begin_state_replace(*opts_.db, opts_.group, opts_.group_of));
  fetch_request req;
  req.group = opts_.group;
  req.marker_index = opts_.marker_index;
  // Bounded: every page advances the cursor through the parts, and the
  // server ends a session after its last page.
  for (;;) {
    auto bytes = ask(encode_request(req));
    if (!bytes) return error(bytes.error().error_code(), name + bytes.error().message());
    auto page = decode_page(*bytes);
    if (!page) return error(code::corruption, name + page.error().message());
    if (req.session != 0 && page->session != req.session)
      return error(code::corruption, name + "a page of another session");
    persistence::write_set ops;
    ops.reserve(page->entries.size());
    uint64_t n = 0;
    for (auto& e : page->entries) {
      n += e.key.size() + e.value.size();
      ops.push_back({e.cf, false, std::move(e.key), std::move(e.value)});
    }
    if (!ops.empty()) KEEL_TRY(opts_.db->write(ops, false));
    bytes_ += n;
    keys_ += ops.size();
    if (page->done) break;
    if (cancel_.load()) return error(code::unavailable, name + "the fetch was cancelled");
    // The cursor only moves forward: a server that repeats itself is
    // refused rather than followed forever.
    const auto& at = req.cursor;
    const auto& next = page->next;
    if (next.part < at.part ||
        (next.part == at.part && next.after <= at.after && !at.after.empty()) ||
        (next.part == at.part && next.after.empty()))
      return error(code::corruption, name + "a page that does not move the cursor forward");
    req.session = page->session;
    req.cursor = std::move(page->next);
  }
  // Synced: every page before it (one write-ahead log) is durable with it.
  return opts_.db->write({{persistence::family::raft, true, fetching_key(opts_.group), ""}}, true);
}

}  // namespace keel::raft
