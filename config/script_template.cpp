#include "config/script_template.hpp"

#include <optional>
#include <utility>

namespace keel::config {

using json = nlohmann::json;

namespace {

constexpr std::string_view open_mark = "{{", close_mark = "}}";

// A placeholder path split into its parts: root "input", "args" or
// "result"; the tool for args/result; the JSON pointer ("" for the whole).
struct template_path {
  std::string root, tool, pointer;
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

bool tool_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

result<template_path> parse_path(std::string_view path) {
  path = trim(path);
  const auto expected = [&path]() {
    return error(code::invalid_argument,
                 "placeholder '" + std::string(path) +
                     "': expected input, input/PTR, args.TOOL[/PTR] or result.TOOL[/PTR]");
  };
  template_path p;
  const std::size_t slash = path.find('/');
  const std::string_view head = path.substr(0, slash);
  if (slash != std::string_view::npos) p.pointer = std::string(path.substr(slash));
  if (head == "input") {
    p.root = "input";
  } else if (head.rfind("args.", 0) == 0 || head.rfind("result.", 0) == 0) {
    const std::size_t dot = head.find('.');
    p.root = std::string(head.substr(0, dot));
    p.tool = std::string(head.substr(dot + 1));
    if (p.tool.empty() || p.tool.size() > 64) return expected();
    for (char c : p.tool)
      if (!tool_name_char(c)) return expected();
  } else {
    return expected();
  }
  if (!p.pointer.empty()) {
    try {
      json::json_pointer check(p.pointer);
    } catch (const json::exception&) {
      return error(code::invalid_argument, "placeholder '" + std::string(path) + "': '" +
                                               p.pointer + "' is not a JSON pointer");
    }
  }
  return p;
}

// Calls `on_placeholder(path)` for each placeholder and `on_text(text)` for
// the text between them; an unclosed "{{" is an error.
template <typename OnText, typename OnPlaceholder>
status scan(std::string_view text, OnText on_text, OnPlaceholder on_placeholder) {
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t open = text.find(open_mark, at);
    if (open == std::string_view::npos) {
      KEEL_TRY(on_text(text.substr(at)));
      break;
    }
    KEEL_TRY(on_text(text.substr(at, open - at)));
    const std::size_t close = text.find(close_mark, open + open_mark.size());
    if (close == std::string_view::npos)
      return error(code::invalid_argument,
                   "'{{' without a closing '}}' in \"" + std::string(text) + "\"");
    KEEL_TRY(on_placeholder(text.substr(open + open_mark.size(), close - open - open_mark.size())));
    at = close + close_mark.size();
  }
  return status::ok();
}

// The whole string is one placeholder: its path.
std::optional<std::string_view> sole_placeholder(std::string_view text) {
  if (text.size() < 4 || text.substr(0, 2) != open_mark ||
      text.substr(text.size() - 2) != close_mark)
    return std::nullopt;
  std::string_view inner = text.substr(2, text.size() - 4);
  if (inner.find(open_mark) != std::string_view::npos ||
      inner.find(close_mark) != std::string_view::npos)
    return std::nullopt;
  return inner;
}

// A message's text as JSON when it is JSON, else as a string.
json as_value(const json& content) {
  if (!content.is_string()) return content;
  json parsed = json::parse(content.get_ref<const std::string&>(), nullptr, false);
  return parsed.is_discarded() ? content : parsed;
}

result<json> at_pointer(const json& value, const template_path& p, std::string_view path) {
  if (p.pointer.empty()) return value;
  json::json_pointer ptr(p.pointer);
  if (!value.contains(ptr))
    return error(code::not_found, "{{" + std::string(trim(path)) + "}}: " + value.dump() +
                                      " has nothing at " + p.pointer);
  return value.at(ptr);
}

}  // namespace

status check_template_path(std::string_view path) {
  auto p = parse_path(path);
  return p ? status::ok() : p.error();
}

status check_template_text(std::string_view text) {
  return scan(
      text, [](std::string_view) { return status::ok(); },
      [](std::string_view path) { return check_template_path(path); });
}

bool has_placeholder(std::string_view text) {
  return text.find(open_mark) != std::string_view::npos;
}

template_scope::template_scope(const json& request) {
  auto m = request.find("messages");
  if (m == request.end() || !m->is_array()) return;
  messages_ = &*m;
  for (std::size_t i = m->size(); i-- > 0;) {
    const json& msg = (*m)[i];
    if (msg.is_object() && msg.value("role", "") == "user") {
      input_ = msg.contains("content") ? &msg["content"] : nullptr;
      turn_begin_ = i + 1;
      return;
    }
  }
}

result<json> template_scope::resolve(std::string_view path) const {
  auto p = parse_path(path);
  if (!p) return p.error();
  if (p->root == "input") {
    if (input_ == nullptr) return error(code::not_found, "{{input}}: the turn has no input");
    return at_pointer(p->pointer.empty() ? *input_ : as_value(*input_), *p, path);
  }
  if (messages_ == nullptr) return error(code::not_found, "the request has no messages");
  const json& msgs = *messages_;
  // This turn's latest call of the tool: its id and arguments.
  for (std::size_t i = msgs.size(); i-- > turn_begin_;) {
    const json& msg = msgs[i];
    if (!msg.is_object() || msg.value("role", "") != "assistant" || !msg.contains("tool_calls"))
      continue;
    const json& calls = msg["tool_calls"];
    for (std::size_t c = calls.size(); c-- > 0;) {
      const json& fn = calls[c].value("function", json::object());
      if (fn.value("name", "") != p->tool) continue;
      if (p->root == "args") return at_pointer(as_value(fn.value("arguments", json())), *p, path);
      const std::string id = calls[c].value("id", "");
      for (std::size_t r = i + 1; r < msgs.size(); ++r)
        if (msgs[r].is_object() && msgs[r].value("role", "") == "tool" &&
            msgs[r].value("tool_call_id", "") == id)
          return at_pointer(as_value(msgs[r].value("content", json())), *p, path);
      return error(code::not_found, "{{" + std::string(trim(path)) + "}}: the call of " + p->tool +
                                        " has no result yet");
    }
  }
  return error(code::not_found,
               "{{" + std::string(trim(path)) + "}}: no call of " + p->tool + " in this turn");
}

bool template_scope::holds(std::string_view path) const {
  auto v = resolve(path);
  if (!v) return false;
  const json& j = *v;
  if (j.is_null() || (j.is_boolean() && !j.get<bool>())) return false;
  if (j.is_number()) return j.get<double>() != 0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  return true;
}

result<std::string> template_scope::render_text(std::string_view text) const {
  std::string out;
  KEEL_TRY(scan(
      text,
      [&out](std::string_view t) {
        out += t;
        return status::ok();
      },
      [&](std::string_view path) -> status {
        auto v = resolve(path);
        if (!v) return v.error();
        out += v->is_string() ? v->get<std::string>() : v->dump();
        return status::ok();
      }));
  return out;
}

result<json> template_scope::render(const json& value) const {
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (!has_placeholder(text)) return value;
    if (auto sole = sole_placeholder(text)) return resolve(*sole);
    auto s = render_text(text);
    if (!s) return s.error();
    return json(std::move(*s));
  }
  if (value.is_object() || value.is_array()) {
    json out = value;
    for (auto it = out.begin(); it != out.end(); ++it) {
      auto r = render(*it);
      if (!r) return r.error();
      *it = std::move(*r);
    }
    return out;
  }
  return value;
}

}  // namespace keel::config
