#include "net/api/support.hpp"

#include <algorithm>
#include <charconv>
#include <unordered_set>

namespace keel::net::api_detail {

// Deeper documents are refused: rendering them back (dump) recurses.
constexpr int max_json_depth = 100;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

http_response json_response(unsigned status, const json& j) {
  return {status, "application/json", dump(j), {}};
}

http_response fail(unsigned status, std::string_view code, std::string_view message) {
  return {status, "application/json", error_json(code, message), {}};
}

http_response bad_request(std::string message) {
  return error_response(error(code::invalid_argument, std::move(message)));
}

http_response method_not_allowed(std::string_view method, std::string_view allow) {
  auto r =
      fail(405, "method_not_allowed",
           "method " + std::string(method) + " is not allowed here; use " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// A missing or empty parameter gives `fallback`.
result<uint64_t> uint_param(const target& t, std::string_view name, uint64_t fallback) {
  const std::string* v = t.param(name);
  if (!v || v->empty()) return fallback;
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size())
    return error(code::invalid_argument, "query parameter '" + std::string(name) + "' must be a " +
                                             "non-negative integer, got '" + *v + "'");
  return n;
}

std::string string_param(const target& t, std::string_view name) {
  const std::string* v = t.param(name);
  return v ? *v : std::string();
}

result<bool> bool_param(const target& t, std::string_view name) {
  const std::string* v = t.param(name);
  if (!v || v->empty() || *v == "false" || *v == "0") return false;
  if (*v == "true" || *v == "1") return true;
  return error(code::invalid_argument, "query parameter '" + std::string(name) +
                                           "' must be true or false, got '" + *v + "'");
}

// Counts bracket nesting outside strings, so deep documents are refused
// before nlohmann builds them.
bool too_deep(std::string_view s) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_json_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// Thrown out of the parser callback at a key an object already has.
struct duplicate_key {
  std::string key;
};

// An empty body gives null.
result<json> parse_body(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return json();
  if (too_deep(body))
    return error(code::invalid_argument, "malformed JSON: nested deeper than " +
                                             std::to_string(max_json_depth) + " levels");
  // A repeated key would silently take its last value ({"body": 1, "body":
  // 1000}); whatever reads the body must see what the sender meant, so the
  // keys seen in each open object are tracked and a repeat is refused.
  std::vector<std::unordered_set<std::string>> open_objects;
  auto track_keys = [&open_objects](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        auto& keys = open_objects.back();
        const auto& k = parsed.get_ref<const std::string&>();
        if (!keys.insert(k).second) throw duplicate_key{k};
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(body, track_keys);
  } catch (const duplicate_key& d) {
    return error(code::invalid_argument,
                 "malformed JSON: the key " + dump(json(d.key)) + " appears twice in one object");
  } catch (const json::exception& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    auto close = what.find("] ");
    if (close != std::string::npos) what.erase(0, close + 2);
    return error(code::invalid_argument, "malformed JSON: " + what);
  }
}

// The body as an object with only the fields in `allowed`.
result<json> parse_object(std::string_view body, std::initializer_list<std::string_view> allowed,
                          bool empty_ok) {
  auto j = parse_body(body);
  if (!j) return j;
  if (j->is_null() && empty_ok) return json::object();
  if (!j->is_object())
    return error(code::invalid_argument, j->is_null() ? "the request body is empty; expected a "
                                                        "JSON object"
                                                      : "the request body must be a JSON object");
  for (auto it = j->begin(); it != j->end(); ++it)
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end())
      return error(code::invalid_argument, "unknown field \"" + it.key() + "\"");
  return j;
}

// A string field; missing gives "" unless `required`.
result<std::string> string_field(const json& obj, const char* name, bool required) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    if (required)
      return error(code::invalid_argument, std::string("missing field \"") + name + "\"");
    return std::string();
  }
  if (!it->is_string())
    return error(code::invalid_argument, std::string("field \"") + name + "\" must be a string");
  return it->get<std::string>();
}

json view_json(const actors::agent_view& v) {
  json j = {{"name", v.name},
            {"type", v.type},
            {"status", v.status},
            {"last_seq", v.last_seq},
            {"hibernated", v.hibernated},
            {"created_ms", v.created_ms},
            {"phase", v.phase},
            {"state", v.state},
            {"paused", v.paused}};
  if (!v.version.empty()) j["version"] = v.version;
  if (v.origin != persistence::agent_origin::spawned) {
    j["origin"] = to_string(v.origin);
    if (!v.parent.empty()) j["parent"] = {{"name", v.parent}, {"at", v.fork_seq}};
  }
  if (!v.forks.empty()) j["forks"] = v.forks;
  if (v.compacted_seq) j["compacted_seq"] = v.compacted_seq;
  return j;
}

json ledger_entry_json(actors::ledger_entry e) {
  json j = {{"seq", e.seq},
            {"type", std::move(e.type)},
            {"time", e.time_ms},
            {"data", std::move(e.data)}};
  if (!e.hash.empty()) {
    j["prev"] = std::move(e.prev);
    j["hash"] = std::move(e.hash);
  }
  return j;
}

}  // namespace keel::net::api_detail
