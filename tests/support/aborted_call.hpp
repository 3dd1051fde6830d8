#pragma once
// Runs an effect call on a thread of its own, raises its abort signal once
// `started` says the call is under way, and checks what every runner
// promises for a call aborted while it runs (effects/contexts.hpp): it
// returns within a bound far below its own timeout, as a retryable failure
// that may have been applied, saying it was aborted. Uses doctest
// assertions: include it from test files only.

#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "base/abort_signal.hpp"
#include "effects/contexts.hpp"
#include "support/wait.hpp"

namespace keel::test {

// `call` runs on the thread; `started` waits until it is under way (false:
// it never was). `error_part` is text the outcome's error must hold.
// Returns the outcome for further checks.
inline actors::effect_outcome abort_while_running(const std::string& what, abort_signal& abort,
                                                  std::function<actors::effect_outcome()> call,
                                                  const std::function<bool()>& started,
                                                  const std::string& error_part) {
  future_value<actors::effect_outcome> done;
  std::thread caller([&] { done.set(call()); });
  const bool running = started();
  const auto raised_at = std::chrono::steady_clock::now();
  abort.raise();
  auto out = done.wait(std::chrono::seconds(20));
  const auto took = std::chrono::steady_clock::now() - raised_at;
  caller.join();
  REQUIRE_MESSAGE(running, what << " never got under way");
  REQUIRE(out.has_value());
  MESSAGE("aborted " << what << " returned "
                     << std::chrono::duration_cast<std::chrono::microseconds>(took).count()
                     << " us after the raise");
  CHECK(took < std::chrono::seconds(2));
  CHECK_FALSE(out->ok);
  CHECK(out->retryable);
  CHECK(out->maybe_applied);
  CHECK_MESSAGE(out->error.find(error_part) != std::string::npos, out->error);
  return std::move(*out);
}

}  // namespace keel::test
