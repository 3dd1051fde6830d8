#include "effects/scripted_model.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "config/model_script.hpp"
#include "config/script_template.hpp"

namespace keel::actors {

namespace {

// Characters, not bytes, so a script's token counts do not change with the
// language of its text.
uint64_t utf8_chars(const std::string& s) {
  uint64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

uint64_t tokens_for(uint64_t chars) {
  return (chars + 3) / 4;
}

// A message's content is a string, null, or (OpenAI's multi-part form) an
// array of parts of which the text parts count.
uint64_t content_chars(const json& content) {
  if (content.is_string()) return utf8_chars(content.get_ref<const std::string&>());
  uint64_t n = 0;
  if (content.is_array())
    for (const auto& part : content)
      if (part.is_object())
        if (auto t = part.find("text"); t != part.end() && t->is_string())
          n += utf8_chars(t->get_ref<const std::string&>());
  return n;
}

uint64_t prompt_chars(const json& request) {
  uint64_t n = 0;
  if (auto msgs = request.find("messages"); msgs != request.end() && msgs->is_array())
    for (const auto& m : *msgs)
      if (m.is_object())
        if (auto c = m.find("content"); c != m.end()) n += content_chars(*c);
  return n;
}

}  // namespace

result<json> load_script(const std::string& path) {
  return config::load_model_script(path);
}

effect_outcome scripted_model::complete(const config::model_spec& spec, const json& request,
                                        const model_call_context& ctx) {
  // Checked when the type was loaded (config/model_script.hpp). A spec
  // built in code rather than parsed names only the file: read it now.
  json read;
  if (spec.script_content.is_null() && !spec.script.empty()) {
    auto loaded = config::load_model_script(spec.script);
    if (!loaded) return effect_outcome::failure(loaded.error().message(), false);
    read = std::move(*loaded);
  }
  const json& script = read.is_null() ? spec.script_content : read;
  if (!script.is_object() || !script.contains("replies"))
    return effect_outcome::failure("scripted model: the agent spec has no script", false);
  const json& replies = script["replies"];

  uint64_t index = ctx.call_index;
  if (script.value("cycle", false)) {
    index %= replies.size();
  } else if (index >= replies.size()) {
    return effect_outcome::failure("script " + spec.script + " has no reply #" +
                                       std::to_string(ctx.call_index) + " (it has " +
                                       std::to_string(replies.size()) + ")",
                                   false);
  }
  const config::template_scope scope(request);
  const json* picked = &replies[index];
  const std::string which = "script reply #" + std::to_string(index);
  if (picked->contains("choose")) {
    const json* chosen = nullptr;
    for (const auto& alt : (*picked)["choose"]) {
      if (alt.contains("if") && !scope.holds(alt["if"].get<std::string>())) continue;
      if (alt.contains("unless") && scope.holds(alt["unless"].get<std::string>())) continue;
      chosen = &alt;
      break;
    }
    if (chosen == nullptr)
      return effect_outcome::failure(which + ": no alternative of \"choose\" applies", false);
    picked = chosen;
  }
  const json& reply = *picked;
  if (reply.contains("error"))
    return effect_outcome::failure(reply["error"].get<std::string>(),
                                   reply["retryable"].get<bool>());

  // Placeholders ({{result.lookup_order/amount}}) take what happened in
  // the turn; a value the turn does not have fails the call for good.
  auto content = scope.render(reply["content"]);
  if (!content) return effect_outcome::failure(which + ": " + content.error().message(), false);
  json calls = json::array();
  uint64_t completion_chars = content_chars(*content);
  for (std::size_t i = 0; i < reply["tool_calls"].size(); ++i) {
    const json& c = reply["tool_calls"][i];
    auto arguments = scope.render(c["arguments"]);
    if (!arguments)
      return effect_outcome::failure(which + ": " + arguments.error().message(), false);
    std::string id = c.contains("id")
                         ? c["id"].get<std::string>()
                         : "call_" + std::to_string(ctx.call_index) + "_" + std::to_string(i);
    completion_chars += utf8_chars(arguments->dump());
    calls.push_back(
        json{{"id", std::move(id)}, {"name", c["name"]}, {"arguments", std::move(*arguments)}});
  }
  json usage = reply.contains("usage") ? reply["usage"]
                                       : json{{"prompt_tokens", tokens_for(prompt_chars(request))},
                                              {"completion_tokens", tokens_for(completion_chars)}};
  std::string finish = reply.contains("finish_reason") ? reply["finish_reason"].get<std::string>()
                       : calls.empty()                 ? "stop"
                                                       : "tool_calls";
  return effect_outcome::success(json{{"content", std::move(*content)},
                                      {"tool_calls", std::move(calls)},
                                      {"usage", std::move(usage)},
                                      {"finish_reason", std::move(finish)}});
}

}  // namespace keel::actors
