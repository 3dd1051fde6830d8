#include "net/raft/io.hpp"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <utility>

#include "base/bytes.hpp"
#include "base/log.hpp"
#include "net/raft/group_fsm.hpp"
#include "net/raft/message_codec.hpp"

namespace keel::raft {

void append_frame(std::string& frames, group_id g, std::string_view message) {
  put_u32_be(frames, g);
  put_u32_be(frames, static_cast<uint32_t>(message.size()));
  frames.append(message);
}

bool for_each_frame(std::string_view frames,
                    const std::function<void(group_id, std::string_view)>& fn) {
  while (!frames.empty()) {
    if (frames.size() < 8) return false;
    const group_id g = get_u32_be(frames.data());
    const uint32_t n = get_u32_be(frames.data() + 4);
    if (frames.size() - 8 < n) return false;
    fn(g, frames.substr(8, n));
    frames.remove_prefix(8 + std::size_t{n});
  }
  return true;
}

void sender::send_frames(std::string_view to_address, std::string frames) {
  for_each_frame(frames,
                 [&](group_id g, std::string_view m) { send(to_address, g, std::string(m)); });
}

namespace {

io& self(raft_io* r) {
  return *static_cast<io*>(r->impl);
}

// Fills libraft's error message slot and answers the matching code: a
// value that does not decode is RAFT_CORRUPT, anything else from the store
// RAFT_IOERR (libraft treats both as fatal for the instance).
int fail(raft_io* r, const status& s) {
  std::snprintf(r->errmsg, sizeof r->errmsg, "%s", s.to_string().c_str());
  return s.error_code() == code::corruption ? RAFT_CORRUPT : RAFT_IOERR;
}

int to_rv(const status& s) {
  return s.is_ok() ? 0 : RAFT_IOERR;
}

}  // namespace

// The raft_io methods: C function pointers that reach the io through
// raft_io.impl. A friend so they can touch its state; they all run on the
// loop thread.
struct io_methods {
  static int init(raft_io* r, raft_id id, const char* address) {
    io& s = self(r);
    s.id_ = id;
    s.address_ = address;
    return 0;
  }

  static void close(raft_io* r, raft_io_close_cb cb) {
    io& s = self(r);
    // The close waits for a running fetch (one of its requests): cut it short.
    if (s.fetch_) s.fetch_->cancel();
    if (s.ticker_ != 0) s.opts_.on->cancel(s.ticker_);
    s.ticker_ = 0;
    s.closing_ = true;
    s.close_cb_ = cb;
    s.finish_close_if_idle();
  }

  static int load(raft_io* r, raft_term* term, raft_id* voted_for, raft_snapshot** snapshot,
                  raft_index* start_index, raft_entry* entries[], size_t* n_entries) {
    io& s = self(r);
    auto loaded = s.log_.load();
    if (!loaded) return fail(r, loaded.error());
    *term = loaded->term;
    *voted_for = loaded->vote;
    *snapshot = loaded->snapshot;
    *start_index = loaded->start_index;
    *entries = loaded->entries;
    *n_entries = loaded->n_entries;
    s.next_index_ = loaded->start_index + loaded->n_entries;
    return 0;
  }

  static int start(raft_io* r, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv) {
    io& s = self(r);
    s.tick_ = tick;
    s.recv_ = recv;
    s.votes_from_ = s.opts_.clock_ms() + s.opts_.hold_votes_ms;
    s.ticker_ = s.opts_.on->every(std::chrono::milliseconds(msecs), [&s] {
      if (!s.closing_) s.tick_(&s.io_);
    });
    return 0;
  }

  static int bootstrap(raft_io* r, const raft_configuration* conf) {
    io& s = self(r);
    status st = s.log_.bootstrap(*conf);
    if (st.error_code() == code::conflict) {
      std::snprintf(r->errmsg, sizeof r->errmsg, "%s", st.message().c_str());
      return RAFT_CANTBOOTSTRAP;
    }
    if (!st) return fail(r, st);
    s.next_index_ = 2;
    return 0;
  }

  static int recover(raft_io* r, const raft_configuration* conf) {
    status st = self(r).log_.recover(*conf);
    return st ? 0 : fail(r, st);
  }

  static int set_term(raft_io* r, raft_term term) {
    status st = self(r).log_.set_term(term);
    return st ? 0 : fail(r, st);
  }

