#pragma once
// HTTP API v1: routes plain requests (net/http_server.hpp) onto a
// keel::actors::node and renders its answers as JSON. No Beast here.
//
// Every error is {"error": {"code", "message"}} with the HTTP status of
// http_status_for(code). Blocking node reads (ledger, list) run on the
// calling thread; everything else answers from node callbacks.
// Thread-safety: handle() may be called concurrently from many threads.
// Lifetime: the node must outlive every respond_fn handed to handle(), i.e.
// stop the HTTP server before the node.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "actors/node.hpp"
#include "base/status.hpp"
#include "net/http_server.hpp"

namespace keel::net {

// invalid_argument 400, not_found 404, already_exists and conflict 409,
// too_large 413, unauthorized 401, unavailable 503, timeout 504, else 500.
unsigned http_status_for(code c);

// The error body and status for `s`. REQUIRES: !s.is_ok().
http_response error_response(const status& s);

// Runs `fn` once after `delay` on a thread that may call a respond_fn; may
// drop `fn` unrun when shutting down. http_server::run_after fits.
using defer_fn = std::function<void(std::chrono::milliseconds delay, std::function<void()> fn)>;

struct api_options {
  // GET /v1/agents/{name}/ledger: events per page. Default 1000, max 10000.
  std::size_t ledger_default_limit = 1000;
  std::size_t ledger_max_limit = 10'000;
  // GET /v1/agents: agents per page. Default 100, max 1000.
  std::size_t list_default_limit = 100;
  std::size_t list_max_limit = 1000;
  // Largest ?wait=MS on messages and signals. Default 60 s.
  uint64_t max_wait_ms = 60'000;
};

class api {
 public:
  // REQUIRES: `node` outlives this api and every callback it started.
  api(actors::node& node, defer_fn defer, api_options opts = {});
  ~api();
  api(const api&) = delete;
  api& operator=(const api&) = delete;

  // Answers `req` through `respond` exactly once, now or from another thread.
  // Never throws.
  void handle(http_request req, respond_fn respond);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
