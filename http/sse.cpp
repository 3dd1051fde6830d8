#include "http/sse.hpp"

#include <cassert>
#include <charconv>

namespace keel::net {

namespace {

constexpr std::string_view byte_order_mark = "\xEF\xBB\xBF";

}  // namespace

void sse_parser::feed(std::string_view bytes,
                      const std::function<void(const sse_event&)>& on_event) {
  if (!started_) {
    // The mark may itself arrive in pieces: wait until it can be told apart.
    partial_.append(bytes);
    std::string_view head = partial_;
    if (head.size() < byte_order_mark.size() && byte_order_mark.substr(0, head.size()) == head)
      return;
    started_ = true;
    std::string pending = std::move(partial_);
    partial_.clear();
    std::string_view rest = pending;
    if (rest.substr(0, byte_order_mark.size()) == byte_order_mark)
      rest.remove_prefix(byte_order_mark.size());
    return feed(rest, on_event);
  }
  while (!bytes.empty()) {
    if (after_cr_) {
      after_cr_ = false;
      if (bytes.front() == '\n') {
        bytes.remove_prefix(1);
        continue;
      }
    }
    auto end = bytes.find_first_of("\r\n");
    if (end == std::string_view::npos) {
      partial_.append(bytes);
      return;
    }
    after_cr_ = bytes[end] == '\r';
    if (partial_.empty()) {
      line(bytes.substr(0, end), on_event);
    } else {
      partial_.append(bytes.substr(0, end));
      std::string whole = std::move(partial_);
      partial_.clear();
      line(whole, on_event);
    }
    bytes.remove_prefix(end + 1);
  }
}

void sse_parser::line(std::string_view l, const std::function<void(const sse_event&)>& on_event) {
  if (l.empty()) {
    if (data_.empty()) {
      event_.clear();
      return;
    }
    sse_event e;
    e.id = last_id_;
    if (!event_.empty()) e.event = std::move(event_);
    data_.pop_back();  // the '\n' after the last data line
    e.data = std::move(data_);
    data_.clear();
    event_.clear();
    on_event(e);
    return;
  }
  if (l.front() == ':') return;  // a comment: heartbeats and the like
  std::string_view field = l, value;
  if (auto colon = l.find(':'); colon != std::string_view::npos) {
    field = l.substr(0, colon);
    value = l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    data_.append(value);
    data_.push_back('\n');
  } else if (field == "event") {
    event_ = std::string(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_ = std::string(value);
  } else if (field == "retry") {
    uint64_t ms = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
    if (!value.empty() && ec == std::errc() && end == value.data() + value.size()) retry_ms_ = ms;
  }
}

std::string format_sse(const sse_event& e) {
  assert(e.id.find_first_of("\r\n") == std::string::npos);
  assert(e.event.find_first_of("\r\n") == std::string::npos);
  std::string out;
  out.reserve(e.data.size() + e.id.size() + e.event.size() + 32);
  if (!e.id.empty()) out.append("id: ").append(e.id).append("\n");
  if (!e.event.empty() && e.event != "message") out.append("event: ").append(e.event).append("\n");
  std::string_view rest = e.data;
  for (;;) {
    auto end = rest.find_first_of("\r\n");
    out.append("data: ").append(rest.substr(0, end)).append("\n");
    if (end == std::string_view::npos) break;
    if (rest[end] == '\r' && end + 1 < rest.size() && rest[end + 1] == '\n') ++end;
    rest.remove_prefix(end + 1);
  }
  out.append("\n");
  return out;
}

}  // namespace keel::net
