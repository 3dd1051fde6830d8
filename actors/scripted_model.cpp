#include "actors/scripted_model.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "config/patterns.hpp"

namespace keel::actors {

namespace {

status bad(const std::string& path, const std::string& pointer, const std::string& what) {
  return error(code::invalid_argument, path + ": " + pointer + ": " + what);
}

// Unknown keys are refused: "tool_call" for "tool_calls" would otherwise
// give a reply without calls and a test that passes for the wrong reason.
status only_keys(const json& obj, std::initializer_list<const char*> allowed,
                 const std::string& path, const std::string& pointer) {
  for (const auto& [key, value] : obj.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || key == a;
    if (known) continue;
    std::string list;
    for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
    return bad(path, config::pointer_child(pointer, key),
               "unknown key (expected one of: " + list + ")");
  }
  return status::ok();
}

bool is_count(const json& v) {
  return v.is_number_unsigned();
}

status check_tool_call(const json& call, const std::string& path, const std::string& pointer,
                       json& out) {
  if (!call.is_object()) return bad(path, pointer, "must be an object");
  KEEL_TRY(only_keys(call, {"name", "arguments", "id"}, path, pointer));
  auto name = call.find("name");
  if (name == call.end() || !name->is_string() || name->get_ref<const std::string&>().empty())
    return bad(path, pointer + "/name", "must be a non-empty string");
  out = json{{"name", *name}, {"arguments", call.value("arguments", json::object())}};
  if (auto id = call.find("id"); id != call.end()) {
    if (!id->is_string() || id->get_ref<const std::string&>().empty())
      return bad(path, pointer + "/id", "must be a non-empty string");
    out["id"] = *id;
  }
  return status::ok();
}

status check_reply(const json& reply, const std::string& path, const std::string& pointer,
                   json& out) {
  if (!reply.is_object()) return bad(path, pointer, "must be an object");
  if (reply.contains("error")) {
    KEEL_TRY(only_keys(reply, {"error", "retryable"}, path, pointer));
    const json& e = reply["error"];
    if (!e.is_string() || e.get_ref<const std::string&>().empty())
      return bad(path, pointer + "/error", "must be a non-empty string");
    bool retryable = false;
    if (auto r = reply.find("retryable"); r != reply.end()) {
      if (!r->is_boolean()) return bad(path, pointer + "/retryable", "must be true or false");
      retryable = r->get<bool>();
    }
    out = json{{"error", e}, {"retryable", retryable}};
    return status::ok();
  }

  KEEL_TRY(only_keys(reply, {"content", "tool_calls", "usage", "finish_reason"}, path, pointer));
  out = json{{"content", nullptr}, {"tool_calls", json::array()}};
  if (auto c = reply.find("content"); c != reply.end()) {
    if (!c->is_string() && !c->is_null())
      return bad(path, pointer + "/content", "must be a string or null");
    out["content"] = *c;
  }
  if (auto calls = reply.find("tool_calls"); calls != reply.end()) {
    if (!calls->is_array()) return bad(path, pointer + "/tool_calls", "must be an array");
    for (std::size_t i = 0; i < calls->size(); ++i) {
      json call;
      KEEL_TRY(
          check_tool_call((*calls)[i], path, pointer + "/tool_calls/" + std::to_string(i), call));
      out["tool_calls"].push_back(std::move(call));
    }
  }
  if (auto u = reply.find("usage"); u != reply.end()) {
    if (!u->is_object()) return bad(path, pointer + "/usage", "must be an object");
    KEEL_TRY(only_keys(*u, {"prompt_tokens", "completion_tokens"}, path, pointer + "/usage"));
    for (const char* k : {"prompt_tokens", "completion_tokens"})
      if (!u->contains(k) || !is_count((*u)[k]))
        return bad(path, pointer + "/usage/" + k, "must be an integer >= 0");
    out["usage"] = *u;
  }
  if (auto f = reply.find("finish_reason"); f != reply.end()) {
    if (!f->is_string() || f->get_ref<const std::string&>().empty())
      return bad(path, pointer + "/finish_reason", "must be a non-empty string");
    out["finish_reason"] = *f;
  }
  return status::ok();
}

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
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(code::io_error, "cannot read script " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad())
    return error(code::io_error, "cannot read script " + path + ": " + std::strerror(errno));

  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again with exceptions for the parser's message (line, column);
    // the first pass keeps the common path free of exceptions.
    std::string what = "syntax error";
    try {
      j = json::parse(text.str());
    } catch (const json::parse_error& e) {
      // e.what() is "[json.exception.parse_error.101] parse error at line 3, ...".
      what = e.what();
      if (auto close = what.find("] "); close != std::string::npos) what.erase(0, close + 2);
    }
    return error(code::invalid_argument, path + ": not valid JSON: " + what);
  }

