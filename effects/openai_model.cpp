#include "effects/openai_model.hpp"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace keel::net {

using actors::effect_outcome;
using json = nlohmann::json;

namespace {

constexpr std::size_t max_quoted_bytes = 512;

// At most `max` bytes of `s`, fit to quote in an error: error strings are
// recorded as JSON, and dumping JSON refuses invalid UTF-8, so a cut or
// broken sequence becomes U+FFFD.
std::string quote(std::string_view s, std::size_t max = max_quoted_bytes) {
  bool cut = s.size() > max;
  std::string text(s.substr(0, max));
  text = json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace))
             .get<std::string>();
  return cut ? text + "..." : text;
}

// OpenAI answers errors as {"error": {"message": ...}}; some compatible
// servers send {"error": "..."}. Anything else is quoted as it came.
std::string server_message(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    if (auto e = j.find("error"); e != j.end()) {
      if (e->is_string()) return quote(e->get<std::string>());
      if (e->is_object())
        if (auto m = e->find("message"); m != e->end() && m->is_string())
          return quote(m->get<std::string>());
    }
  }
  if (body.empty()) return "(empty body)";
  return quote(body);
}

json parse_arguments(const std::string& text) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  auto args = json::parse(text, nullptr, false);
  if (args.is_discarded()) return json{{"$unparsed", text}};
  return args;
}

uint64_t token_count(const json& reply, const char* name) {
  auto usage = reply.find("usage");
  if (usage == reply.end() || !usage->is_object()) return 0;
  auto n = usage->find(name);
  if (n == usage->end()) return 0;
  if (n->is_number_unsigned()) return n->get<uint64_t>();
  if (n->is_number_float() && n->get<double>() > 0) return static_cast<uint64_t>(n->get<double>());
  return 0;
}

}  // namespace

effect_outcome normalize_chat_completion(std::string_view body) {
  auto malformed = [](const std::string& what) {
    return effect_outcome::failure("malformed chat completion: " + what, false);
  };
  auto reply = json::parse(body, nullptr, false);
  if (reply.is_discarded() || !reply.is_object())
    return malformed("the body is not a JSON object: " + quote(body, 200));
  auto choices = reply.find("choices");
  if (choices == reply.end() || !choices->is_array() || choices->empty())
    return malformed("no choices");
  const json& choice = choices->front();
  auto message = choice.is_object() ? choice.find("message") : choice.end();
  if (!choice.is_object() || message == choice.end() || !message->is_object())
    return malformed("choices[0] has no message");

  json out = json::object();
  auto content = message->find("content");
  if (content == message->end() || content->is_null()) {
    out["content"] = nullptr;
  } else if (content->is_string()) {
    out["content"] = *content;
  } else if (content->is_array()) {
    // Content parts: [{"type": "text", "text": ...}...]; only text counts.
    std::string text;
    for (const auto& part : *content)
      if (part.is_object() && part.value("type", "") == "text" && part.contains("text") &&
          part["text"].is_string())
        text += part["text"].get<std::string>();
    out["content"] = text;
  } else {
    return malformed("choices[0].message.content is neither text nor null");
  }

  json calls = json::array();
  auto tool_calls = message->find("tool_calls");
  if (tool_calls != message->end() && !tool_calls->is_null()) {
    if (!tool_calls->is_array()) return malformed("choices[0].message.tool_calls is not an array");
    for (std::size_t i = 0; i < tool_calls->size(); ++i) {
      const json& call = (*tool_calls)[i];
      std::string where = "choices[0].message.tool_calls[" + std::to_string(i) + "]";
      auto function = call.is_object() ? call.find("function") : call.end();
      if (!call.is_object() || function == call.end() || !function->is_object())
        return malformed(where + " has no function");
      auto name = function->find("name");
      if (name == function->end() || !name->is_string() ||
          name->get_ref<const std::string&>().empty())
        return malformed(where + " has no function name");
      json arguments = json::object();
      if (auto a = function->find("arguments"); a != function->end() && !a->is_null())
        arguments = a->is_string() ? parse_arguments(a->get<std::string>()) : *a;
      auto id = call.find("id");
      bool has_id =
          id != call.end() && id->is_string() && !id->get_ref<const std::string&>().empty();
      calls.push_back({{"id", has_id ? id->get<std::string>() : "call_" + std::to_string(i)},
                       {"name", *name},
                       {"arguments", std::move(arguments)}});
    }
  }
  bool has_calls = !calls.empty();
  out["tool_calls"] = std::move(calls);
  out["usage"] = {{"prompt_tokens", token_count(reply, "prompt_tokens")},
                  {"completion_tokens", token_count(reply, "completion_tokens")}};
  auto finish = choice.find("finish_reason");
  if (finish != choice.end() && finish->is_string())
    out["finish_reason"] = *finish;
  else
    out["finish_reason"] = has_calls ? "tool_calls" : "stop";
  return effect_outcome::success(std::move(out));
}

openai_model::openai_model() = default;
openai_model::~openai_model() = default;

effect_outcome openai_model::complete(const config::model_spec& spec, const json& request,
                                      const actors::model_call_context& ctx) {
  std::string who = "model '" + spec.model + "' at " + spec.base_url;
  auto url = parse_url_target(spec.base_url);
  if (!url) return effect_outcome::failure(who + ": bad base_url: " + url.error().message(), false);
  std::string target = url->target;
  while (!target.empty() && target.back() == '/') target.pop_back();
  target += "/chat/completions";

  // The spec's headers first: an api_key's Authorization wins over one there.
  http_client::header_list headers(spec.headers.begin(), spec.headers.end());
  if (!spec.api_key.empty()) headers.emplace_back("Authorization", "Bearer " + spec.api_key);
  if (!spec.api_key_env.empty()) {
    const char* key = std::getenv(spec.api_key_env.c_str());
    if (key == nullptr || *key == '\0')
      return effect_outcome::failure(
          who + ": the environment variable " + spec.api_key_env + " (api_key_env) is not set",
          false);
    headers.emplace_back("Authorization", std::string("Bearer ") + key);
  }

  if (!request.is_object())
    return effect_outcome::failure(who + ": the request is not a JSON object", false);
  json body = request;
  body["model"] = spec.model;
  if (spec.temperature) body["temperature"] = *spec.temperature;
  if (spec.max_tokens) body["max_tokens"] = *spec.max_tokens;
  // OpenAI refuses an empty "tools" array; no tools means leaving it out.
  if (auto tools = body.find("tools"); tools != body.end() && tools->empty()) body.erase(tools);
  std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);

  auto res = pool_.request(url->server, "POST", target, payload, headers,
                           std::chrono::milliseconds(ctx.timeout_ms), nullptr, ctx.abort.get());
  // Aborted: the pool dropped the connection; the model may have seen it.
  if (!res && ctx.abort && ctx.abort->raised())
    return effect_outcome::unknown(who + ": " + res.error().message(), true);
  if (!res) {
    auto c = res.error().error_code();
    return effect_outcome::failure(who + ": " + res.error().message(),
                                   c == code::timeout || c == code::unavailable);
  }
  unsigned status = res->status;
  if (status >= 200 && status < 300) {
    auto out = normalize_chat_completion(res->body);
    if (!out.ok) out.error = who + ": " + out.error;
    return out;
  }
  // 408 and 429 say "not now"; 5xx says the server failed, not the request.
  bool retryable = status >= 500 || status == 429 || status == 408;
  return effect_outcome::failure(
      who + ": HTTP " + std::to_string(status) + ": " + server_message(res->body), retryable);
}

}  // namespace keel::net
