#pragma once
// Internal to config/ (agent_spec.cpp, spec_tools.cpp, spec_rules.cpp): how
// an agent-type spec is read. `fields` wraps one JSON object of the spec
// with typed accessors whose errors name the value's JSON pointer; the
// parse_* functions read one part of the spec each.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "base/status.hpp"
#include "config/agent_spec.hpp"
#include "config/patterns.hpp"

namespace keel::config::spec_detail {

inline std::string format_number(double d) {
  std::ostringstream os;
  os << d;
  return os.str();
}

// One JSON object of the spec being read: typed accessors that name the
// value's pointer in every error, and a check that no key is unknown.
class fields {
 public:
  fields(const std::string& source, const json& obj, std::string ptr)
      : source_(source), obj_(obj), ptr_(std::move(ptr)) {}

  status fail(const std::string& ptr, const std::string& what) const {
    return error(code::invalid_argument, source_ + ": " + (ptr.empty() ? "/" : ptr) + ": " + what);
  }
  status fail_key(const char* key, const std::string& what) const { return fail(at(key), what); }

  std::string at(const char* key) const { return pointer_child(ptr_, key); }
  const std::string& pointer() const { return ptr_; }
  const json* find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }

  status expect_object() const {
    return obj_.is_object() ? status::ok() : fail(ptr_, "must be an object");
  }

  status only(std::initializer_list<const char*> known) const {
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      if (std::any_of(known.begin(), known.end(), [&](const char* k) { return it.key() == k; }))
        continue;
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      return fail(pointer_child(ptr_, it.key()), "unknown key; expected one of " + list);
    }
    return status::ok();
  }

  status required(const char* key) const {
    return find(key) ? status::ok() : fail_key(key, "is required");
  }

  status string(const char* key, std::string& out) const {
    const json* v = find(key);
    if (!v) return status::ok();
    if (!v->is_string()) return fail_key(key, "must be a string");
    out = v->get<std::string>();
    return status::ok();
  }

  status boolean(const char* key, bool& out) const {
    const json* v = find(key);
    if (!v) return status::ok();
    if (!v->is_boolean()) return fail_key(key, "must be true or false");
    out = v->get<bool>();
    return status::ok();
  }

  template <class T>
  status uint(const char* key, T& out, uint64_t min = 0) const {
    const json* v = find(key);
    if (!v) return status::ok();
    const auto max = static_cast<uint64_t>(std::numeric_limits<T>::max());
    // 3.0 is an integer too; the float bound keeps the conversion defined.
    bool integral = v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0) ||
                    (v->is_number_float() && v->get<double>() >= 0 &&
                     std::floor(v->get<double>()) == v->get<double>() &&
                     v->get<double>() < 18446744073709551616.0);
    if (!integral || v->get<uint64_t>() < min)
      return fail_key(key, "must be an integer >= " + std::to_string(min));
    if (v->get<uint64_t>() > max)
      return fail_key(key, "must be an integer <= " + std::to_string(max));
    out = static_cast<T>(v->get<uint64_t>());
    return status::ok();
  }

  template <class T>
  status optional_uint(const char* key, std::optional<T>& out, uint64_t min) const {
    if (!find(key)) return status::ok();
    T v{};
    KEEL_TRY(uint(key, v, min));
    out = v;
    return status::ok();
  }

  // A number in [lo, hi]; hi = infinity for no upper bound.
  status number(const char* key, double& out, double lo, double hi) const {
    const json* v = find(key);
    if (!v) return status::ok();
    if (!v->is_number() || v->get<double>() < lo || v->get<double>() > hi) {
      return fail_key(key, std::isinf(hi) ? "must be a number >= " + format_number(lo)
                                          : "must be a number between " + format_number(lo) +
                                                " and " + format_number(hi));
    }
    out = v->get<double>();
    return status::ok();
  }

  fields sub(const char* key) const { return fields(source_, *find(key), at(key)); }
  const std::string& source() const { return source_; }
  fields sub(const json& obj, std::string ptr) const {
    return fields(source_, obj, std::move(ptr));
  }

 private:
  const std::string& source_;
  const json& obj_;
  std::string ptr_;
};

// [a-z0-9][a-z0-9_.-]{0,63}
bool is_agent_type_name(const std::string& s);
// Compiled as agent/guardrails.cpp runs it (config/patterns.hpp), so that
// what loads also runs.
status compile_rule_pattern(const fields& f, const std::string& pattern);

// spec_tools.cpp: "model" (a script file is read relative to `base_dir`)
// and "tools".
status parse_model(const fields& f, const std::string& base_dir, model_spec& m);
status parse_tools(const fields& top, std::vector<tool_spec>& tools);

// spec_rules.cpp: "guardrails" (over the declared `tools`), "signals" and
// "budgets".
status parse_guardrails(const fields& f, const std::vector<tool_spec>& tools, guardrails_spec& g);
status parse_signals(const fields& f, std::vector<std::string>& out);
status parse_budgets(const fields& f, budgets_spec& b);

}  // namespace keel::config::spec_detail
