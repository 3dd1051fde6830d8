// keel: the command line over a node's HTTP API v1. Its commands, their
// flags and help are the table in apps/keel_help.cpp.
//
// Exit codes: 0 ok (with --wait: answered); 1 the server answered with an
// error (its code and message go to stderr), the agent answered with one,
// or the server could not be reached; 2 a usage error. With --wait, send,
// signal, cancel, pause, resume, resolve and retry also end in
//   3  parked: the turn waits for a person (an approval, an answer to
//      ask_human, an effect in doubt); what for and the commands that
//      move it on are printed
//   4  the turn failed, was stopped (a budget) or was cancelled; the reason
//      is printed (and `keel retry NAME` for a failed or stopped one)
//   5  no reply within the wait, and the agent is still at it; its phase is
//      printed

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "apps/keel_cli.hpp"
#include "base/token_file.hpp"
#include "base/version.hpp"

namespace keel::cli_app {

std::optional<json> cli::call(const char* method, const std::string& target,
                              const std::string& body) {
  if (!connect()) return std::nullopt;
  auto r = client_.request(method, target, body);
  if (!r) {
    print_failure(r.error(), client_);
    return std::nullopt;
  }
  json j = json::parse(r->body, nullptr, false);
  if (r->status >= 400) {
    if (!j.is_discarded() && j.contains("error") && j["error"].is_object()) {
      const json& e = j["error"];
      std::fprintf(stderr, "keel: %s: %s (HTTP %u)\n", text_of(e.value("code", json())).c_str(),
                   text_of(e.value("message", json())).c_str(), r->status);
    } else {
      std::fprintf(stderr, "keel: HTTP %u: %s\n", r->status, r->body.c_str());
    }
    return std::nullopt;
  }
  if (j.is_discarded()) {
    std::fprintf(stderr, "keel: the server answered with something that is not JSON: %s\n",
                 r->body.c_str());
    return std::nullopt;
  }
  return j;
}

int cli::done(const json& j) {
  std::printf("%s\n", dump(j).c_str());
  return exit_ok;
}

void print_view(const json& v) {
  std::printf("name        %s\n", text_of(v.value("name", json())).c_str());
  std::printf("type        %s\n", text_of(v.value("type", json())).c_str());
  std::printf("status      %s\n", text_of(v.value("status", json())).c_str());
  if (v.contains("node")) std::printf("node        %s\n", text_of(v["node"]).c_str());
  std::printf("last_seq    %s\n", text_of(v.value("last_seq", json())).c_str());
  std::printf("hibernated  %s\n", text_of(v.value("hibernated", json())).c_str());
  if (v.contains("created_ms") && v["created_ms"].is_number_integer())
    std::printf("created     %s\n", iso_time(v["created_ms"].get<int64_t>()).c_str());
  // Agent loops: where the turn stands, and what it waits for.
  const std::string phase = v.value("phase", "");
  if (!phase.empty()) {
    std::string detail;
    const json& st = v.value("state", json());
    const json& wait = st.is_object() && st.contains("turn") && st["turn"].is_object()
                           ? st["turn"].value("wait", json())
                           : json();
    if (wait.is_object() && wait.contains("tool"))
      detail = ": " + text_of(wait["tool"]) + "(" + dump(wait.value("arguments", json())) + ")";
    std::printf("phase       %s%s\n", phase.c_str(), detail.c_str());
    if (st.is_object() && st.contains("last") && st["last"].is_object()) {
      const json& last = st["last"];
      std::printf(
          "last turn   %s: %s\n", text_of(last.value("status", json())).c_str(),
          text_of(last.contains("answer") ? last["answer"] : last.value("reason", json())).c_str());
    }
  }
  if (v.value("paused", false))
    std::printf("paused      yes (keel resume %s)\n", text_of(v["name"]).c_str());
  if (v.contains("parent") && v["parent"].is_object())
    std::printf("forked from %s at seq %s\n", text_of(v["parent"].value("name", json())).c_str(),
                text_of(v["parent"].value("at", json())).c_str());
  if (v.value("origin", "") == "import") std::printf("origin      imported ledger (read-only)\n");
  for (const auto& f : v.value("forks", json::array()))
    std::printf("fork        %s at seq %s\n", text_of(f.value("name", json())).c_str(),
                text_of(f.value("at", json())).c_str());
  if (v.contains("compacted_seq"))
    std::printf("compacted   through seq %s\n", text_of(v["compacted_seq"]).c_str());
  std::printf("state       %s\n", text_of(v.value("state", json())).c_str());
}

int cli::spawn() {
  expect_args(inv_, 2, 2);
  json req{{"name", inv_.args[1]}, {"type", inv_.args[0]}};
  if (auto in = opt(inv_, "input")) req["input"] = parse_json_arg(*in, "--input");
  auto j = call("POST", "/v1/agents", dump(req));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("spawned %s (%s)\n", text_of(j->value("name", json())).c_str(),
              text_of(j->value("type", json())).c_str());
  return exit_ok;
}

// Shared by send, signal, cancel and the operator controls: the
// acknowledgement and, with --wait, what became of it, as exit codes
// (see the header comment).
int cli::print_ack(const json& j) {
  const bool text = !inv_.json_out;
  if (!text)
    done(j);
  else if (j.value("queued", false))
    std::printf("queued id=%s (the agent's node is down; delivered when it returns)\n",
                text_of(j.value("id", json())).c_str());
  else
    std::printf("accepted id=%s seq=%s%s\n", text_of(j.value("id", json())).c_str(),
                text_of(j.value("seq", json())).c_str(),
                j.value("duplicate", false) ? " (duplicate: not processed again)" : "");
  if (!j.contains("reply")) {
    if (!opt(inv_, "wait") || j.value("duplicate", false)) return exit_ok;
    if (j.contains("phase")) return print_standing(j, true);
    if (text) std::printf("no reply within %s ms\n", opt(inv_, "wait")->c_str());
    return exit_no_reply;
  }
  const json& reply = j["reply"];
  if (reply.is_object() && reply.size() == 1 && reply.contains("error") &&
      reply["error"].is_object()) {
    std::fprintf(stderr, "keel: the agent answered with an error: %s: %s\n",
                 text_of(reply["error"].value("code", json())).c_str(),
                 text_of(reply["error"].value("message", json())).c_str());
    return exit_server;
  }
  // An agent loop's turn that waits instead of ending ({"status": "waiting"}).
  if (reply.is_object() && reply.value("status", "") == "waiting" && reply.contains("phase"))
    return print_standing(reply, false);
  if (text) std::printf("reply %s\n", dump(reply).c_str());
  // The outcome of a turn: {"turn", "status", "answer" | "reason"}.
  const std::string status =
      reply.is_object() && reply.contains("turn") ? reply.value("status", "") : "";
  if (status == "failed" || status == "stopped" || status == "cancelled") {
    if (text) {
      std::printf("%s: %s\n", status.c_str(), text_of(reply.value("reason", json())).c_str());
      if (status != "cancelled") std::printf("  retry: keel retry %s\n", inv_.args[0].c_str());
    }
    return exit_turn_failed;
  }
  return exit_ok;
}

int cli::print_standing(const json& s, bool timed_out) {
  const std::string phase = s.value("phase", "");
  const std::string& name = inv_.args[0];
  const json& w = s.value("wait", json());
  const std::string call = w.is_object() && w.contains("tool")
                               ? text_of(w["tool"]) + "(" + dump(w.value("arguments", json())) + ")"
                               : std::string("a call");
  const bool text = !inv_.json_out;
  const bool paused = s.value("paused", false);
  if (phase != "waiting_approval" && phase != "waiting_human" && phase != "in_doubt") {
    if (text) {
      if (timed_out)
        std::printf("no reply within %s ms; the agent is %s%s\n", opt(inv_, "wait")->c_str(),
                    phase.c_str(), paused ? " (paused)" : "");
      else
        std::printf("no reply yet: the agent is %s%s\n", phase.c_str(), paused ? " (paused)" : "");
      if (paused) std::printf("  resume: keel resume %s\n", name.c_str());
      std::printf("  follow: keel ledger %s -f\n", name.c_str());
    }
    return exit_no_reply;
  }
  if (!text) return exit_parked;
  if (phase == "waiting_approval") {
    std::printf("parked: waiting for approval of %s\n", call.c_str());
    std::printf("  approve: keel signal %s approve\n", name.c_str());
    std::printf("  reject: keel signal %s reject --payload '{\"reason\": \"...\"}'\n",
                name.c_str());
  } else if (phase == "waiting_human") {
    std::printf("parked: waiting for a person's answer to %s\n", call.c_str());
    std::printf("  answer: keel signal %s answer --payload '{\"answer\": \"...\"}'\n",
                name.c_str());
  } else {
    std::printf("parked: %s is in doubt (it may or may not have happened)\n",
                w.is_object() && w.contains("tool") ? text_of(w["tool"]).c_str() : "a call");
    std::printf("  resolve: keel resolve %s --outcome succeeded|failed|retry [--result JSON]\n",
                name.c_str());
  }
  if (paused) std::printf("  (paused: keel resume %s)\n", name.c_str());
  return exit_parked;
}

std::string wait_query(const invocation& inv) {
  std::string wait = number_opt(inv, "wait");
  return wait.empty() ? "" : "?wait=" + wait;
}

int cli::send() {
  expect_args(inv_, 2, 2);
  json req{{"body", parse_json_arg(inv_.args[1], "the message body")}};
  if (auto id = opt(inv_, "id")) req["id"] = *id;
  if (auto from = opt(inv_, "from")) req["from"] = *from;
  auto j = call("POST", agent_path(inv_.args[0]) + "/messages" + wait_query(inv_), dump(req));
  return j ? print_ack(*j) : exit_server;
}

int cli::signal() {
  expect_args(inv_, 2, 2);
  json req = json::object();
  if (auto p = opt(inv_, "payload")) req["payload"] = parse_json_arg(*p, "--payload");
  auto j = call(
      "POST",
      agent_path(inv_.args[0]) + "/signals/" + net::percent_encode(inv_.args[1]) + wait_query(inv_),
      dump(req));
  return j ? print_ack(*j) : exit_server;
}

int cli::show() {
  expect_args(inv_, 1, 1);
  auto j = call("GET", agent_path(inv_.args[0]));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  print_view(*j);
  return exit_ok;
}

int cli::ls() {
  expect_args(inv_, 0, 0);
  std::string q, again;  // the query; the flags the next page's command repeats
  auto add = [&q](const char* k, const std::string& v) {
    q += (q.empty() ? "?" : "&") + std::string(k) + "=" + net::percent_encode(v);
  };
  if (auto p = opt(inv_, "prefix")) {
    add("prefix", *p);
    again += " --prefix " + *p;
  }
  if (auto limit = number_opt(inv_, "limit"); !limit.empty()) {
    add("limit", limit);
    again += " --limit " + limit;
  }
  if (auto a = opt(inv_, "after")) add("after", *a);
  for (const auto& p : opt_all(inv_, "phase")) {
    add("phase", p);
    again += " --phase " + p;
  }
  if (opt(inv_, "waiting")) {
    add("waiting", "true");
    again += " --waiting";
  }
  if (opt(inv_, "all")) {
    add("all", "true");
    again += " --all";
  }
  auto j = call("GET", "/v1/agents" + q);
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::vector<std::vector<std::string>> rows;
  bool any_paused = false;
  for (const auto& a : j->value("agents", json::array())) {
    std::string created = a.contains("created_ms") && a["created_ms"].is_number_integer()
                              ? iso_time(a["created_ms"].get<int64_t>())
                              : "-";
    const bool paused = a.value("paused", false);
    any_paused = any_paused || paused;
    rows.push_back({text_of(a.value("name", json())), text_of(a.value("type", json())),
                    text_of(a.value("phase", json())), text_of(a.value("node", json())), created,
                    a.value("live", false) ? "live" : "hibernated", paused ? "paused" : ""});
  }
  std::vector<std::string> head{"NAME", "TYPE", "PHASE", "NODE", "CREATED", "MEMORY"};
  if (any_paused)
    head.push_back("PAUSED");
  else
    for (auto& r : rows) r.pop_back();
  print_table(head, rows);
  if (j->contains("next_after") && (*j)["next_after"].is_string())
    std::fprintf(stderr, "more: keel ls --after %s%s\n",
                 (*j)["next_after"].get<std::string>().c_str(), again.c_str());
  if (j->contains("unavailable_nodes"))
    std::fprintf(stderr, "not listed: nodes %s did not answer\n",
                 dump((*j)["unavailable_nodes"]).c_str());
  return exit_ok;
}

int cli::rm() {
  expect_args(inv_, 1, 1);
  auto j = call("DELETE", agent_path(inv_.args[0]));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("terminated %s (status %s, last_seq %s)\n", text_of(j->value("name", json())).c_str(),
              text_of(j->value("status", json())).c_str(),
              text_of(j->value("last_seq", json())).c_str());
  return exit_ok;
}

int cli::query() {
  expect_args(inv_, 1, 2);
  std::string body = inv_.args.size() == 2 ? dump(parse_json_arg(inv_.args[1], "the query")) : "";
  auto j = call("POST", agent_path(inv_.args[0]) + "/query", body);
  if (!j) return exit_server;
  return done(*j);
}

int cli::cancel() {
  expect_args(inv_, 1, 1);
  json req = json::object();
  if (auto by = opt(inv_, "by")) req["by"] = *by;
  auto j = call("POST", agent_path(inv_.args[0]) + "/cancel" + wait_query(inv_), dump(req));
  return j ? print_ack(*j) : exit_server;
}

int cli::tasks() {
  const std::string sub = inv_.args.empty() ? "" : inv_.args[0];
  if (sub.empty()) {
    expect_args(inv_, 0, 0);
    auto j = call("GET", "/v1/tasks");
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::vector<std::vector<std::string>> rows;
    const json queues = j->value("queues", json::object());
    for (const auto& [queue, st] : queues.items())
      rows.push_back(
          {queue, text_of(st.value("ready", json())), text_of(st.value("leased", json()))});
    print_table({"QUEUE", "READY", "LEASED"}, rows);
    std::printf("requeued after a lease ran out: %s\n",
                text_of(j->value("requeued", json())).c_str());
    return exit_ok;
  }
  if (sub == "poll") {
    expect_args(inv_, 2, 2);
    const std::string* worker = opt(inv_, "worker");
    if (!worker) usage_of(inv_);
    json req{{"queue", inv_.args[1]}, {"worker", *worker}};
    if (auto w = number_opt(inv_, "wait"); !w.empty()) req["wait_ms"] = std::stoull(w);
    auto j = call("POST", "/v1/tasks/poll", dump(req));
    if (!j) return exit_server;
    return done(*j);
  }
  if (sub == "complete" || sub == "fail") {
    const bool ok = sub == "complete";
    expect_args(inv_, 2, 2);
    json req = json::object();
    if (ok) {
      if (auto r = opt(inv_, "result")) req["result"] = parse_json_arg(*r, "--result");
    } else {
      const std::string* e = opt(inv_, "error");
      if (!e) usage_of(inv_);
      req["error"] = *e;
      for (const char* flag : {"retryable", "maybe-applied"}) {
        const std::string* r = opt(inv_, flag);
        if (!r) continue;
        if (*r != "true" && *r != "false")
          usage_fail(std::string("--") + flag + " must be true or false");
        req[std::string(flag) == "retryable" ? "retryable" : "maybe_applied"] = *r == "true";
      }
    }
    auto j = call("POST", "/v1/tasks/" + net::percent_encode(inv_.args[1]) + "/" + sub, dump(req));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("recorded %s\n", inv_.args[1].c_str());
    return exit_ok;
  }
  usage_fail(unknown_command(sub, "tasks"));
}

int cli::health() {
  expect_args(inv_, 0, 0);
  auto j = call("GET", "/v1/health");
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("%s", text_of(j->value("status", json())).c_str());
  for (auto it = j->begin(); it != j->end(); ++it)
    if (it.key() != "status") std::printf("  %s=%s", it.key().c_str(), text_of(*it).c_str());
  std::printf("\n");
  return exit_ok;
}

// "HOST:PORT" -> (host, port); a usage error otherwise.
std::pair<std::string, uint16_t> host_port(const std::string& s, const char* flag) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size() || s.size() - colon > 6 ||
      !std::all_of(s.begin() + colon + 1, s.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoul(s.substr(colon + 1)) == 0 || std::stoul(s.substr(colon + 1)) > 65535)
    usage_fail(std::string("--") + flag + " must be HOST:PORT, got '" + s + "'");
  return {s.substr(0, colon), static_cast<uint16_t>(std::stoul(s.substr(colon + 1)))};
}

