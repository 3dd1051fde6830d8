#pragma once
// The check that ends every test of a running keeld (or cluster): a strict
// replay (POST /v1/agents/{name}/replay) of each agent's ledger must be
// identical to what was recorded. Uses doctest assertions: include it from
// test files only. For an in-process node see support/replay_check.hpp.

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "http/client.hpp"

namespace keel::test {

// Lists every agent through the keeld on 127.0.0.1:`port` (GET /v1/agents,
// paged with ?after=; in a cluster the listing spans the members and each
// replay is answered by the agent's owner) and CHECKs that each strict
// replay is identical, quoting the divergence when it is not. `token` is
// the keeld's --token, if it has one. `local_only` lists with ?local=1
// only the agents stored on this member, for a member whose peers cannot
// all be reached. Terminated agents are listed too (?all=true); agents of a
// type the node has not loaded are skipped (counted in the closing
// MESSAGE); imported agents replay like any other.
// Does nothing while an exception unwinds (a REQUIRE failed: the test has
// failed already). Returns how many ledgers replayed identically.
inline int check_strict_replays_over_http(uint16_t port, const std::string& token = "",
                                          bool local_only = false) {
  using nlohmann::json;
  if (std::uncaught_exceptions() > 0) return 0;
  net::http_client c;
  // A long ledger takes a while to replay on a loaded 2-core machine.
  c.set_timeout(std::chrono::seconds(60));
  if (!token.empty()) c.set_header("Authorization", "Bearer " + token);
  auto connected = c.connect("127.0.0.1", port);
  CHECK_MESSAGE(connected.is_ok(), "replay check: " << connected.to_string());
  if (!connected) return 0;

  int identical = 0, skipped = 0;
  uint64_t events = 0;
  json after;  // null: the first page
  for (int pages = 0; pages < 10'000; ++pages) {
    std::string target = "/v1/agents?all=true&limit=1000";
    if (local_only) target += "&local=1";
    if (after.is_string()) target += "&after=" + net::percent_encode(after.get<std::string>());
    auto r = c.request("GET", target);
    CHECK_MESSAGE(r.is_ok(), "replay check: GET " << target << ": " << r.error().to_string());
    if (!r) return identical;
    json page = json::parse(r->body, nullptr, false);
    const bool listed = r->status == 200 && page.is_object() && page["agents"].is_array();
    CHECK_MESSAGE(listed, "replay check: GET " << target << ": " << r->status << " " << r->body);
    if (!listed) return identical;
    CHECK_MESSAGE(!page.contains("unavailable_nodes"),
                  "replay check: the listing misses members: " << page["unavailable_nodes"].dump());

    for (const auto& a : page["agents"]) {
      const std::string name = a.value("name", "");
      const std::string type = a.value("type", "");
      auto rr = c.request("POST", "/v1/agents/" + net::percent_encode(name) + "/replay", "{}");
      CHECK_MESSAGE(rr.is_ok(), "strict replay of " << name << ": " << rr.error().to_string());
      if (!rr) continue;
      json body = json::parse(rr->body, nullptr, false);
      const std::string message =
          body.is_object() && body["error"].is_object() ? body["error"].value("message", "") : "";
      if (rr->status == 409 && message.find("has not loaded") != std::string::npos) {
        ++skipped;
        continue;
      }
      CHECK_MESSAGE(rr->status == 200, "strict replay of " << name << " (" << type << "): "
                                                           << rr->status << " " << rr->body);
      if (rr->status != 200) continue;
      const bool same = body.is_object() && body.value("identical", false);
      CHECK_MESSAGE(
          same, "strict replay of " << name << " (" << type << ") is not identical: " << rr->body);
      if (same) {
        ++identical;
        events += body.value("events", uint64_t{0});
      }
    }
    after = page["next_after"];
    if (!after.is_string()) break;
  }
  MESSAGE("strict replay check: " << identical << " ledgers identical (" << events << " events), "
                                  << skipped << " of unknown types skipped");
  return identical;
}

}  // namespace keel::test
