#pragma once
// Agent types and starting points that more than one agent-loop suite on a
// loop_node (support/loop_node.hpp) builds on: the demo's approval rule, the
// fake OpenAI model as a spec's model, a booking whose refund waits for
// approval after a compensable call, and a ledger writer whose call is held
// at the fake tool server. Uses doctest assertions: include it from test
// files only.

#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "support/fake_openai_server.hpp"
#include "support/fake_tool_server.hpp"
#include "support/loop_node.hpp"

namespace keel::test::loop {

// Refunds above 100 need a human's approval (the demo's rule).
inline json big_refund_needs_approval() {
  return {{"rules",
           {{{"name", "big-refund"},
             {"tool", "refund"},
             {"pointer", "/amount"},
             {"above", 100},
             {"action", "require_approval"},
             {"reason", "refunds above 100 need a human"}}}}};
}

inline json openai_model(const fake_openai_server& model) {
  return {{"provider", "openai"},
          {"model", "gpt-test"},
          {"base_url", model.base_url()},
          {"timeout_ms", 5000}};
}

// --- a booking that waits for approval ---------------------------------------

// Reserves room 4 (undone by release), then asks to refund 500, which needs
// approval, then answers "done".
inline json booking_spec(loop_node& n, const fake_tool_server& tools) {
  json reserve = http_tool(tools, "reserve", false);
  reserve["compensate"] = "release";
  return {
      {"name", "booking"},
      {"model", scripted_model(n.write_script(
                    "booking", {calls_reply({tool_call("reserve", {{"item", "room-4"}})}),
                                calls_reply({tool_call("refund", {{"order", 9}, {"amount", 500}})}),
                                text_reply("done")}))},
      {"tools",
       {reserve, http_tool(tools, "release", true),
        pinned(http_tool(tools, "refund", false), refund_parameters())}},
      {"guardrails", big_refund_needs_approval()}};
}

// Starts `n` with the booking type and `agent` of it waiting for approval
// of the refund, room 4 reserved once.
inline void start_booking_awaiting_approval(const fake_tool_server& tools, loop_node& n,
                                            const std::string& agent) {
  n.write_spec(booking_spec(n, tools));
  n.start();
  n.spawn(agent, "booking");
  n.send(agent, "book room 4 and refund the deposit");
  n.wait_phase(agent, "waiting_approval");
  REQUIRE(tools.calls("reserve") == 1);
}

// A booking cancelled (by an anonymous request of the tests' keeld) while it waited: its ledger has
// the cancel, the release of the reservation (effect `reserved`) and the cancelled turn, in that
// order.
inline void check_booking_cancelled(const std::vector<json>& events, uint64_t reserved) {
  check_in_order(
      events,
      {{"approval_requested", {{"tool", "refund"}}},
       {"signal_received", {{"signal", "cancel"}, {"payload", {{"by", "anonymous"}}}}},
       {"compensation_started", {{"tool", "release"}, {"for", reserved}}},
       {"compensation_completed", {{"for", reserved}, {"ok", true}}},
       {"turn_completed", {{"status", "cancelled"}, {"reason", "cancelled by anonymous"}}}});
}

// --- a call held at the tool server ------------------------------------------

// An agent that makes one http call of post_entry, then answers "posted".
inline json ledger_writer_spec(loop_node& n, const fake_tool_server& tools, bool idempotent) {
  return {{"name", "ledger-writer"},
          {"model", scripted_model(n.write_script(
                        "ledger-writer",
                        {calls_reply({tool_call("post_entry", {{"entry", "e-1"}, {"amount", 5}})}),
                         text_reply("posted")}))},
          {"tools", {http_tool(tools, "post_entry", idempotent)}}};
}

// Starts `n` with a ledger-writer `agent` whose post_entry call is held at
// the tool server (already applied there, its answer not yet sent): the
// moment to SIGKILL.
inline void start_held_post(fake_tool_server& tools, loop_node& n, const std::string& agent,
                            bool idempotent) {
  tool_behaviour held;
  held.hold = true;
  tools.set_behaviour("post_entry", held);
  n.write_spec(ledger_writer_spec(n, tools, idempotent));
  n.start();
  n.spawn(agent, "ledger-writer");
  n.send(agent, "post the entry");
  REQUIRE(tools.wait_for_held(1, deadline));
}

}  // namespace keel::test::loop
