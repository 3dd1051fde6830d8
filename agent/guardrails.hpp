#pragma once
// Guardrails: the runtime's verdict on one proposed tool call, made between
// the model's proposal and any execution. Pure and deterministic: the same
// spec, tool and arguments always give the same verdict, so replay
// reproduces it and a model cannot talk its way past a rule.
//
// Order: a call to a tool the spec does not declare, or whose arguments
// fail the tool's schema, is `invalid`; then deny_tools, then allow_tools
// (when non-empty), then every argument rule (a matching deny rule wins over
// a matching approval rule), then the tool's require_approval flag.

#include <string>

#include <nlohmann/json.hpp>

#include "config/agent_spec.hpp"

namespace keel::agent {

struct guardrail_verdict {
  enum class kind { allow, deny, require_approval, invalid };
  kind verdict = kind::allow;
  std::string rule;    // "deny_tools", "allow_tools", "schema", "unknown_tool",
                       // "require_approval", or the arg_rule's name; empty for allow
  std::string reason;  // a sentence for the model and the ledger
};

const char* to_string(guardrail_verdict::kind k);

guardrail_verdict check_tool_call(const config::agent_spec& spec, const std::string& tool,
                                  const nlohmann::json& arguments);

}  // namespace keel::agent
