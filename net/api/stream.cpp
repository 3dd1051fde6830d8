// GET /v1/agents/{name}/ledger/stream[?from=SEQ]: an agent's ledger events
// as Server-Sent Events, each as {"id": seq, "event": type, "data": the
// event as GET .../ledger shows it}. Without `from` the stream starts
// after the last event there is; with it, at that seq.
//
// The producer polls the store (a ledger read is a few microseconds when
// nothing is new) on the server's timers: every poll_gap while the agent
// is quiet, at once while a page comes back full. It writes one page at a
// time and polls again only when the client has taken it, so a slow
// client holds at most one page in memory: at most `page` events and, past
// its first event, max_page_bytes. A client that takes nothing for 30 s is
// cut off (the server's write timeout). A comment line every
// heartbeat_gap keeps proxies from closing a quiet stream.

#include <chrono>

#include "actors/ledger_ops.hpp"
#include "base/clock.hpp"
#include "http/sse.hpp"
#include "net/api/support.hpp"

namespace keel::net::api_detail {

namespace {

constexpr std::chrono::milliseconds poll_gap{100};
constexpr int64_t heartbeat_gap_ms = 15'000;
constexpr std::size_t page = 256;

struct ledger_stream : std::enable_shared_from_this<ledger_stream> {
  actors::node& node;
  std::shared_ptr<const defer_fn> defer;
  std::string name;
  uint64_t max_bytes;
  uint64_t next = 1;
  std::shared_ptr<stream_sink> sink;
  int64_t last_write_ms = wall_ms();

  ledger_stream(actors::node& n, std::shared_ptr<const defer_fn> d, std::string nm,
                uint64_t max_page_bytes, uint64_t from)
      : node(n), defer(std::move(d)), name(std::move(nm)), max_bytes(max_page_bytes), next(from) {}

  void schedule(std::chrono::milliseconds delay) {
    (*defer)(delay, [self = shared_from_this()] { self->poll(); });
  }

  void poll() {
    if (sink->closed()) return;
    auto events = node.ledger(name, next, page, max_bytes);
    if (!events) {
      sink->write(format_sse({"", "error",
                              dump(json{{"code", to_string(events.error().error_code())},
                                        {"message", events.error().message()}})}));
      return sink->close();
    }
    if (events->events.empty()) {
      if (wall_ms() - last_write_ms >= heartbeat_gap_ms) {
        last_write_ms = wall_ms();
        sink->write(": keep-alive\n\n");
      }
      return schedule(poll_gap);
    }
    const bool full = events->next != 0;
    std::string out;
    for (auto& e : events->events) {
      next = e.seq + 1;
      std::string type = e.type;
      const std::string id = std::to_string(e.seq);
      out += format_sse({id, std::move(type), dump(ledger_entry_json(std::move(e)))});
    }
    last_write_ms = wall_ms();
    sink->write(std::move(out), [self = shared_from_this(), full](bool ok) {
      if (ok) self->schedule(full ? std::chrono::milliseconds(0) : poll_gap);
    });
  }
};

}  // namespace

void stream_ledger(actors::node& node, const std::shared_ptr<const defer_fn>& defer,
                   uint64_t max_page_bytes, const std::string& name, const target& t,
                   const respond_fn& respond) {
  uint64_t from = 0;
  if (t.param("from")) {
    auto f = uint_param(t, "from", 1);
    if (!f) return respond(error_response(f.error()));
    from = std::max<uint64_t>(*f, 1);
  } else {
    auto end = node.ledgers().ledger_end(name);
    if (!end) return respond(error_response(end.error()));
    from = *end + 1;
  }
  // The agent must exist before the 200 goes out.
  if (auto probe = node.ledgers().ledger_end(name); !probe)
    return respond(error_response(probe.error()));
  auto st = std::make_shared<ledger_stream>(node, defer, name, max_page_bytes, from);
  http_response r;
  r.status = 200;
  r.content_type = "text/event-stream";
  r.on_stream = [st](std::shared_ptr<stream_sink> sink) {
    st->sink = std::move(sink);
    // The first line tells the client where the stream starts.
    st->sink->write(": from " + std::to_string(st->next) + "\n\n");
    st->poll();
  };
  respond(std::move(r));
}

}  // namespace keel::net::api_detail
