#pragma once
// The model provider "openai": any OpenAI-compatible chat-completions
// endpoint (OpenAI, vLLM, llama.cpp server, Ollama). complete() POSTs the
// runtime's request plus the spec's "model", "temperature" and "max_tokens"
// to <spec.base_url>/chat/completions (http:// or https://), with
// spec.headers, "Authorization: Bearer <key>" when spec.api_key (expanded
// from a secret by the runtime) or spec.api_key_env (the variable holding
// the key) gives one, and a deadline of ctx.timeout_ms. The reply is
// normalized as effects/contexts.hpp documents. No header value is logged
// or put in an error message.
//
// Outcomes: retryable failure for a connection failure, a timeout, 5xx, 429
// and 408; permanent failure for other statuses (with the server's
// {"error": {"message"}} when it sent one), a 2xx body that is not a chat
// completion, a bad base_url, an unset api_key_env variable, or a server
// certificate that fails verification. ctx.abort raised: the request's
// connection is closed at once (never kept alive), and the outcome is
// retryable, maybe applied ("... was aborted").
//
// Thread-safety: complete() may be called concurrently; connections are
// kept alive in a pool shared by the calling threads.

#include <string_view>

#include "effects/contexts.hpp"
#include "http/client.hpp"

namespace keel::net {

class openai_model final : public actors::model_provider {
 public:
  openai_model();
  ~openai_model() override;

  actors::effect_outcome complete(const config::model_spec& spec, const actors::json& request,
                                  const actors::model_call_context& ctx) override;

 private:
  http_client_pool pool_;
};

// The normalized reply of a 2xx chat-completions body:
//   {"content", "tool_calls": [{"id", "name", "arguments"}], "usage":
//    {"prompt_tokens", "completion_tokens"}, "finish_reason"}.
// choices[0].message is read; arguments given as a JSON string are parsed
// (an empty string is {}; unparsable text becomes {"$unparsed": text});
// missing usage counts are 0; a missing tool call id becomes "call_<i>"; a
// missing finish_reason is "tool_calls" when there are tool calls, else
// "stop". A permanent failure when the body is not a chat completion.
actors::effect_outcome normalize_chat_completion(std::string_view body);

}  // namespace keel::net