  if (!j.is_object()) return bad(path, "/", "must be an object with \"replies\"");
  KEEL_TRY(only_keys(j, {"description", "replies", "cycle"}, path, ""));
  if (auto d = j.find("description"); d != j.end() && !d->is_string())
    return bad(path, "/description", "must be a string");
  auto replies = j.find("replies");
  if (replies == j.end() || !replies->is_array() || replies->empty())
    return bad(path, "/replies", "must be a non-empty array");
  bool cycle = false;
  if (auto c = j.find("cycle"); c != j.end()) {
    if (!c->is_boolean()) return bad(path, "/cycle", "must be true or false");
    cycle = c->get<bool>();
  }

  json out{{"replies", json::array()}, {"cycle", cycle}};
  for (std::size_t i = 0; i < replies->size(); ++i) {
    json reply;
    KEEL_TRY(check_reply((*replies)[i], path, "/replies/" + std::to_string(i), reply));
    out["replies"].push_back(std::move(reply));
  }
  return out;
}

result<std::shared_ptr<const json>> scripted_model::script(const std::string& path) {
  {
    std::lock_guard lock(mu_);
    if (auto it = scripts_.find(path); it != scripts_.end()) return it->second;
  }
  // Read outside the lock: a slow disk must not stall calls of other
  // agents whose scripts are cached. Two first calls may both read; the
  // first to finish wins and both use its copy.
  auto loaded = load_script(path);
  if (!loaded) return loaded.error();
  auto shared = std::make_shared<const json>(std::move(loaded).value());
  std::lock_guard lock(mu_);
  return scripts_.emplace(path, std::move(shared)).first->second;
}

effect_outcome scripted_model::complete(const config::model_spec& spec, const json& request,
                                        const model_call_context& ctx) {
  if (spec.script.empty())
    return effect_outcome::failure("scripted model: the agent spec names no script", false);
  auto loaded = script(spec.script);
  if (!loaded) return effect_outcome::failure(loaded.error().message(), false);
  const json& replies = (**loaded)["replies"];

  uint64_t index = ctx.call_index;
  if ((**loaded)["cycle"].get<bool>()) {
    index %= replies.size();
  } else if (index >= replies.size()) {
    return effect_outcome::failure("script " + spec.script + " has no reply #" +
                                       std::to_string(ctx.call_index) + " (it has " +
                                       std::to_string(replies.size()) + ")",
                                   false);
  }
  const json& reply = replies[index];
  if (reply.contains("error"))
    return effect_outcome::failure(reply["error"].get<std::string>(),
                                   reply["retryable"].get<bool>());

  json calls = json::array();
  uint64_t completion_chars = content_chars(reply["content"]);
  for (std::size_t i = 0; i < reply["tool_calls"].size(); ++i) {
    const json& c = reply["tool_calls"][i];
    std::string id = c.contains("id")
                         ? c["id"].get<std::string>()
                         : "call_" + std::to_string(ctx.call_index) + "_" + std::to_string(i);
    completion_chars += utf8_chars(c["arguments"].dump());
    calls.push_back(
        json{{"id", std::move(id)}, {"name", c["name"]}, {"arguments", c["arguments"]}});
  }
  json usage = reply.contains("usage") ? reply["usage"]
                                       : json{{"prompt_tokens", tokens_for(prompt_chars(request))},
                                              {"completion_tokens", tokens_for(completion_chars)}};
  std::string finish = reply.contains("finish_reason") ? reply["finish_reason"].get<std::string>()
                       : calls.empty()                 ? "stop"
                                                       : "tool_calls";
  return effect_outcome::success(json{{"content", reply["content"]},
                                      {"tool_calls", std::move(calls)},
                                      {"usage", std::move(usage)},
                                      {"finish_reason", std::move(finish)}});
}

}  // namespace keel::actors
