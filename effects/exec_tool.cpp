#include "effects/exec_tool.hpp"

#include <algorithm>
#include <csignal>
#include <string>

#include "effects/exec_sandbox.hpp"

namespace keel::actors {

namespace {

constexpr std::size_t stderr_excerpt = 2 << 10;

// Tools print what they like; results and messages end up in JSON, whose
// serializer throws on invalid UTF-8. Invalid bytes become U+FFFD.
std::string valid_utf8(const std::string& text) {
  return json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

// The end of stderr is where the reason usually is (the exception, the last
// "error:" line). Cut at a UTF-8 character boundary, not inside one.
std::string stderr_tail(const std::string& text) {
  if (text.size() <= stderr_excerpt) return text;
  std::size_t from = text.size() - stderr_excerpt;
  while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;
  return "..." + text.substr(from);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGKILL:
      return "SIGKILL";
    case SIGTERM:
      return "SIGTERM";
    case SIGXCPU:
      return "SIGXCPU";
    case SIGXFSZ:
      return "SIGXFSZ";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGABRT:
      return "SIGABRT";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    case SIGPIPE:
      return "SIGPIPE";
    default:
      return nullptr;
  }
}

std::string describe_end(const exec_outcome& out) {
  if (out.signal != 0) {
    const char* name = signal_name(out.signal);
    std::string text = "was killed by signal " + std::to_string(out.signal);
    if (name != nullptr) text += std::string(" (") + name + ")";
    // The sandbox's own kills: SIGXCPU at the CPU soft limit, SIGKILL at the
    // hard one a second later (or from the kernel's OOM killer).
    if (out.signal == SIGXCPU) text += ": CPU time limit reached";
    if (out.signal == SIGKILL) text += ": CPU time limit or out of memory?";
    return text;
  }
  return "exited with code " + std::to_string(out.exit_code);
}

std::string with_stderr(std::string message, const exec_outcome& out) {
  std::string tail = valid_utf8(stderr_tail(out.stderr_text));
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  if (!tail.empty()) message += "; stderr: " + tail;
  return message;
}

}  // namespace

json exec_tool_input(const json& arguments, const tool_call_context& ctx) {
  return json{{"arguments", arguments},
              {"idempotency_key", ctx.idempotency_key},
              {"attempt", ctx.attempt},
              {"agent", ctx.agent}};
}

effect_outcome exec_tool::run(const config::tool_spec& tool, const json& arguments,
                              const tool_call_context& ctx) {
  const std::string who = "exec tool " + tool.name;
  if (tool.argv.empty()) return effect_outcome::failure(who + " has no argv", false);

  // Invalid UTF-8 in the arguments must not throw out of an effect thread;
  // replace it, the tool sees U+FFFD where the bad bytes were.
  std::string input =
      exec_tool_input(arguments, ctx).dump(-1, ' ', false, json::error_handler_t::replace);
  sandbox_options sandbox = sandbox_;
  sandbox.read_paths = tool.paths.read;
  sandbox.write_paths = tool.paths.write;
  sandbox.env = tool.env;  // its secrets were expanded by the caller
  auto ran = run_sandboxed(tool.argv, input, tool.limits, ctx.timeout_ms, sandbox, ctx.abort.get());
  // The sandbox itself failed (out of processes or file descriptors, say):
  // a condition of the node that may pass, and the tool never ran.
  if (!ran) return effect_outcome::failure(who + ": " + ran.error().message(), true);
  const exec_outcome& out = *ran;

  // Aborted (this node no longer leads the agent): another node may run the
  // call again, so it ends here; only a tool that never started proves that
  // nothing was done.
  if (out.aborted && !out.started)
    return effect_outcome::failure(who + " was aborted before it started", true);
  if (out.aborted) return effect_outcome::unknown(who + " was aborted and killed", true);

  // Killed while it ran: whatever it was doing may be done.
  if (out.timed_out)
    return effect_outcome::unknown(
        who + " timed out after " + std::to_string(ctx.timeout_ms) + " ms and was killed", true);
  if (out.signal == 0 && out.exit_code == 0) {
    // One JSON document, surrounding whitespace allowed. Anything else (two
    // documents, plain text, cut-off output that may still parse) is text.
    if (!out.output_truncated) {
      json parsed = json::parse(out.stdout_text, nullptr, /*allow_exceptions=*/false);
      if (!parsed.is_discarded()) return effect_outcome::success(std::move(parsed));
    }
    json text{{"output", valid_utf8(out.stdout_text)}};
    if (out.output_truncated) text["output_truncated"] = true;
    return effect_outcome::success(std::move(text));
  }
  // The program never ran: nothing was applied.
  if (!out.started)
    return effect_outcome::failure(with_stderr(who + " " + describe_end(out), out), false);
  if (out.signal == 0 && out.exit_code == exit_tempfail)
    return effect_outcome::failure(
        with_stderr(who + " asked to be retried (exit code 75, EX_TEMPFAIL)", out), true);
  const auto& declared = tool.not_applied.exit_codes;
  if (out.signal == 0 &&
      std::find(declared.begin(), declared.end(), out.exit_code) != declared.end())
    return effect_outcome::failure(
        with_stderr(who + " " + describe_end(out) + " (which it declares as not applied)", out),
        false);
  // Any other end does not prove that the tool did nothing.
  return effect_outcome::unknown(with_stderr(who + " " + describe_end(out), out), false);
}

}  // namespace keel::actors
