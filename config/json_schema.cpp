#include "config/json_schema.hpp"
#include "config/patterns.hpp"

#include <cmath>
#include <regex>
#include <set>
#include <utility>

namespace keel::config {

using nlohmann::json;

namespace {

// Messages show the root as "/" rather than the empty pointer, so that
// "<pointer>: <what>" never starts with ": ".
std::string shown(const std::string& pointer) {
  return pointer.empty() ? "/" : pointer;
}

status bad(const std::string& pointer, const std::string& what) {
  return error(code::invalid_argument, shown(pointer) + ": " + what);
}

bool is_integral(const json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  double d = v.get<double>();
  return std::isfinite(d) && std::floor(d) == d;
}

bool is_count(const json& v) {
  return is_integral(v) && v.get<double>() >= 0;
}

const std::set<std::string>& type_names() {
  static const std::set<std::string> names = {"object",  "array",   "string", "number",
                                              "integer", "boolean", "null"};
  return names;
}

status check_at(const json& schema, const std::string& ptr);

status check_type(const json& t, const std::string& ptr) {
  auto known = [&](const json& name, const std::string& where) -> status {
    if (!name.is_string() || !type_names().count(name.get<std::string>()))
      return bad(where, "must be one of object, array, string, number, integer, boolean, null");
    return status::ok();
  };
  if (t.is_string()) return known(t, ptr);
  if (!t.is_array() || t.empty())
    return bad(ptr, "must be a type name or a non-empty array of type names");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < t.size(); ++i) {
    KEEL_TRY(known(t[i], pointer_child(ptr, i)));
    if (!seen.insert(t[i].get<std::string>()).second)
      return bad(pointer_child(ptr, i), "repeats type " + t[i].get<std::string>());
  }
  return status::ok();
}

status check_keyword(const std::string& key, const json& v, const std::string& schema_ptr) {
  const std::string ptr = pointer_child(schema_ptr, key);
  if (key == "type") return check_type(v, ptr);
  if (key == "properties") {
    if (!v.is_object()) return bad(ptr, "must be an object of schemas");
    for (auto it = v.begin(); it != v.end(); ++it)
      KEEL_TRY(check_at(it.value(), pointer_child(ptr, it.key())));
    return status::ok();
  }
  if (key == "required") {
    if (!v.is_array()) return bad(ptr, "must be an array of property names");
    std::set<std::string> seen;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) return bad(pointer_child(ptr, i), "must be a string");
      if (!seen.insert(v[i].get<std::string>()).second)
        return bad(pointer_child(ptr, i), "repeats \"" + v[i].get<std::string>() + "\"");
    }
    return status::ok();
  }
  if (key == "additionalProperties") {
    if (v.is_boolean()) return status::ok();
    return check_at(v, ptr);
  }
  if (key == "items") return check_at(v, ptr);
  if (key == "enum") {
    if (!v.is_array() || v.empty()) return bad(ptr, "must be a non-empty array");
    return status::ok();
  }
  if (key == "const" || key == "default") return status::ok();
  if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" ||
      key == "exclusiveMaximum") {
    if (!v.is_number()) return bad(ptr, "must be a number");
    return status::ok();
  }
  if (key == "minLength" || key == "maxLength" || key == "minItems" || key == "maxItems") {
    if (!is_count(v)) return bad(ptr, "must be an integer >= 0");
    return status::ok();
  }
  if (key == "pattern") {
    if (!v.is_string()) return bad(ptr, "must be a string");
    if (auto re = compile_pattern(v.get<std::string>()); !re) return bad(ptr, re.error().message());
    return status::ok();
  }
  if (key == "description" || key == "title") {
    if (!v.is_string()) return bad(ptr, "must be a string");
    return status::ok();
  }
  if (key == "examples") {
    if (!v.is_array()) return bad(ptr, "must be an array");
    return status::ok();
  }
  return bad(ptr, "unsupported schema keyword \"" + key + "\"");
}

