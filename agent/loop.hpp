#pragma once
// The agent loop: an agent type declared by a spec (config/agent_spec.hpp).
// The model proposes, the runtime decides and executes, one recorded step at
// a time:
//
//   message/signal -> turn_started -> model_requested -> model_replied
//     -> per proposed tool call: guardrail_decided
//          -> refused (deny, invalid, rejected): a refusal goes to the model
//          -> approval_requested ... signal approve|reject
//          -> effect_started -> effect_completed | effect_failed (retry via a
//             durable timer) | effect_in_doubt (after a crash) ... resolve
//     -> model_requested ... until a reply without tool calls
//   -> turn_completed {status: completed | failed | cancelled | stopped}
//   ... signal retry (after failed or stopped): the failed turn's input again,
//       as a new turn (turn_started {retry_of})
//
// A failed or cancelled turn first runs the compensations of its completed
// tool calls in reverse order (compensation_started/_completed). Budgets and
// max_steps_per_turn stop a turn with the limit named in the reason.
//
// All decisions are pure functions of the state, the input and the time in
// the input, so recovery and replay fold the same ledger to the same state.
// The state's data is {"ctl": {...}, "conversation": [...]}; the model
// request is rebuilt from it for every call and never stored.

#include <memory>

#include "agent/core.hpp"
#include "config/agent_spec.hpp"

namespace keel::agent {

class loop_type final : public agent_type {
 public:
  // `as_version`: the version it records (its spawns' version and
  // ctl.spec_hash); the spec's hash when empty. Another spec standing in
  // for a recorded version is how a replay evaluates an edited spec against
  // ledgers written by the old one.
  explicit loop_type(std::shared_ptr<const config::agent_spec> spec, std::string as_version = {});

  const config::agent_spec& spec() const { return *spec_; }
  std::shared_ptr<const config::agent_spec> spec_ptr() const { return spec_; }

  std::string_view name() const override { return spec_->name; }
  std::string_view version() const override { return version_; }
  // Refused while the agent waits in a call of a tool this spec lacks.
  status can_take_over(const agent_state& s) const override;
  // config::loop_signals and the spec's own.
  std::vector<std::string> signals() const override;
  status signal_applies(const agent_state& s, const signal_input& sig) const override;
  result<json> initial_data(const json& input) const override;
  void on_message(const agent_state& s, const message_input& m, int64_t now_ms,
                  decision& out) const override;
  void on_signal(const agent_state& s, const signal_input& sig, int64_t now_ms,
                 decision& out) const override;
  void on_timer(const agent_state& s, const pending_timer& t, int64_t now_ms,
                decision& out) const override;
  void on_effect_result(const agent_state& s, const effect_result_input& r, int64_t now_ms,
                        decision& out) const override;
  void on_recover(const agent_state& s, const recover_input& r, int64_t now_ms,
                  decision& out) const override;
  bool needs_recovery(const agent_state& s) const override;
  void apply(agent_state& s, const event& e) const override;
  result<json> query(const agent_state& s, const json& q) const override;
  json view(const agent_state& s) const override;
  std::string phase(const agent_state& s) const override;
  // The id of the input whose turn runs or waits ("" when none): a
  // message's id, or signal_input_id() of the signal that started it.
  std::string turn_id(const agent_state& s) const;
  std::vector<uint64_t> open_effects(const agent_state& s) const override;

  // The chat-completions request for the model call the state waits for:
  // the instructions as the system message, the conversation, the tools.
  json model_request(const agent_state& s) const;

 private:
  std::shared_ptr<const config::agent_spec> spec_;
  std::string version_;
  json tools_;  // the request's "tools", built once from the spec
};

// The wait before attempt `attempt + 1` of an effect: exponential backoff
// with jitter derived from (effect, attempt), so replay computes the same.
int64_t retry_delay_ms(const config::retry_policy& p, uint64_t effect, uint32_t attempt);

}  // namespace keel::agent