  static int set_vote(raft_io* r, raft_id id) {
    status st = self(r).log_.set_vote(id);
    return st ? 0 : fail(r, st);
  }

  static int send(raft_io* r, raft_io_send* req, const raft_message* msg, raft_io_send_cb cb) {
    io& s = self(r);
    req->cb = cb;
    // Encoded now: libraft's message (and its entries) need not outlive
    // this call on our side, and the request completes once it is queued.
    s.opts_.out->send(msg->server_address, s.opts_.group,
                      encode_message(*msg, s.id_, s.stamp_for(*msg)));
    s.begin_request();
    s.opts_.on->post([&s, req, cb] {
      if (cb != nullptr) cb(req, 0);
      s.end_request();
    });
    return 0;
  }

  // Submits `ops` (journal order is call order) and, once they are durable
  // or failed, runs `then(rv)` on the loop as one of the io's requests.
  // libraft treats a failed write as fatal for the instance; the log line
  // says which write it was.
  static void write_then(io& s, persistence::write_set ops, const char* what,
                         std::function<void(int)> then) {
    s.begin_request();
    s.opts_.submit(std::move(ops), [&s, what, then = std::move(then)](const status& st) {
      if (!st) log::error(std::string("raft ") + what + " failed: " + st.to_string());
      int rv = to_rv(st);
      s.opts_.on->post([&s, then, rv] {
        then(rv);
        s.end_request();
      });
    });
  }

  static int append(raft_io* r, raft_io_append* req, const raft_entry entries[], unsigned n,
                    raft_io_append_cb cb) {
    io& s = self(r);
    req->cb = cb;
    persistence::write_set ops = s.log_.append_ops(s.next_index_, entries, n);
    s.next_index_ += n;
    write_then(s, std::move(ops), "log append", [req, cb](int rv) {
      if (cb != nullptr) cb(req, rv);
    });
    return 0;
  }

  static int truncate(raft_io* r, raft_index index) {
    io& s = self(r);
    s.next_index_ = index;
    // libraft has no callback for a truncate: a failure shows up as the
    // store refusing the writes after it.
    write_then(s, s.log_.truncate_ops(index), "log truncate", [](int) {});
    return 0;
  }

  static int snapshot_put(raft_io* r, unsigned trailing, raft_io_snapshot_put* req,
                          const raft_snapshot* snapshot, raft_io_snapshot_put_cb cb) {
    io& s = self(r);
    req->cb = cb;
    persistence::write_set ops = s.log_.snapshot_ops(*snapshot, trailing);
    // An installed snapshot (trailing 0) replaces the whole log.
    if (trailing == 0) s.next_index_ = snapshot->index + 1;
    write_then(s, std::move(ops), "snapshot write", [req, cb](int rv) {
      if (cb != nullptr) cb(req, rv);
    });
    return 0;
  }

  static int snapshot_get(raft_io* r, raft_io_snapshot_get* req, raft_io_snapshot_get_cb cb) {
    io& s = self(r);
    req->cb = cb;
    auto snap = s.log_.read_snapshot();
    raft_snapshot* got = snap ? *snap : nullptr;
    int rv = !snap ? fail(r, snap.error()) : got == nullptr ? RAFT_NOTFOUND : 0;
    s.begin_request();
    s.opts_.on->post([&s, req, cb, got, rv] {
      cb(req, got, rv);
      s.end_request();
    });
    return 0;
  }

  static raft_time time(raft_io* r) { return self(r).opts_.clock_ms(); }

  static int random(raft_io* r, int min, int max) {
    if (max <= min) return min;
    return std::uniform_int_distribution<int>(min, max - 1)(self(r).random_);
  }

