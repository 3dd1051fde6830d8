#pragma once
// Server-Sent Events (the WHATWG "text/event-stream" format): a parser for
// the client side (http_client::stream hands it the body as it arrives) and
// the matching encoder for a producer writing to a stream_sink.
//
// Thread-safety: an sse_parser is one stream's state; use it from one thread.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace keel::net {

struct sse_event {
  // The last event id the stream set, carried over from earlier events as
  // the format says (what a reconnecting client sends as Last-Event-ID).
  std::string id;
  // The event's type; "message" when the stream named none.
  std::string event = "message";
  // The data lines, joined with '\n'.
  std::string data;
};

// Splits a byte stream into events, in any pieces: a line or a CRLF may be
// cut anywhere between two feed() calls. Lines end in CRLF, LF or CR;
// comment lines (starting with ':') and unknown fields are skipped; a blank
// line dispatches the event, if it has data. An unfinished event at the end
// of the stream is never dispatched, as the format says.
class sse_parser {
 public:
  // Calls `on_event` for every event that `bytes` completes, in order.
  void feed(std::string_view bytes, const std::function<void(const sse_event&)>& on_event);

  // The id to resume from: the last id field seen, even of an unfinished
  // event.
  const std::string& last_event_id() const { return last_id_; }
  // The reconnection delay the server asked for in a "retry:" field.
  std::optional<uint64_t> retry_ms() const { return retry_ms_; }

 private:
  void line(std::string_view l, const std::function<void(const sse_event&)>& on_event);

  std::string partial_;    // the current line so far
  bool after_cr_ = false;  // a CR ended the last line; an LF right after it is part of it
  bool started_ = false;   // past a leading byte order mark
  std::string data_;
  std::string event_;
  std::string last_id_;
  std::optional<uint64_t> retry_ms_;
};

// One event in the wire format, ending with its blank line: "id: 7\n" (when
// `e.id` is not empty), "event: x\n" (when not empty or "message"), a
// "data: " line per line of `e.data` (split at CRLF, LF or CR), then "\n".
// REQUIRES: `e.id` and `e.event` hold no CR or LF.
std::string format_sse(const sse_event& e);

}  // namespace keel::net
