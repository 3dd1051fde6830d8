#pragma once
// Built-in agent type "counter", for tests, demos and benchmarks.
//
//   {"add": n}                  adds n to total, replies {"total"}
//   {"add": n, "delay_ms": d}   sets a durable timer that adds n after d ms
//   {"get": true}               replies {"total"}
//   anything else               recorded, answered with invalid_message
//   signal "reset"              sets total to 0 (the node refuses other
//                               signals; ledgers written before it did
//                               record them, and still replay)
//
// Spawn input: null or {"total": n, "label": "..."}; the label (at most
// 64 KiB) is carried in the state unchanged, e.g. to give benchmarks a
// realistic state size.

#include "agent/core.hpp"

namespace keel::agent {

class counter_type final : public agent_type {
 public:
  std::string_view name() const override { return "counter"; }
  std::vector<std::string> signals() const override { return {"reset"}; }
  result<json> initial_data(const json& input) const override;
  void on_message(const agent_state& s, const message_input& m, int64_t now_ms,
                  decision& out) const override;
  void on_signal(const agent_state& s, const signal_input& sig, int64_t now_ms,
                 decision& out) const override;
  void on_timer(const agent_state& s, const pending_timer& t, int64_t now_ms,
                decision& out) const override;
  void apply(agent_state& s, const event& e) const override;
  result<json> query(const agent_state& s, const json& q) const override;
};

}  // namespace keel::agent
