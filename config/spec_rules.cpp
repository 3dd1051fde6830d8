// How an agent-type spec's "guardrails", "signals" and "budgets" are read:
// every rule is checked against the declared tools' schemas, so that a rule
// that loads also holds.

#include <algorithm>
#include <string>
#include <vector>

#include "base/names.hpp"
#include "config/json_schema.hpp"
#include "config/spec_reader.hpp"

namespace keel::config::spec_detail {

bool declares(const std::vector<tool_spec>& tools, const std::string& name) {
  return std::any_of(tools.begin(), tools.end(),
                     [&](const tool_spec& t) { return t.name == name; });
}

status parse_tool_names(const fields& f, const char* key, const std::vector<tool_spec>& tools,
                        std::vector<std::string>& out) {
  const json* arr = f.find(key);
  if (!arr) return status::ok();
  if (!arr->is_array()) return f.fail_key(key, "must be an array of tool names");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const json& n = (*arr)[i];
    std::string where = pointer_child(f.at(key), i);
    if (!n.is_string()) return f.fail(where, "must be a string");
    std::string name = n.get<std::string>();
    if (!declares(tools, name)) return f.fail(where, "\"" + name + "\" is not a declared tool");
    out.push_back(std::move(name));
  }
  return status::ok();
}

// A rule holds only where the tool's schema pins its place down: a loose
// schema lets the same amount through as "1_000", [1000] or a lookalike
// key. So a rule whose place a schema leaves loose is refused, as is one
// comparing numbers on a string (or matching patterns on a non-string).
status check_rule_pinned(const fields& f, const std::vector<tool_spec>& tools, const arg_rule& r) {
  const bool numeric = r.above || r.below;
  bool anywhere = false;
  for (const auto& t : tools) {
    if (r.tool != "*" && r.tool != t.name) continue;
    const pinned_place place = pin_of(t.parameters, r.pointer);
    if (place.state == pinned_place::kind::absent) continue;
    if (place.state == pinned_place::kind::loose)
      return f.fail_key("pointer", "the parameters of tool " + t.name + " do not pin down " +
                                       r.pointer + " (" + place.why +
                                       "): a rule there could be passed by another form of the "
                                       "same value; give every object on the way "
                                       "\"additionalProperties\": false and the value one "
                                       "\"type\"");
    if (numeric && place.type != "number" && place.type != "integer")
      return f.fail_key(r.above ? "above" : "below", "compares numbers, but tool " + t.name +
                                                         " takes " + r.pointer + " as type " +
                                                         place.type);
    if (r.pattern && place.type != "string")
      return f.fail_key("pattern", "matches text, but tool " + t.name + " takes " + r.pointer +
                                       " as type " + place.type);
    anywhere = true;
  }
  if (!anywhere)
    return f.fail_key("pointer",
                      (r.tool == "*" ? "no tool's parameters allow "
                                     : "the parameters of tool " + r.tool + " allow no ") +
                          r.pointer + ", so the rule never matches");
  return status::ok();
}

status parse_rule(const fields& f, const std::vector<tool_spec>& tools, arg_rule& r) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"name", "tool", "pointer", "pattern", "above", "below", "action", "reason"}));
  KEEL_TRY(f.required("name"));
  KEEL_TRY(f.string("name", r.name));
  if (r.name.empty()) return f.fail_key("name", "must not be empty");

  r.tool = "*";
  KEEL_TRY(f.string("tool", r.tool));
  if (r.tool != "*" && !declares(tools, r.tool))
    return f.fail_key("tool", "\"" + r.tool + "\" is neither \"*\" nor a declared tool");

  KEEL_TRY(f.required("pointer"));
  KEEL_TRY(f.string("pointer", r.pointer));
  if (r.pointer.empty() || r.pointer.front() != '/')
    return f.fail_key("pointer", "must be a JSON pointer starting with \"/\"");
  try {
    json::json_pointer p(r.pointer);
  } catch (const json::exception&) {
    return f.fail_key("pointer", "is not a valid JSON pointer (escape ~ as ~0 and / as ~1)");
  }

  if (f.find("pattern")) {
    std::string pattern;
    KEEL_TRY(f.string("pattern", pattern));
    KEEL_TRY(compile_rule_pattern(f, pattern));
    r.pattern = pattern;
  }
  const double inf = std::numeric_limits<double>::infinity();
  if (f.find("above")) {
    double d = 0;
    KEEL_TRY(f.number("above", d, -inf, inf));
    r.above = d;
  }
  if (f.find("below")) {
    double d = 0;
    KEEL_TRY(f.number("below", d, -inf, inf));
    r.below = d;
  }
  if (!r.pattern && !r.above && !r.below)
    return f.fail(f.pointer(), "needs at least one of pattern, above, below");
  if (r.above && r.below && *r.above >= *r.below)
    return f.fail_key("below", "must be greater than above, or the rule never matches");

  std::string action = "deny";
  KEEL_TRY(f.string("action", action));
  if (action == "deny")
    r.action = arg_rule::action_kind::deny;
  else if (action == "require_approval")
    r.action = arg_rule::action_kind::require_approval;
  else
    return f.fail_key("action", "must be \"deny\" or \"require_approval\"");
  KEEL_TRY(f.string("reason", r.reason));
  return check_rule_pinned(f, tools, r);
}

