#include "config/model_script.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "config/patterns.hpp"
#include "config/script_template.hpp"

namespace keel::config {

using json = nlohmann::json;

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
    return bad(path, pointer_child(pointer, key), "unknown key (expected one of: " + list + ")");
  }
  return status::ok();
}

bool is_count(const json& v) {
  return v.is_number_unsigned();
}

// Every string in `value` (recursively) holds well-formed placeholders.
status check_templates(const json& value, const std::string& path, const std::string& pointer) {
  if (value.is_string()) {
    if (auto s = check_template_text(value.get_ref<const std::string&>()); !s)
      return bad(path, pointer, s.message());
    return status::ok();
  }
  if (value.is_object()) {
    for (const auto& [key, v] : value.items())
      KEEL_TRY(check_templates(v, path, pointer_child(pointer, key)));
  } else if (value.is_array()) {
    for (std::size_t i = 0; i < value.size(); ++i)
      KEEL_TRY(check_templates(value[i], path, pointer_child(pointer, i)));
  }
  return status::ok();
}

status check_tool_call(const json& call, const std::string& path, const std::string& pointer,
                       json& out) {
  if (!call.is_object()) return bad(path, pointer, "must be an object");
  KEEL_TRY(only_keys(call, {"name", "arguments", "id"}, path, pointer));
  auto name = call.find("name");
  if (name == call.end() || !name->is_string() || name->get_ref<const std::string&>().empty())
    return bad(path, pointer + "/name", "must be a non-empty string");
  out = json{{"name", *name}, {"arguments", call.value("arguments", json::object())}};
  KEEL_TRY(check_templates(out["arguments"], path, pointer + "/arguments"));
  if (auto id = call.find("id"); id != call.end()) {
    if (!id->is_string() || id->get_ref<const std::string&>().empty())
      return bad(path, pointer + "/id", "must be a non-empty string");
    out["id"] = *id;
  }
  return status::ok();
}

// A reply or a failure, with the condition keys of a "choose" alternative
// when `conditions` is set.
status check_answer(const json& reply, const std::string& path, const std::string& pointer,
                    json& out, bool conditions) {
  if (!reply.is_object()) return bad(path, pointer, "must be an object");
  json when = json::object();
  if (conditions) {
    json rest = reply;
    for (const char* k : {"if", "unless"}) {
      auto c = rest.find(k);
      if (c == rest.end()) continue;
      if (!c->is_string())
        return bad(path, pointer + "/" + k, "must be a placeholder path such as result.refund/ok");
      if (auto s = check_template_path(c->get_ref<const std::string&>()); !s)
        return bad(path, pointer + "/" + k, s.message());
      when[k] = *c;
      rest.erase(k);
    }
    KEEL_TRY(check_answer(rest, path, pointer, out, false));
    out.update(when);
    return status::ok();
  }
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
    KEEL_TRY(check_templates(*c, path, pointer + "/content"));
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

status check_reply(const json& reply, const std::string& path, const std::string& pointer,
                   json& out) {
  if (!reply.is_object() || !reply.contains("choose"))
    return check_answer(reply, path, pointer, out, false);
  KEEL_TRY(only_keys(reply, {"choose"}, path, pointer));
  const json& alts = reply["choose"];
  if (!alts.is_array() || alts.empty())
    return bad(path, pointer + "/choose", "must be a non-empty array of replies");
  out = json{{"choose", json::array()}};
  for (std::size_t i = 0; i < alts.size(); ++i) {
    json alt;
    KEEL_TRY(check_answer(alts[i], path, pointer + "/choose/" + std::to_string(i), alt, true));
    out["choose"].push_back(std::move(alt));
  }
  return status::ok();
}

}  // namespace

result<json> check_model_script(const json& j, const std::string& path) {
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

result<json> load_model_script(const std::string& path) {
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

  return check_model_script(j, path);
}

}  // namespace keel::config