int cli::cluster() {
  const std::string sub = inv_.args.empty() ? "status" : inv_.args[0];
  if (sub == "status") {
    expect_args(inv_, 0, 1);
    auto j = call("GET", "/v1/cluster");
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf(
        "cluster %s  epoch %s  shards %s  (asked %s)\n",
        text_of(j->value("cluster_id", json())).c_str(), text_of(j->value("epoch", json())).c_str(),
        text_of(j->value("shards", json())).c_str(), text_of(j->value("self", json())).c_str());
    std::printf("%-10s %-5s %-7s %-22s %-22s %s\n", "MEMBER", "UP", "SHARDS", "CLUSTER", "HTTP",
                "DETAIL");
    for (const auto& m : j->value("members", json::array())) {
      std::string cl =
          text_of(m.value("host", json())) + ":" + text_of(m.value("cluster_port", json()));
      std::string ht =
          text_of(m.value("http_host", json())) + ":" + text_of(m.value("http_port", json()));
      std::printf(
          "%-10s %-5s %-7s %-22s %-22s %s\n", text_of(m.value("id", json())).c_str(),
          m.value("up", false) ? "up" : "DOWN", text_of(m.value("shards", json())).c_str(),
          cl.c_str(), ht.c_str(),
          m.value("self", false) ? "(this node)" : text_of(m.value("detail", json(""))).c_str());
    }
    const json ob = j->value("outbox", json::object());
    std::printf("outbox: %s queued", text_of(ob.value("queued", json(0))).c_str());
    const json by_node = ob.value("by_node", json::object());
    for (const auto& [node, n] : by_node.items())
      std::printf("  %s=%s", node.c_str(), text_of(n).c_str());
    std::printf("  (delivered %s, dropped %s)\n", text_of(ob.value("delivered", json(0))).c_str(),
                text_of(ob.value("dropped", json(0))).c_str());
    if (j->contains("change"))
      std::printf("change in progress: %s\n", j->at("change").dump().c_str());
    if (j->contains("groups")) {
      // Replicated: the groups this member holds a copy of, and on the
      // leader how far behind each replica is.
      std::printf("replication %s\n%-6s %-10s %-6s %-10s %-9s %-9s %-9s %s\n",
                  text_of(j->value("replication", json())).c_str(), "GROUP", "ROLE", "TERM",
                  "LEADER", "LAST", "APPLIED", "COMMIT", "REPLICAS (lag)");
      for (const auto& g : j->at("groups")) {
        const uint64_t last = g.value("last_index", uint64_t{0});
        std::string replicas;
        for (const auto& r : g.value("replicas", json::array())) {
          const uint64_t match = r.value("match_index", uint64_t{0});
          // A member joining again after it lost its data: its role until
          // it is a voter.
          const std::string role = r.value("role", std::string("voter"));
          replicas += (replicas.empty() ? "" : " ") + text_of(r.value("member", json())) +
                      (role == "voter" ? "" : ":" + role) + "(" +
                      std::to_string(last > match ? last - match : 0) + ")";
        }
        std::string role = text_of(g.value("role", json()));
        if (role == "leader" && !g.value("ready", false)) role += "*";
        std::printf("%-6s %-10s %-6s %-10s %-9s %-9s %-9s %s\n",
                    text_of(g.value("group", json())).c_str(), role.c_str(),
                    text_of(g.value("term", json())).c_str(),
                    text_of(g.value("leader", json(""))).c_str(), std::to_string(last).c_str(),
                    text_of(g.value("applied_index", json())).c_str(),
                    text_of(g.value("commit_index", json())).c_str(), replicas.c_str());
        if (g.contains("joining"))
          std::printf("       joining: %s\n", text_of(g.at("joining")).c_str());
      }
    }
    return exit_ok;
  }
  if (sub == "add-node") {
    expect_args(inv_, 2, 2);
    const std::string* cl = opt(inv_, "cluster");
    const std::string* ht = opt(inv_, "http");
    if (!cl || !ht) usage_of(inv_);
    auto [ch, cp] = host_port(*cl, "cluster");
    auto [hh, hp] = host_port(*ht, "http");
    json member{{"id", inv_.args[1]},
                {"host", ch},
                {"cluster_port", cp},
                {"http_host", hh},
                {"http_port", hp}};
    auto j = call("POST", "/v1/cluster/members", dump(member));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("added %s: epoch %s, %s shards moved\n", inv_.args[1].c_str(),
                text_of(j->value("epoch", json())).c_str(),
                text_of(j->value("moved", json())).c_str());
    return exit_ok;
  }
  if (sub == "remove-node") {
    expect_args(inv_, 2, 2);
    auto j = call("DELETE", "/v1/cluster/members/" + net::percent_encode(inv_.args[1]));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("removed %s: epoch %s, %s shards moved\n", inv_.args[1].c_str(),
                text_of(j->value("epoch", json())).c_str(),
                text_of(j->value("moved", json())).c_str());
    return exit_ok;
  }
  usage_fail(unknown_command(sub, "cluster"));
}