status parse_guardrails(const fields& f, const std::vector<tool_spec>& tools, guardrails_spec& g) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"allow_tools", "deny_tools", "rules"}));
  KEEL_TRY(parse_tool_names(f, "allow_tools", tools, g.allow_tools));
  KEEL_TRY(parse_tool_names(f, "deny_tools", tools, g.deny_tools));
  const json* rules = f.find("rules");
  if (!rules) return status::ok();
  if (!rules->is_array()) return f.fail_key("rules", "must be an array of rules");
  std::map<std::string, std::size_t> names;
  for (std::size_t i = 0; i < rules->size(); ++i) {
    fields rf = f.sub((*rules)[i], pointer_child(f.at("rules"), i));
    arg_rule r;
    KEEL_TRY(parse_rule(rf, tools, r));
    auto [it, fresh] = names.emplace(r.name, i);
    if (!fresh)
      return rf.fail_key("name", "duplicate rule name \"" + r.name + "\" (also " +
                                     pointer_child(f.at("rules"), it->second) + ")");
    g.rules.push_back(std::move(r));
  }
  return status::ok();
}

// "signals": the type's own signal names; the built-in ones are refused,
// so that a declaration never changes what approve or pause do.
status parse_signals(const fields& f, std::vector<std::string>& out) {
  const json* arr = f.find("signals");
  if (!arr) return status::ok();
  if (!arr->is_array()) return f.fail_key("signals", "must be an array of signal names");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const json& n = (*arr)[i];
    const std::string where = pointer_child(f.at("signals"), i);
    if (!n.is_string()) return f.fail(where, "must be a string");
    const std::string name = n.get<std::string>();
    if (status ok = validate_signal_name(name); !ok) return f.fail(where, ok.message());
    auto built_in = [&name](const auto& list) {
      return std::find(list.begin(), list.end(), name) != list.end();
    };
    if (built_in(loop_signals) || built_in(node_signals))
      return f.fail(where, "\"" + name + "\" is a built-in signal; every agent loop takes it");
    if (std::find(out.begin(), out.end(), name) != out.end())
      return f.fail(where, "\"" + name + "\" is declared twice");
    out.push_back(name);
  }
  return status::ok();
}

status parse_budget_limits(const fields& f, budget_limits& b) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"model_calls", "tokens", "tool_calls", "wall_ms"}));
  KEEL_TRY(f.uint("model_calls", b.model_calls));
  KEEL_TRY(f.uint("tokens", b.tokens));
  KEEL_TRY(f.uint("tool_calls", b.tool_calls));
  KEEL_TRY(f.uint("wall_ms", b.wall_ms));
  return status::ok();
}

status parse_budgets(const fields& f, budgets_spec& b) {
  KEEL_TRY(f.expect_object());
  KEEL_TRY(f.only({"per_turn", "lifetime"}));
  if (f.find("per_turn")) KEEL_TRY(parse_budget_limits(f.sub("per_turn"), b.per_turn));
  if (f.find("lifetime")) KEEL_TRY(parse_budget_limits(f.sub("lifetime"), b.lifetime));
  return status::ok();
}

}  // namespace keel::config::spec_detail
