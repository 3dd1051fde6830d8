#pragma once
// The exec tool runner: runs a tool_spec's argv in the exec sandbox
// (effects/exec_sandbox.hpp) with the tool's limits, its env on top of the
// sandbox's environment, and the call's timeout.
//
// The tool reads one JSON document on stdin:
//   {"arguments": <the model's arguments>, "idempotency_key": "<effect id>",
//    "attempt": n, "agent": "<agent name>"}
// and answers on stdout. How the run becomes an effect_outcome:
//   exit 0, stdout is one JSON document -> success(that document)
//   exit 0, stdout is anything else     -> success({"output": "<stdout>"})
//   exit 0, stdout cut at the tool's    -> success({"output": "<what was kept>",
//     limits.max_output_bytes                      "output_truncated": true})
//   wall timeout (ctx.timeout_ms)       -> failure, retryable, maybe applied
//   ctx.abort raised while it ran       -> failure, retryable, maybe applied:
//     (its processes are killed at once)   "... was aborted and killed"
//   ctx.abort raised before it started  -> failure, retryable, not applied
//   exit 75 (EX_TEMPFAIL, sysexits.h)   -> failure, retryable, not applied:
//                                          the tool's way to say "nothing
//                                          done, try again later"
//   an exit code the tool declares in   -> failure, permanent, not applied
//     not_applied.exit_codes
//   the program never started (not      -> failure, permanent, not applied
//     found, not executable: 127, 126)
//   any other exit code, or a signal    -> failure, permanent, maybe applied;
//                                          the message names the code or
//                                          signal and ends with the last
//                                          2 KiB of stderr
//   the sandbox failed (fork, pipe...)  -> failure, retryable, not applied
//   empty argv                          -> failure, permanent, not applied
// "maybe applied" puts a non-idempotent tool's call in doubt (see
// effect_outcome).
// Bytes of output or stderr that are not UTF-8 become U+FFFD, so results
// and messages always serialize as JSON. A retried call gets the same
// idempotency_key and a higher attempt.
//
// Thread-safe: run() may be called concurrently; it keeps no state.

#include "effects/contexts.hpp"
#include "effects/exec_sandbox.hpp"

namespace keel::actors {

inline constexpr int exit_tempfail = 75;  // EX_TEMPFAIL

class exec_tool final : public tool_runner {
 public:
  // `sandbox`: what every call's sandbox hides (the node's data directory).
  explicit exec_tool(sandbox_options sandbox = {}) : sandbox_(std::move(sandbox)) {}
  effect_outcome run(const config::tool_spec& tool, const json& arguments,
                     const tool_call_context& ctx) override;

 private:
  const sandbox_options sandbox_;
};

// The stdin document for one call, as described above.
json exec_tool_input(const json& arguments, const tool_call_context& ctx);

}  // namespace keel::actors
