#pragma once
// An HTTP tool API on 127.0.0.1 (a free port) for tests: POST /tools/<name>
// behaves like a real idempotent API. A call whose Idempotency-Key was
// already applied gets the first answer again and applies nothing; any other
// call either fails (as configured, applying nothing) or is applied: counted
// in applied(tool), its answer remembered under its key. A call without an
// Idempotency-Key is applied every time.
//
// An applied call may be answered late: after `delay`, or, with `hold`,
// only when the test calls release() (or `hold_timeout` passes). It is
// applied when it arrives, before the answer, so a caller killed while it
// waits leaves the work done, as a real API would.
//
// Other routes, for tests that drive a separate process (fake_servers):
// GET /stats -> {"tools": {name: {"calls", "applied"}}, "keys": {key: calls},
// "held": n}; POST /release; PUT /behaviours/<name> with a behaviour in the
// JSON form below.
//
// Thread-safety: every member may be called from any thread.
// Lifetime: the destructor releases held calls, then stops the server.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
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

// JSON form: {"fail_first": n, "fail_status": 500, "fail_applied": false,
// "retry_after": "", "status": 200, "delay_ms": 0, "hold": false,
// "hold_timeout_ms": 30000, "body": any JSON, "raw_body": "text",
// "echo_header": "Name"}; every key optional.
struct tool_behaviour {
  // The first `fail_first` calls of the tool (counting every call, in
  // arrival order) are answered `fail_status` and not applied...
  unsigned fail_first = 0;
  unsigned fail_status = 500;
  // ... or, with fail_applied, applied all the same (the work is done, and
  // then the answer is the failure: a server that broke after acting).
  bool fail_applied = false;
  // Sent as Retry-After with the injected failures, when not empty.
  std::string retry_after;
  // The status of every later call; a non-2xx one is never applied (e.g.
  // 400: "always refuse").
  unsigned status = 200;
  // Applied calls are answered after this long.
  std::chrono::milliseconds delay{0};
  // Applied calls are answered only at release() or after hold_timeout.
  bool hold = false;
  std::chrono::milliseconds hold_timeout{30'000};
  // The body answered with `status`; default {"ok": true, "tool": <name>,
  // "args": <arguments>} for 2xx, an {"error": ...} body otherwise.
  std::optional<nlohmann::json> body;
  // Sent verbatim as text/plain instead (non-JSON, empty or large bodies).
  std::optional<std::string> raw_body;
  // A request header whose value the answer repeats, as a careless API
  // echoes a credential: in a JSON body as "header", in the message of a
  // default error body.
  std::optional<std::string> echo_header;

  static tool_behaviour from_json(const nlohmann::json& j);  // throws on a wrong shape
};

struct tool_call_record {
  std::string tool;
  std::string idempotency_key;  // empty when the caller sent none
  nlohmann::json args;          // null when the body was not JSON
  std::vector<std::pair<std::string, std::string>> headers;
  bool applied = false;   // this call applied the work
  bool replayed = false;  // answered from an earlier call with the same key

  // The first header named `name` (ASCII case-insensitive); empty if absent.
  std::string header(std::string_view name) const;
};

class fake_tool_server {
 public:
  // Listens on 127.0.0.1:`port` (0: a free one). Throws std::runtime_error
  // when it cannot.
  explicit fake_tool_server(uint16_t port = 0);
  ~fake_tool_server();
  fake_tool_server(const fake_tool_server&) = delete;
  fake_tool_server& operator=(const fake_tool_server&) = delete;

  uint16_t port() const;
  std::string base_url() const;                  // "http://127.0.0.1:PORT"
  std::string url(std::string_view tool) const;  // base_url() + "/tools/" + tool

  // Applies to calls that arrive afterwards; a tool never configured gets
  // the default behaviour.
  void set_behaviour(const std::string& tool, tool_behaviour b);

  // Answers every held call now.
  void release();
  std::size_t held() const;
  // Waits until held() >= n or `timeout` passes; returns whether it did.
  bool wait_for_held(std::size_t n, std::chrono::milliseconds timeout) const;

  std::size_t calls(const std::string& tool) const;  // every POST to /tools/<tool>
  std::size_t applied(const std::string& tool) const;
  std::size_t calls_for_key(const std::string& idempotency_key) const;
  std::size_t total_calls() const;
  // null when the tool was never called.
  nlohmann::json last_args(const std::string& tool) const;
  // Every call in arrival order.
  std::vector<tool_call_record> log() const;
  // The last call of `tool`. REQUIRES: calls(tool) > 0.
  tool_call_record last_call(const std::string& tool) const;
  nlohmann::json stats() const;  // what GET /stats returns

  // Wait until total_calls() (or calls(tool)) >= n or `timeout` passes;
  // return whether it did.
  bool wait_for_calls(std::size_t n, std::chrono::milliseconds timeout) const;
  bool wait_for_calls(const std::string& tool, std::size_t n,
                      std::chrono::milliseconds timeout) const;

  void stop();

 private:
  struct held_call {
    uint64_t id;
    net::respond_fn respond;
    net::http_response response;
  };
  struct tool_state {
    tool_behaviour behaviour;
    std::size_t calls = 0;
    std::size_t applied = 0;
  };

  void on_request(net::http_request req, net::respond_fn respond);
  void on_tool_call(const std::string& tool, net::http_request req, net::respond_fn respond);
  void answer_held(uint64_t id);

  std::unique_ptr<net::http_server> server_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::map<std::string, tool_state> tools_;                    // guarded by mu_
  std::map<std::string, std::size_t> key_calls_;               // guarded by mu_
  std::map<std::string, net::http_response> applied_answers_;  // by key; guarded by mu_
  std::vector<tool_call_record> log_;                          // guarded by mu_
  std::vector<held_call> held_;                                // guarded by mu_
  uint64_t next_hold_id_ = 1;                                  // guarded by mu_
};

}  // namespace keel::test
