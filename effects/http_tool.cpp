#include "effects/http_tool.hpp"

#include <algorithm>
#include <chrono>
#include <string>

namespace keel::net {

using actors::effect_outcome;
using json = nlohmann::json;

namespace {

constexpr std::size_t max_quoted_bytes = 512;

// Bodies come from anywhere and are recorded as JSON, whose dump refuses
// invalid UTF-8: a cut or broken sequence becomes U+FFFD.
std::string valid_utf8(std::string_view s) {
  return json::parse(json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

std::string quote(std::string_view body) {
  if (body.empty()) return "(empty body)";
  if (body.size() <= max_quoted_bytes) return valid_utf8(body);
  return valid_utf8(body.substr(0, max_quoted_bytes)) + "...";
}

json parse_body(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return nullptr;
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return json{{"text", valid_utf8(body)}};
  return j;
}

}  // namespace

http_tool::http_tool() = default;
http_tool::~http_tool() = default;

effect_outcome http_tool::run(const config::tool_spec& tool, const json& arguments,
                              const actors::tool_call_context& ctx) {
  std::string who = "tool '" + tool.name + "' at " + tool.url;
  auto url = parse_url_target(tool.url);
  if (!url) return effect_outcome::failure(who + ": bad url: " + url.error().message(), false);

  http_client::header_list headers(tool.headers.begin(), tool.headers.end());
  headers.emplace_back("Idempotency-Key", ctx.idempotency_key);
  headers.emplace_back("X-Keel-Agent", ctx.agent);
  headers.emplace_back("X-Keel-Attempt", std::to_string(ctx.attempt));
  std::string payload = arguments.dump(-1, ' ', false, json::error_handler_t::replace);

  // For a non-idempotent tool the pool must say whether a failed request
  // may have arrived, and so never resend it.
  bool sent = true;
  auto res = pool_.request(url->server, "POST", url->target, payload, headers,
                           std::chrono::milliseconds(ctx.timeout_ms),
                           tool.idempotent ? nullptr : &sent, ctx.abort.get());
  // Aborted: the pool dropped the connection. (An idempotent tool's pool
  // call does not say whether it sent: maybe applied then.)
  if (!res && ctx.abort && ctx.abort->raised()) {
    const std::string why = who + ": " + res.error().message();
    return sent ? effect_outcome::unknown(why, true) : effect_outcome::failure(why, true);
  }
  if (!res) {
    auto c = res.error().error_code();
    const bool retryable = c == code::timeout || c == code::unavailable;
    const std::string why = who + ": " + res.error().message();
    return sent ? effect_outcome::unknown(why, retryable) : effect_outcome::failure(why, retryable);
  }
  unsigned status = res->status;
  if (status >= 200 && status < 300) return effect_outcome::success(parse_body(res->body));
  const std::string why = who + ": HTTP " + std::to_string(status) + ": " + quote(res->body);
  const auto& declared = tool.not_applied.http_statuses;
  const bool says_not_applied =
      status == 408 || status == 429 || (status == 503 && !res->retry_after.empty()) ||
      std::find(declared.begin(), declared.end(), status) != declared.end();
  const bool retryable = status >= 500 || status == 408 || status == 429;
  return says_not_applied ? effect_outcome::failure(why, retryable)
                          : effect_outcome::unknown(why, retryable);
}

}  // namespace keel::net