int cli::run() {
  const std::string& c = inv_.command;
  // The request deadline must outlast the server's wait for a reply.
  if (auto w = opt(inv_, "wait");
      w && !w->empty() && w->size() < 10 &&
      std::all_of(w->begin(), w->end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    client_.set_timeout(std::chrono::milliseconds(30'000 + std::stoll(*w)));
  if (c == "spawn") return spawn();
  if (c == "send") return send();
  if (c == "signal") return signal();
  if (c == "show") return show();
  if (c == "ls") return ls();
  if (c == "ledger") return ledger();
  if (c == "rm") return rm();
  if (c == "query") return query();
  if (c == "health") return health();
  if (c == "cancel") return cancel();
  if (c == "tasks") return tasks();
  if (c == "cluster") return cluster();
  if (c == "audit") return audit();
  if (c == "replay") return replay();
  if (c == "fork") return fork();
  if (c == "import") return import();
  if (c == "compact") return compact();
  if (c == "pause" || c == "resume" || c == "resolve" || c == "retry") return control(c);
  if (c == "eval") return eval();
  if (c == "types") return types();
  if (c == "upgrade") return upgrade();
  if (c == "token") return token();
  if (c == "whoami") return whoami();
  if (c == "secret") return secret();
  if (c == "wait") return wait();
  usage_fail(c.empty() ? "no command given" : unknown_command(c));
}

}  // namespace keel::cli_app

namespace {

using namespace keel::cli_app;

// What keel prints without talking to a node: its version, help and
// completion script; nullopt when the command is for the node.
std::optional<int> answer_locally(const invocation& inv) {
  if (inv.version) {
    std::printf("%s\n", keel::version_line("keel").c_str());
    return exit_ok;
  }
  if (inv.command == "help" || (inv.help && inv.command.empty())) {
    std::fputs(help_text(inv.args).c_str(), stdout);
    return exit_ok;
  }
  if (inv.help) {
    std::vector<std::string> words{inv.command};
    if (!inv.args.empty()) words.push_back(inv.args[0]);
    std::fputs(help_text(words).c_str(), stdout);
    return exit_ok;
  }
  if (inv.command == "completion") {
    expect_args(inv, 1, 1);
    if (inv.args[0] != "bash")
      usage_fail("keel completion knows bash only, not '" + inv.args[0] + "'");
    std::fputs(completion_bash().c_str(), stdout);
    return exit_ok;
  }
  return std::nullopt;
}

// "(run keel send --help for its usage)": the help that the usage error is about.
std::string usage_hint(const usage_failure& u, const std::string& command) {
  std::string about = u.command;
  if (about.empty() && !command.empty() && entry_for(command, {})) about = command;
  return about.empty() ? "run keel --help for the commands"
                       : "run keel " + about + " --help for its usage";
}

}  // namespace

int main(int argc, char** argv) {
  std::string command;
  try {
    invocation inv = parse_command_line(argc, argv);
    command = inv.command;
    if (auto code = answer_locally(inv)) return *code;
    cli app(std::move(inv));
    return app.run();
  } catch (const usage_failure& u) {
    std::fprintf(stderr, "keel: %s\n(%s)\n", u.message.c_str(), usage_hint(u, command).c_str());
    return exit_usage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keel: %s\n", e.what());
    return exit_server;
  }
}
