#pragma once
// An OpenAI-compatible chat-completions server on 127.0.0.1 (a free port)
// for tests: POST /v1/chat/completions answers from a queue of scripted
// replies, in order. It can be told to answer the next N calls with an
// error status, to delay the next N answers, or to refuse every call
// ("fail if contacted", for replay tests that must not call the model). It
// records every request it received.
//
// Other routes: GET /stats -> {"calls", "forbidden_contacts",
// "replies_left"}; POST /replies with a JSON array of replies (the JSON form
// below) appends to the queue. Both exist for tests that drive a separate
// process (fake_servers).
//
// When the queue is empty the default reply (if set) answers; otherwise the
// call gets a 400 whose message says the script ran out (400: permanent, so
// a runtime does not retry into a test timeout).
//
// Thread-safety: every member may be called from any thread.
// Lifetime: the destructor stops the server; requests still delayed are
// answered with a 500 or dropped.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/server.hpp"

namespace keel::test {

struct scripted_tool_call {
  std::string id;  // empty: "call_<c>_<i>": c-th call answered, i-th tool call
  std::string name;
  nlohmann::json arguments = nlohmann::json::object();  // sent as arguments.dump()
  // Sent verbatim as the arguments string instead (e.g. "{not json").
  std::optional<std::string> raw_arguments;
};

// JSON form: {"content": "..." | null, "tool_calls": [{"id", "name",
// "arguments" (any JSON) | "raw_arguments" (string)}], "usage":
// {"prompt_tokens", "completion_tokens"} | null, "finish_reason",
// "raw_body"}; every key optional.
struct scripted_reply {
  std::optional<std::string> content;  // nullopt: "content": null
  std::vector<scripted_tool_call> tool_calls;
  uint64_t prompt_tokens = 10;
  uint64_t completion_tokens = 5;
  bool omit_usage = false;    // send no "usage" at all
  std::string finish_reason;  // empty: "tool_calls" when there are tool calls, else "stop"
  // Sent verbatim with status 200 instead of a chat completion (malformed
  // bodies).
  std::optional<std::string> raw_body;

  static scripted_reply text(std::string content);
  static scripted_reply tool_call(std::string name, nlohmann::json arguments, std::string id = {});
  static scripted_reply from_json(const nlohmann::json& j);  // throws on a wrong shape
};

struct recorded_request {
  nlohmann::json body;  // null when the body was not JSON
  std::string raw_body;
  std::vector<std::pair<std::string, std::string>> headers;

  // The first header named `name` (ASCII case-insensitive); empty if absent.
  std::string header(std::string_view name) const;
};

class fake_openai_server {
 public:
  // Listens on 127.0.0.1:`port` (0: a free one). Throws std::runtime_error
  // when it cannot.
  explicit fake_openai_server(uint16_t port = 0);
  ~fake_openai_server();
  fake_openai_server(const fake_openai_server&) = delete;
  fake_openai_server& operator=(const fake_openai_server&) = delete;

  uint16_t port() const;
  std::string base_url() const;  // "http://127.0.0.1:PORT/v1"

  // Scripting.
  void push(scripted_reply reply);
  void push_text(std::string content) { push(scripted_reply::text(std::move(content))); }
  void push_tool_call(std::string name, nlohmann::json arguments, std::string id = {}) {
    push(scripted_reply::tool_call(std::move(name), std::move(arguments), std::move(id)));
  }
  // Answers every call once the queue is empty.
  void set_default_reply(scripted_reply reply);
  // The next `n` calls get `status` with an OpenAI error body carrying
  // `message`; they consume no reply.
  void fail_next(unsigned n, unsigned status, std::string message = "injected failure");
  // The next `n` answers (errors included) are sent after `delay`.
  void delay_next(unsigned n, std::chrono::milliseconds delay);
  // While on, every call is answered 400 and counted as a forbidden contact.
  void fail_if_contacted(bool on = true);

  // Observation.
  std::size_t calls() const;  // POSTs to /v1/chat/completions, of every kind
  std::size_t forbidden_contacts() const;
  std::size_t replies_left() const;
  std::vector<recorded_request> requests() const;
  // REQUIRES: calls() > 0.
  recorded_request last_request() const;
  // Waits until calls() >= n or `timeout` passes; returns whether it did.
  bool wait_for_calls(std::size_t n, std::chrono::milliseconds timeout) const;

  void stop();

 private:
  void on_request(net::http_request req, net::respond_fn respond);
  // The answer to one chat-completions call, and how long to hold it.
  std::pair<net::http_response, std::chrono::milliseconds> plan(const net::http_request& req);

  std::unique_ptr<net::http_server> server_;
  mutable std::mutex mu_;
  mutable std::condition_variable called_;
  std::deque<scripted_reply> replies_;           // guarded by mu_
  std::optional<scripted_reply> default_reply_;  // guarded by mu_
  unsigned fail_left_ = 0;                       // guarded by mu_
  unsigned fail_status_ = 500;                   // guarded by mu_
  std::string fail_message_;                     // guarded by mu_
  unsigned delay_left_ = 0;                      // guarded by mu_
  std::chrono::milliseconds delay_{0};           // guarded by mu_
  bool forbidden_ = false;                       // guarded by mu_
  std::size_t forbidden_contacts_ = 0;           // guarded by mu_
  std::size_t answered_ = 0;                     // guarded by mu_
  std::vector<recorded_request> requests_;       // guarded by mu_
};

}  // namespace keel::test
