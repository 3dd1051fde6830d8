#pragma once
// The runner of http tools: run() POSTs the arguments as JSON to tool.url
// (http:// or https://) with the tool's headers plus
//   Idempotency-Key: <ctx.idempotency_key>  (stable across attempts)
//   X-Keel-Agent:    <ctx.agent>
//   X-Keel-Attempt:  <ctx.attempt>
// (these three win over a tool header of the same name) and a deadline of
// ctx.timeout_ms.
//
// Outcomes:
//   2xx          success: the body parsed as JSON; {"text": body} when it
//                is not JSON; null when it is empty.
//   408, 429     retryable failure: the server asks to come back later.
//   other 4xx    permanent failure naming the status and quoting at most
//                512 bytes of the body.
//   5xx          retryable failure, the same message.
//   1xx, 3xx     permanent failure (redirects are not followed).
//   timeout, connection failure: retryable. A bad url or a server
//   certificate that fails verification: permanent.
// Retrying is safe only because the server can recognize a repeated
// Idempotency-Key; a tool whose API does not should not be retried.
//
// Thread-safety: run() may be called concurrently; connections are kept
// alive in a pool shared by the calling threads.

#include "actors/effects.hpp"
#include "net/http_client.hpp"

namespace keel::net {

class http_tool final : public actors::tool_runner {
 public:
  http_tool();
  ~http_tool() override;

  actors::effect_outcome run(const config::tool_spec& tool, const actors::json& arguments,
                             const actors::tool_call_context& ctx) override;

 private:
  http_client_pool pool_;
};

}  // namespace keel::net
