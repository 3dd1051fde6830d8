#pragma once
// The check that ends every in-process node test: a strict replay of each
// agent's ledger (agent/replay.hpp) must decide exactly the recorded events.
// A test that leaves a ledger the pure core cannot reproduce has found a
// place where the shell recorded something decide() did not decide, or
// where decide() depends on more than its inputs. Uses doctest assertions:
// include it from test files only. For a keeld reached over HTTP see
// support/http_replay_check.hpp.

#include <cstdint>
#include <exception>
#include <memory>
#include <string>

#include <doctest/doctest.h>

#include "actors/ledger_ops.hpp"
#include "actors/node.hpp"

namespace keel::test {

// Agents listed per call of node::list.
inline constexpr std::size_t replay_check_page = 100;

// Replays every agent of `n` strictly and CHECKs each replay identical,
// quoting the divergence when it is not. Agents of a type this node does
// not know are skipped (counted in the closing MESSAGE); imported agents
// replay like any other. Does nothing while an exception unwinds (a
// REQUIRE failed: the test has failed already, and the ledgers may be
// half written) or once the node is stopped. Blocking: call it from the
// test's thread, never from a node callback.
inline void check_strict_replays(actors::node& n) {
  if (std::uncaught_exceptions() > 0) return;
  int identical = 0, skipped = 0;
  uint64_t events = 0;
  std::string after;
  for (;;) {
    // Terminated agents too: their ledgers replay like any other.
    auto page = n.list("", after, replay_check_page, {{}, true});
    if (!page && page.error().error_code() == code::unavailable) return;  // stopped
    CHECK_MESSAGE(page.is_ok(),
                  "listing agents for the replay check: " << page.error().to_string());
    if (!page) return;
    for (const auto& a : page->agents) {
      auto r = n.ledgers().replay(a.name, {});
      if (!r && r.error().error_code() == code::conflict &&
          r.error().message().find("has not loaded") != std::string::npos) {
        ++skipped;
        continue;
      }
      CHECK_MESSAGE(r.is_ok(), "strict replay of " << a.name << " (" << a.type
                                                   << "): " << r.error().to_string());
      if (!r) continue;
      const auto& strict = *r->strict;
      const std::string why = strict.diverged
                                  ? "diverged at seq " + std::to_string(strict.diverged->seq) +
                                        ": " + strict.diverged->reason
                                  : std::string();
      CHECK_MESSAGE(strict.identical, "strict replay of " << a.name << " (" << a.type
                                                          << ") is not identical: " << why);
      if (strict.identical) {
        ++identical;
        events += strict.events;
      }
    }
    if (page->next_after.empty()) break;
    after = page->next_after;
  }
  MESSAGE("strict replay check: " << identical << " ledgers identical (" << events << " events), "
                                  << skipped << " of unknown types skipped");
}

// A node that runs the check above when the test lets go of it, then stops.
struct replay_checking_delete {
  void operator()(actors::node* n) const {
    check_strict_replays(*n);
    delete n;
  }
};
using replay_checked_node = std::unique_ptr<actors::node, replay_checking_delete>;

inline replay_checked_node replay_checked(std::unique_ptr<actors::node> n) {
  return replay_checked_node(n.release());
}

}  // namespace keel::test