status check_at(const json& schema, const std::string& ptr) {
  if (!schema.is_object()) return bad(ptr, "must be a schema object");
  for (auto it = schema.begin(); it != schema.end(); ++it)
    KEEL_TRY(check_keyword(it.key(), it.value(), ptr));
  auto bound = [&](const char* lo, const char* hi) -> status {
    if (schema.contains(lo) && schema.contains(hi) &&
        schema[lo].get<double>() > schema[hi].get<double>())
      return bad(pointer_child(ptr, lo),
                 std::string("is greater than ") + hi + ", nothing can match");
    return status::ok();
  };
  KEEL_TRY(bound("minimum", "maximum"));
  KEEL_TRY(bound("minLength", "maxLength"));
  KEEL_TRY(bound("minItems", "maxItems"));
  return status::ok();
}

bool has_type(const json& v, const std::string& type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") return is_integral(v);
  if (type == "boolean") return v.is_boolean();
  return v.is_null();
}

// JSON Schema counts string length in code points, not bytes.
std::size_t utf8_length(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

using violation = std::optional<std::string>;

violation at(const std::string& ptr, const std::string& what) {
  return shown(ptr) + ": " + what;
}

violation violation_at(const json& schema, const json& value, const std::string& ptr);

violation check_numeric(const json& schema, const json& value, const std::string& ptr) {
  double d = value.get<double>();
  if (auto it = schema.find("minimum"); it != schema.end() && d < it->get<double>())
    return at(ptr, "must be >= " + it->dump());
  if (auto it = schema.find("maximum"); it != schema.end() && d > it->get<double>())
    return at(ptr, "must be <= " + it->dump());
  if (auto it = schema.find("exclusiveMinimum"); it != schema.end() && d <= it->get<double>())
    return at(ptr, "must be > " + it->dump());
  if (auto it = schema.find("exclusiveMaximum"); it != schema.end() && d >= it->get<double>())
    return at(ptr, "must be < " + it->dump());
  return std::nullopt;
}

violation check_string(const json& schema, const std::string& s, const std::string& ptr) {
  std::size_t len = utf8_length(s);
  if (auto it = schema.find("minLength"); it != schema.end() && len < it->get<double>())
    return at(ptr, "must be at least " + it->dump() + " characters long");
  if (auto it = schema.find("maxLength"); it != schema.end() && len > it->get<double>())
    return at(ptr, "must be at most " + it->dump() + " characters long");
  if (auto it = schema.find("pattern"); it != schema.end()) {
    const auto& pattern = it->get_ref<const std::string&>();
    try {
      if (!std::regex_search(s, config::pattern(pattern)))
        return at(ptr, "must match the pattern " + pattern);
    } catch (const std::regex_error&) {
      // Only a pathological input gets here (the pattern compiled at load):
      // refuse the value rather than let it through unchecked.
      return at(ptr, "could not be checked against the pattern " + pattern);
    }
  }
  return std::nullopt;
}

violation check_array(const json& schema, const json& value, const std::string& ptr) {
  if (auto it = schema.find("minItems"); it != schema.end() && value.size() < it->get<double>())
    return at(ptr, "must have at least " + it->dump() + " items");
  if (auto it = schema.find("maxItems"); it != schema.end() && value.size() > it->get<double>())
    return at(ptr, "must have at most " + it->dump() + " items");
  if (auto it = schema.find("items"); it != schema.end())
    for (std::size_t i = 0; i < value.size(); ++i)
      if (auto v = violation_at(*it, value[i], pointer_child(ptr, i))) return v;
  return std::nullopt;
}

violation check_object(const json& schema, const json& value, const std::string& ptr) {
  if (auto it = schema.find("required"); it != schema.end())
    for (const auto& name : *it)
      if (!value.contains(name.get<std::string>()))
        return at(pointer_child(ptr, name.get<std::string>()), "is required");
  auto props = schema.find("properties");
  auto extra = schema.find("additionalProperties");
  for (auto it = value.begin(); it != value.end(); ++it) {
    const std::string p = pointer_child(ptr, it.key());
    if (props != schema.end() && props->contains(it.key())) {
      if (auto v = violation_at((*props)[it.key()], it.value(), p)) return v;
    } else if (extra != schema.end()) {
      if (extra->is_boolean()) {
        if (!extra->get<bool>()) return at(p, "is not an allowed property");
      } else if (auto v = violation_at(*extra, it.value(), p)) {
        return v;
      }
    }
  }
  return std::nullopt;
}

violation violation_at(const json& schema, const json& value, const std::string& ptr) {
  if (auto it = schema.find("type"); it != schema.end()) {
    const json types = it->is_string() ? json::array({*it}) : *it;
    bool ok = false;
    std::string names;
    for (const auto& t : types) {
      ok = ok || has_type(value, t.get<std::string>());
      names += (names.empty() ? "" : " or ") + t.get<std::string>();
    }
    if (!ok) return at(ptr, "must be of type " + names);
  }
  if (auto it = schema.find("enum"); it != schema.end()) {
    bool found = false;
    for (const auto& e : *it) found = found || e == value;
    if (!found)
      return at(ptr, "must be one of " + it->dump(-1, ' ', false, json::error_handler_t::replace));
  }
  if (auto it = schema.find("const"); it != schema.end() && *it != value)
    return at(ptr, "must equal " + it->dump(-1, ' ', false, json::error_handler_t::replace));
  if (value.is_number()) return check_numeric(schema, value, ptr);
  if (value.is_string()) return check_string(schema, value.get_ref<const std::string&>(), ptr);
  if (value.is_array()) return check_array(schema, value, ptr);
  if (value.is_object()) return check_object(schema, value, ptr);
  return std::nullopt;
}

}  // namespace

