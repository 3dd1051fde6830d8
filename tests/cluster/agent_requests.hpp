#pragma once
// Requests about agents for cluster tests (spawn, query, ledger, a loop
// agent's view), placement by name, and the "ping" agent type that passes
// each message on to a counter with send_message. Uses doctest assertions:
// include it from test files only.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "cluster/test_cluster.hpp"
#include "config/cluster_config.hpp"
#include "support/http_replay_check.hpp"

namespace keel::test::cluster {

inline void spawn(client_set& c, const std::string& via, const std::string& name,
                  const std::string& type) {
  auto a = c.post(via, "/v1/agents", {{"name", name}, {"type", type}});
  REQUIRE_MESSAGE((a.transport_ok && a.status == 201),
                  "spawn " << name << " via " << via << ": " << a.describe());
}

inline void spawn_counter(client_set& c, const std::string& via, const std::string& name) {
  spawn(c, via, name, "counter");
}

// A type whose scripted model calls the http tool `tool` at `url` once
// (arguments {"entry": "e-1"}; up to 3 attempts of `timeout_ms`), then
// answers "done".
inline json one_http_call_type(const std::string& type, const std::string& tool,
                               const std::string& url, bool idempotent, uint32_t timeout_ms) {
  return {{"name", type},
          {"model",
           {{"provider", "scripted"},
            {"timeout_ms", 5000},
            {"script",
             {{"replies",
               {{{"content", nullptr},
                 {"tool_calls", {{{"name", tool}, {"arguments", {{"entry", "e-1"}}}}}}},
                {{"content", "done"}}}}}}}},
          {"tools",
           {{{"name", tool},
             {"description", "the " + tool + " tool"},
             {"parameters", {{"type", "object"}}},
             {"kind", "http"},
             {"url", url},
             {"idempotent", idempotent},
             {"retry", {{"attempts", 3}, {"backoff_ms", 50}, {"timeout_ms", timeout_ms}}}}}}};
}

// A counter's total, asked through `via`; nullopt when it does not answer.
inline std::optional<int64_t> query_total(client_set& c, const std::string& via,
                                          const std::string& name) {
  auto a = c.post(via, agent_path(name) + "/query", {{"get", true}});
  if (!a.transport_ok || a.status != 200 || !a.body.is_object() || !a.body.contains("total") ||
      !a.body["total"].is_number_integer())
    return std::nullopt;
  return a.body["total"].get<int64_t>();
}

// Every event of the agent's ledger, page by page, through `via`.
inline std::vector<json> read_ledger(client_set& c, const std::string& via,
                                     const std::string& name) {
  constexpr std::size_t page = 1000;
  std::vector<json> events;
  uint64_t from = 1;
  for (;;) {
    auto a = c.call(via, "GET",
                    agent_path(name) + "/ledger?from=" + std::to_string(from) +
                        "&limit=" + std::to_string(page));
    REQUIRE_MESSAGE((a.transport_ok && a.status == 200 && a.body.contains("events")),
                    "ledger of " << name << " via " << via << ": " << a.describe());
    for (const auto& e : a.body["events"]) events.push_back(e);
    if (!a.body["next"].is_number_unsigned()) return events;
    from = a.body["next"].get<uint64_t>();
  }
}

// The data of the events of one type.
inline std::vector<json> of_type(const std::vector<json>& events, const std::string& type) {
  std::vector<json> out;
  for (const auto& e : events)
    if (e.value("type", "") == type) out.push_back(e["data"]);
  return out;
}

// One "seq type data" line per event of `type`, for failure messages.
inline std::string summary(const std::vector<json>& events, const std::string& type) {
  std::string out;
  for (const auto& e : events)
    if (e.value("type", "") == type)
      out += std::to_string(e.value("seq", 0)) + " " + type + " " + e["data"].dump() + "\n";
  return out;
}

// How often each message id was received (message_received events).
inline std::map<std::string, int> message_ids(const std::vector<json>& events) {
  std::map<std::string, int> out;
  for (const auto& d : of_type(events, "message_received")) ++out[d.value("id", "")];
  return out;
}

// Completed turns of a loop agent; 0 when it does not answer.
inline uint64_t loop_turns(client_set& c, const std::string& via, const std::string& name) {
  auto a = c.call(via, "GET", agent_path(name));
  if (!a.transport_ok || a.status != 200 || !a.body.is_object() || !a.body["state"].is_object())
    return 0;
  return a.body["state"].value("turns", uint64_t{0});
}

// The strict replay check (support/http_replay_check.hpp) through member
// `via`: the listing spans the members, each replay is answered by the
// agent's owner. With `local_only`, only the agents stored on `via`.
// Returns how many ledgers replayed identically.
inline int check_replays(test_cluster& c, const std::string& via, bool local_only = false) {
  return check_strict_replays_over_http(c.http_ports().at(via), "", local_only);
}

// The first of prefix0, prefix1, ... that `owner` owns under `map`.
inline std::string name_owned_by(const config::shard_map& map, const std::string& prefix,
                                 const std::string& owner) {
  for (int i = 0; i < 100'000; ++i) {
    std::string name = prefix + std::to_string(i);
    if (map.owner_of(name) == owner) return name;
  }
  FAIL("no name with prefix " << prefix << " lives on " << owner);
  return {};
}

inline void write_json_file(const std::filesystem::path& p, const json& j) {
  std::ofstream out(p);
  out << j.dump(2);
  REQUIRE_MESSAGE(out.good(), "cannot write " << p.string());
}

// Writes the agent type "ping" into root/agents (its scripted model into
// root/scripts) and returns the agents folder. Each message to a ping agent
// is one turn of two model calls: the first has it send {"add": 1} to `pong`
// (send_message), the second ends the turn.
inline std::string write_ping_type(const std::filesystem::path& root, const std::string& pong) {
  namespace fs = std::filesystem;
  fs::create_directories(root / "agents");
  fs::create_directories(root / "scripts");
  const fs::path script = root / "scripts" / "ping.json";
  json send = {{"name", "notify"}, {"arguments", {{"to", pong}, {"message", {{"add", 1}}}}}};
  write_json_file(
      script,
      {{"replies",
        {{{"content", nullptr}, {"tool_calls", json::array({send})}}, {{"content", "passed on"}}}},
       {"cycle", true}});
  write_json_file(root / "agents" / "ping.json",
                  {{"name", "ping"},
                   {"description", "Passes every message on to pong."},
                   {"instructions", "Tell pong to add 1 for every message you get."},
                   {"model", {{"provider", "scripted"}, {"script", script.string()}}},
                   {"tools",
                    {{{"name", "notify"},
                      {"description", "Send a message to another agent."},
                      {"kind", "send_message"}}}}});
  return (root / "agents").string();
}

// A message a test plans to send, and what became of it.
struct planned_message {
  std::string id;
  int agent;
  int add;
};

// What became of a planned message.
enum outcome : int { unsent = 0, acked = 1 /* 202 */, not_acked = 2 /* no answer or 5xx */ };

// Why a message was not acknowledged, with numbers (ports, agents, seqs)
// blanked so that alike failures count together.
inline std::string why_not(const answer& a) {
  std::string why;
  if (!a.transport_ok) {
    auto p = a.error.find("failed: ");
    why = "no response: " + (p == std::string::npos ? a.error : a.error.substr(p + 8));
  } else {
    why = "HTTP " + std::to_string(a.status);
    if (a.body.is_object() && a.body["error"].is_object())
      why += " " + a.body["error"].value("message", "");
  }
  const std::size_t keep = why.starts_with("HTTP") ? 8 : 0;  // the status
  std::string out = why.substr(0, keep);
  for (std::size_t i = keep; i < why.size(); ++i) {
    bool digit = why[i] >= '0' && why[i] <= '9';
    if (!digit)
      out += why[i];
    else if (out.empty() || out.back() != '#')
      out += '#';
  }
  return out;
}

}  // namespace keel::test::cluster
