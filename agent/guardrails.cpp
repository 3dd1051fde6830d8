#include "agent/guardrails.hpp"

#include "config/patterns.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <regex>
#include <utility>

#include "config/json_schema.hpp"

namespace keel::agent {

using config::arg_rule;
using nlohmann::json;

const char* to_string(guardrail_verdict::kind k) {
  switch (k) {
    case guardrail_verdict::kind::allow:
      return "allow";
    case guardrail_verdict::kind::deny:
      return "deny";
    case guardrail_verdict::kind::require_approval:
      return "require_approval";
    case guardrail_verdict::kind::invalid:
      return "invalid";
  }
  return "unknown";
}

namespace {

// "120", " 1.2e2 " count as numbers so that quoting an amount does not
// dodge an above/below rule. Anything strtod reads completely counts,
// including hex ("0x78") and "inf", for the same reason.
std::optional<double> as_number(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (!v.is_string()) return std::nullopt;
  const std::string& s = v.get_ref<const std::string&>();
  const char* begin = s.c_str();
  char* end = nullptr;
  double d = std::strtod(begin, &end);
  if (end == begin) return std::nullopt;
  while (*end != '\0' && std::isspace(static_cast<unsigned char>(*end))) ++end;
  if (*end != '\0' || static_cast<std::size_t>(end - begin) != s.size()) return std::nullopt;
  return d;
}

bool search(const std::string& text, const std::regex& re) {
  try {
    return std::regex_search(text, re);
  } catch (const std::regex_error&) {
    // The engine gave up (complexity or stack limit) on this input: treat
    // it as a match, so an oversized argument cannot slip past a rule.
    return true;
  }
}

// A text matches as sent, or in its normalized form (config/patterns.hpp:
// spaces trimmed and folded, format characters dropped, fullwidth forms,
// other scripts' digits and Latin lookalikes made plain), so " vip-7" or
// "vір-7" cannot pass a rule that "vip-7" does not.
bool search_text(const std::string& text, const std::regex& re) {
  if (search(text, re)) return true;
  const std::string plain = config::normalized_text(text);
  return plain != text && search(plain, re);
}

// Strings are searched as they are. Any other value is searched as its JSON
// text and, for objects and arrays, every key and string inside is searched
// on its own too: the dump escapes a tab as "\t", which a pattern written
// for the raw text would miss.
bool pattern_matches(const json& v, const std::regex& re) {
  if (v.is_string()) return search_text(v.get_ref<const std::string&>(), re);
  // Arguments decoded from MessagePack may hold invalid UTF-8, on which a
  // strict dump() throws.
  if (search(v.dump(-1, ' ', false, json::error_handler_t::replace), re)) return true;
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it)
      if (search_text(it.key(), re) || pattern_matches(it.value(), re)) return true;
  } else if (v.is_array()) {
    for (const auto& e : v)
      if (pattern_matches(e, re)) return true;
  }
  return false;
}

// The value at `pointer`, or null when the arguments do not have one (an
// index past the end or too large to be one is absent too).
const json* value_at(const json& arguments, const std::string& pointer) {
  try {
    json::json_pointer ptr(pointer);
    if (!arguments.contains(ptr)) return nullptr;
    return &arguments.at(ptr);
  } catch (const json::exception&) {
    return nullptr;
  }
}

// Every condition the rule sets must hold.
bool rule_matches(const arg_rule& rule, const json& arguments) {
  const json* value_ptr = value_at(arguments, rule.pointer);
  if (!value_ptr) return false;
  const json& value = *value_ptr;
  if (rule.pattern) {
    const std::regex* re = nullptr;
    try {
      re = &config::pattern(*rule.pattern);
    } catch (const std::regex_error&) {
      // Specs are checked at load, so only a hand-built rule gets here:
      // fail closed.
      return true;
    }
    if (!pattern_matches(value, *re)) return false;
  }
  if (rule.above || rule.below) {
    auto n = as_number(value);
    if (!n) return false;
    if (rule.above && !(*n > *rule.above)) return false;
    if (rule.below && !(*n < *rule.below)) return false;
  }
  return true;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

guardrail_verdict verdict(guardrail_verdict::kind k, std::string rule, std::string reason) {
  return {k, std::move(rule), std::move(reason)};
}

}  // namespace

guardrail_verdict check_tool_call(const config::agent_spec& spec, const std::string& tool,
                                  const json& arguments) {
  using kind = guardrail_verdict::kind;
  const config::tool_spec* t = spec.find_tool(tool);
  if (!t) {
    std::string names;
    for (const auto& d : spec.tools) names += (names.empty() ? "" : ", ") + d.name;
    return verdict(kind::invalid, "unknown_tool",
                   "there is no tool named \"" + tool +
                       "\"; the tools are: " + (names.empty() ? "(none)" : names));
  }
  if (auto v = config::schema_violation(t->parameters, arguments))
    return verdict(kind::invalid, "schema",
                   "the arguments of " + tool + " do not match its schema: " + *v);

  const auto& g = spec.guardrails;
  if (contains(g.deny_tools, tool))
    return verdict(kind::deny, "deny_tools", "the tool " + tool + " is denied (deny_tools)");
  if (!g.allow_tools.empty() && !contains(g.allow_tools, tool))
    return verdict(kind::deny, "allow_tools",
                   "the tool " + tool + " is not in the allowed tools (allow_tools)");

  const arg_rule* approval = nullptr;
  for (const auto& rule : g.rules) {
    if (rule.tool != "*" && rule.tool != tool) continue;
    if (!rule_matches(rule, arguments)) continue;
    if (rule.action == arg_rule::action_kind::deny)
      return verdict(kind::deny, rule.name,
                     rule.reason.empty() ? "denied by rule " + rule.name : rule.reason);
    if (!approval) approval = &rule;
  }
  if (approval)
    return verdict(kind::require_approval, approval->name,
                   approval->reason.empty() ? "rule " + approval->name + " requires approval"
                                            : approval->reason);
  if (t->require_approval)
    return verdict(kind::require_approval, "require_approval",
                   "every call of " + tool + " needs a human's approval");
  return {};
}

}  // namespace keel::agent