status check_schema(const json& schema) {
  return check_at(schema, "");
}

std::optional<std::string> schema_violation(const json& schema, const json& value) {
  return violation_at(schema, value, "");
}

pinned_place pin_of(const json& schema, const std::string& pointer) {
  using k = pinned_place::kind;
  auto loose = [](std::string why) { return pinned_place{k::loose, {}, std::move(why)}; };
  // The single type a schema gives, or "".
  auto type_of = [](const json& s) -> std::string {
    auto t = s.find("type");
    if (t == s.end()) return {};
    if (t->is_string()) return t->get<std::string>();
    if (t->is_array() && t->size() == 1 && (*t)[0].is_string()) return (*t)[0].get<std::string>();
    return {};
  };
  std::vector<std::string> tokens;
  try {
    json::json_pointer p(pointer);
    for (json::json_pointer q = p; !q.empty(); q = q.parent_pointer())
      tokens.insert(tokens.begin(), q.back());
  } catch (const json::exception&) {
    return loose("\"" + pointer + "\" is not a JSON pointer");
  }
  const json* at = &schema;
  std::string where;  // the pointer into the schema, for messages
  auto place = [&where] { return where.empty() ? std::string("the parameters") : where; };
  for (const auto& token : tokens) {
    if (!at->is_object()) return loose(place() + " is not a schema object");
    const std::string type = type_of(*at);
    if (type == "object") {
      auto extra = at->find("additionalProperties");
      auto props = at->find("properties");
      const bool listed = props != at->end() && props->is_object() && props->contains(token);
      const bool closed = extra != at->end() && extra->is_boolean() && !extra->get<bool>();
      if (!closed)
        return loose(place() + (where.empty() ? " allow" : " allows") +
                     " properties not listed (\"additionalProperties\" is not false)");
      if (!listed) return {k::absent, {}, {}};
      where = pointer_child(pointer_child(where, "properties"), token);
      at = &(*props)[token];
    } else if (type == "array") {
      auto items = at->find("items");
      if (items == at->end() || !items->is_object())
        return loose(place() + " is an array without an \"items\" schema");
      const bool index =
          !token.empty() && token.find_first_not_of("0123456789") == std::string::npos;
      if (!index) return {k::absent, {}, {}};
      where = pointer_child(where, "items");
      at = &*items;
    } else {
      return loose(place() + (type.empty() ? " has no single \"type\"" : " is of type " + type) +
                   ", so \"" + token + "\" under it is not pinned down");
    }
  }
  if (!at->is_object()) return loose(place() + " is not a schema object");
  const std::string type = type_of(*at);
  if (type.empty()) return loose(place() + " has no single \"type\"");
  return {k::pinned, type, {}};
}

}  // namespace keel::config
