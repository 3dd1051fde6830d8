#pragma once
// The runner of http tools: run() POSTs the arguments as JSON to tool.url
// (http:// or https://) with the tool's headers (their secrets expanded by
// the runtime; no header value is ever logged or put in an error) plus
//   Idempotency-Key: <ctx.idempotency_key>  (stable across attempts)
//   X-Keel-Agent:    <ctx.agent>
//   X-Keel-Attempt:  <ctx.attempt>
// (these three win over a tool header of the same name) and a deadline of
// ctx.timeout_ms.
//
// Outcomes ("not applied": the answer proves the request did nothing;
// "maybe applied": it does not, and a non-idempotent tool's call then ends
// in doubt instead of being retried or failed, see effect_outcome):
//   2xx          success: the body parsed as JSON; {"text": body} when it
//                is not JSON; null when it is empty.
//   408, 429     retryable, not applied: the server asks to come back later.
//   503 with Retry-After   retryable, not applied (the same).
//   a status in tool.not_applied.http_statuses: not applied; retryable for
//                a 5xx, permanent otherwise.
//   other 4xx    permanent, maybe applied; the message names the status
//                and quotes at most 512 bytes of the body.
//   other 5xx    retryable, maybe applied, the same message.
//   1xx, 3xx     permanent, maybe applied (redirects are not followed).
//   no connection could be made (refused, DNS, TLS handshake): retryable,
//                not applied. A bad url: permanent, not applied.
//   sent, then a timeout or a lost connection: retryable, maybe applied.
//   ctx.abort raised: the request's connection is closed at once (never
//                kept alive); retryable, maybe applied ("... was
//                aborted"); not applied when it was raised before a
//                non-idempotent tool's request was sent.
// A non-idempotent tool's request always goes out on a fresh connection
// and is never resent by the client: a kept-alive connection the server
// closed meanwhile would look like a request that may have arrived.
// Retrying an idempotent tool is safe because the server can recognize a
// repeated Idempotency-Key.
//
// Thread-safety: run() may be called concurrently; connections are kept
// alive in a pool shared by the calling threads.

#include "effects/contexts.hpp"
#include "http/client.hpp"

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