  static int async_work(raft_io* r, raft_io_async_work* req, raft_io_async_work_cb cb) {
    io& s = self(r);
    req->cb = cb;
    s.begin_request();
    s.workers_.emplace_back([&s, req, cb] {
      int rv = req->work(req);
      s.opts_.on->post([&s, req, cb, rv] {
        if (cb != nullptr) cb(req, rv);
        s.end_request();
      });
    });
    return 0;
  }
};

io::io(io_options opts)
    : opts_(std::move(opts)), log_(*opts_.db, opts_.group), random_(std::random_device{}()) {
  assert(opts_.db && opts_.submit && opts_.out && opts_.on && opts_.clock_ms);
  io_.version = 2;
  io_.impl = this;
  io_.init = io_methods::init;
  io_.close = io_methods::close;
  io_.load = io_methods::load;
  io_.start = io_methods::start;
  io_.bootstrap = io_methods::bootstrap;
  io_.recover = io_methods::recover;
  io_.set_term = io_methods::set_term;
  io_.set_vote = io_methods::set_vote;
  io_.send = io_methods::send;
  io_.append = io_methods::append;
  io_.truncate = io_methods::truncate;
  io_.snapshot_put = io_methods::snapshot_put;
  io_.snapshot_get = io_methods::snapshot_get;
  io_.time = io_methods::time;
  io_.random = io_methods::random;
  io_.async_work = io_methods::async_work;
  // A fetch cut short by a stop or crash left the group's data incomplete.
  auto mark = opts_.db->get(persistence::family::raft, fetching_key(opts_.group));
  incomplete_ = opts_.fetch_state && (!mark || mark->has_value());
}

io::~io() {
  if (ticker_ != 0) opts_.on->cancel(ticker_);
  for (auto& t : workers_) t.join();
  fetch_.reset();
  if (holding_) release_message(held_);
}

fetch_progress io::progress() const {
  fetch_progress p;
  p.fetching = fetch_ != nullptr;
  p.incomplete = incomplete_;
  if (fetch_) {
    p.bytes = fetch_->bytes();
    p.keys = fetch_->keys();
  }
  p.installed = installed_;
  p.failed = failed_;
  return p;
}

uint64_t io::stored_applied() const {
  auto applied = opts_.db->get(persistence::family::raft, applied_key(opts_.group));
  return applied && applied->has_value() && (*applied)->size() == 8 ? get_u64_be((*applied)->data())
                                                                    : 0;
}

uint64_t io::snapshot_holds(const raft_message& msg) {
  // Every command up to the marker's applied index. Not the snapshot's raft
  // index, which may be a later configuration change or barrier, entries
  // the state machine never sees.
  const raft_buffer& data = msg.install_snapshot.data;
  auto m = decode_marker({static_cast<const char*>(data.base), data.len});
  return m ? m->applied : msg.install_snapshot.last_index;
}

bool io::intercept(std::string_view from_address, raft_message& msg) {
  if (!opts_.fetch_state) return false;
  const bool snapshot = msg.type == RAFT_IO_INSTALL_SNAPSHOT;
  const bool from_leader = snapshot || msg.type == RAFT_IO_APPEND_ENTRIES;
  // Votes are about the log, which a fetch leaves alone: this member still
  // helps elect a leader (with two of three members left, it must).
  if (msg.type == RAFT_IO_REQUEST_VOTE) return false;
  if (!snapshot && !incomplete_) return false;
  // What the snapshot's state holds.
  const uint64_t holds = snapshot ? snapshot_holds(msg) : 0;
  // The store already holds the state the snapshot names (a fetch whose
  // message libraft then refused as stale): nothing to fetch.
  if (snapshot && !incomplete_ && !fetch_ && stored_applied() >= holds) return false;
  // While a fetch runs, a newer InstallSnapshot takes the held one's
  // place: once the fetch ends, libraft answers the snapshot its leader
  // sent last (to this member's current raft id, after a join changed it)
  // instead of one the leader no longer waits for.
  if (fetch_ && snapshot && !closing_) {
    if (holding_) release_message(held_);
    held_ = msg;
    holding_ = true;
    held_from_ = from_address;
    return true;
  }
  // Dropped: anything while the data is incomplete but what can start a
  // fetch (vote results too, so this member cannot become leader over
  // incomplete data), and everything else while one runs (the leader sends
  // again).
  if (fetch_ || !from_leader || closing_) {
    release_message(msg);
    return true;
  }
  uint64_t marker = opts_.applied_floor ? opts_.applied_floor() : 0;
  if (snapshot) marker = std::max<uint64_t>(marker, holds);
  if (snapshot) {
    held_ = msg;
    holding_ = true;
    held_from_ = from_address;
  } else {
    release_message(msg);
  }
  incomplete_ = true;
  log::info("raft group fetching its state", {{"group", std::to_string(opts_.group)},
                                              {"from", std::string(from_address)},
                                              {"index", std::to_string(marker)}});
  state_fetch_options fo;
  fo.db = opts_.db;
  fo.group = opts_.group;
  fo.group_of = opts_.group_of;
  fo.out = opts_.out;
  fo.from = std::string(from_address);
  fo.marker_index = marker;
  fo.page_timeout = opts_.page_timeout;
  begin_request();
  fetch_ = std::make_unique<state_fetch>(
      std::move(fo), [this](const status& st) { opts_.on->post([this, st] { fetch_ended(st); }); });
  return true;
}

void io::fetch_ended(const status& st) {
  fetch_.reset();  // its thread has posted this as its last act: joins at once
  if (st) {
    incomplete_ = false;
    ++installed_;
    if (opts_.on_fetched) opts_.on_fetched();
  } else {
    ++failed_;
    log::warn("raft group state fetch failed; the next message from a leader starts it again",
              {{"group", std::to_string(opts_.group)}, {"error", st.to_string()}});
  }
  if (holding_) {
    holding_ = false;
    raft_message msg = held_;
    held_ = {};
    std::string from = std::move(held_from_);
    // A snapshot that took the first one's place may name more than the
    // fetch brought: then it waits for the leader's resend, which starts
    // a fetch of its own.
    if (st && stored_applied() >= snapshot_holds(msg) && !closing_ && recv_ != nullptr) {
      msg.server_address = from.c_str();
      recv_(&io_, &msg);
    } else {
      release_message(msg);
    }
  }
  end_request();
}

void io::end_request() {
  assert(pending_ > 0);
  --pending_;
  finish_close_if_idle();
}

void io::finish_close_if_idle() {
  if (!closing_ || pending_ != 0 || close_posted_) return;
  close_posted_ = true;
  opts_.on->post([this] {
    if (close_cb_ != nullptr) close_cb_(&io_);
  });
}

uint64_t io::stamp_for(const raft_message& msg) const {
  if (msg.type == RAFT_IO_APPEND_ENTRIES) return opts_.clock_ms();
  // A result in the term of the newest AppendEntries taken from its
  // receiver: libraft reset the election timer when it took it.
  if (msg.type == RAFT_IO_APPEND_ENTRIES_RESULT && msg.server_id == heard_from_ &&
      msg.append_entries_result.term == heard_.term)
    return heard_.stamp;
  return 0;
}

uint64_t io::echoed(raft_id id, uint64_t term) const {
  assert(opts_.on->on_loop_thread());
  auto it = echoes_.find(id);
  return it != echoes_.end() && it->second.term == term ? it->second.stamp : 0;
}

void io::note_stamp(const raft_message& msg, raft_id from, uint64_t stamp) {
  if (stamp == 0) return;
  auto newer = [stamp](echo& e, uint64_t term) {
    if (term > e.term) e = {term, stamp};
    if (term == e.term) e.stamp = std::max(e.stamp, stamp);
  };
  if (msg.type == RAFT_IO_APPEND_ENTRIES) {
    if (from != heard_from_) heard_ = {};
    heard_from_ = from;
    newer(heard_, msg.append_entries.term);
  } else if (msg.type == RAFT_IO_APPEND_ENTRIES_RESULT) {
    newer(echoes_[from], msg.append_entries_result.term);
  }
}

status io::recv(std::string_view from_address, std::string_view bytes) {
  assert(opts_.on->on_loop_thread());
  if (recv_ == nullptr || closing_) return status::ok();
  auto decoded = decode_message(bytes);
  if (!decoded) return decoded.error();
  raft_message msg = decoded->msg;
  msg.server_id = decoded->from;
  // Dropped, as a lost message: this member may have taken a leader's
  // AppendEntries shortly before it restarted.
  if (msg.type == RAFT_IO_REQUEST_VOTE && opts_.clock_ms() < votes_from_) {
    release_message(msg);
    return status::ok();
  }
  // libraft copies what it keeps of the address (the leader's).
  if (intercept(from_address, msg)) return status::ok();
  // Only what reaches libraft counts for the lease.
  note_stamp(msg, decoded->from, decoded->stamp);
  std::string address(from_address);
  msg.server_address = address.c_str();
  recv_(&io_, &msg);
  return status::ok();
}

}  // namespace keel::raft
