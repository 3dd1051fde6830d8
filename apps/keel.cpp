// keel: the command line over a node's HTTP API v1.
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

namespace keel::cli_app {

constexpr const char* usage_text =
    R"(usage: keel [--server URL] [--token TOKEN] [--json] COMMAND [ARGS]

Talks to a keeld node over its HTTP API.

commands:
  spawn TYPE NAME [--input JSON]          create an agent
  send NAME BODY_JSON [--id ID] [--from NAME] [--wait MS]
                                          send a message; --wait shows the reply
                                          (exit codes below)
  signal NAME SIGNAL [--payload JSON] [--wait MS]
                                          send a signal the agent's type takes
  show NAME                               status, phase, node, last seq and state
  ls [--prefix P] [--limit N] [--after NAME] [--phase P]... [--waiting] [--all]
                                          list agents with their phase and node
                                          (no agent is woken); --waiting: those
                                          waiting for a person; --all: terminated
                                          ones too
  retry NAME [--by WHO] [--wait MS]       run a failed (or stopped) turn again
                                          with the same input
  ledger NAME [--from SEQ] [--limit N] [-f]
                                          the agent's timeline; --json writes one
                                          event per line (the export format);
                                          -f follows new events as they happen
  rm NAME                                 terminate an agent (its ledger stays)
  query NAME [JSON]                       ask the agent's state (read-only)
  cancel NAME [--by WHO] [--wait MS]      cancel the agent's turn; completed tool
                                          calls are compensated in reverse order
  pause NAME [--by WHO]                   finish the current step, then hold;
                                          messages queue durably
  resume NAME [--by WHO]                  go on where it held
  resolve NAME --outcome succeeded|failed|retry [--result JSON] [--by WHO]
                                          settle an effect in doubt
  audit verify NAME                       check the ledger's hash chain
  replay NAME                             strict replay: identical, or the first
                                          seq where decisions differ
  replay NAME --override SEQ=FILE... [--overrides FILE] [--policy P] [--script FILE]
                                          what if the model (or a tool) had said
                                          FILE at SEQ: side by side with the
                                          original; P = recorded | scripted | stop
  replay NAME --spec FILE                 the same with an edited agent-type spec
                                          deciding: where would it decide otherwise?
  fork NAME --at SEQ [--override FILE] --as NEW [--by WHO]
                                          a new agent sharing NAME's ledger up to
                                          SEQ, going on live from there
  import NAME FILE.jsonl [--unverified]   load an exported ledger (read-only); each line's
                                          hash is checked; --unverified loads one without
                                          its chain, which audit then reports as unverified
  compact NAME --before SEQ               fold older events into a snapshot and
                                          archive them on the node
  eval SUITE.json [--spec FILE]           run a suite of replays with expectations;
                                          --spec: with an edited agent-type spec
  types [ls]                              agent types: latest version, how many
  types versions TYPE                     every version of TYPE, newest last
  types show TYPE [VERSION]               a version's spec (default: the latest)
  types put FILE.json                     register a spec as TYPE's latest version
  upgrade NAME [--to VERSION|latest] [--by WHO]
                                          run another version of NAME's type from
                                          its next step (recorded as upgraded)
  secret set NAME [--from-file FILE]      set a secret on the node; the value comes
                                          from stdin (a terminal does not echo it)
                                          or FILE, never from the command line
  secret ls                               the node's secrets: name, source, updated
                                          (never a value)
  secret rm NAME                          remove a secret set with secret set
  tasks                                   worker queues: ready and leased tasks
  tasks poll QUEUE --worker W [--wait MS] lease the oldest ready task of QUEUE
  tasks complete ID [--result JSON]       report a leased task done
  tasks fail ID --error TEXT [--retryable true|false] [--maybe-applied true|false]
                                          report a leased task failed
  token create PRINCIPAL --scopes S1,S2 [--agents 'ticket/*,...']
                                          a token for PRINCIPAL (printed once);
                                          scopes: read, send, approve, operate, admin, work
  token [ls]                              the node's tokens (never the tokens)
  token revoke ID                         revoke a token at once
  whoami                                  the principal and scopes the CLI has
  health                                  is the node up?
  cluster status                          members, up/down, shards, epoch, outbox
  cluster add-node ID --cluster HOST:PORT --http HOST:PORT
                                          add a member (started with --join);
                                          moves its shards to it
  cluster remove-node ID                  move a member's shards away, drop it

approvals, doubts and human answers are signals, recorded with the principal
of the token that sent them (a "by" in the payload is kept as a note), e.g.
  keel signal ticket/4711 approve
  keel signal ticket/4711 reject --payload '{"reason": "duplicate"}'
  keel signal ticket/4711 resolve --payload '{"outcome": "succeeded", "result": {}}'
  (or keel resolve ticket/4711 --outcome succeeded --result '{}')

exit codes: 0 ok; 1 an error from the server or the agent, or no server;
2 a usage error; with --wait (send, signal, cancel, pause, resume, resolve,
retry): 3 parked, the turn waits for a person (approval, answer, doubt) and
the next command is printed; 4 the turn failed, was stopped or cancelled
(keel retry NAME); 5 no reply within the wait, still running (its phase
is printed)

global flags:
  --server URL     node to talk to: http://HOST:PORT or https://HOST:PORT
                   (default $KEEL_SERVER or http://127.0.0.1:7070)
  --token TOKEN    bearer token (default $KEEL_TOKEN)
  --token-file F   read the bearer token from F (default $KEEL_TOKEN_FILE);
                   a node without a configured token keeps its admin token
                   in DATA/admin.token
  --ca FILE        for https://, trust the CA certificates in FILE (PEM)
                   instead of the system's (default $KEEL_CA)
  --cert FILE      for https:// nodes that require client certificates: this
  --key FILE       certificate (PEM) and its key (default $KEEL_CERT, $KEEL_KEY)
  --json           print the server's JSON instead of tables
)";

[[noreturn]] void usage_fail(const std::string& message) {
  throw usage_failure{message};
}

invocation parse_command_line(int argc, char** argv) {
  invocation inv;
  if (const char* s = std::getenv("KEEL_SERVER"); s && *s)
    inv.server = s;
  else
    inv.server = "http://127.0.0.1:7070";
  if (const char* t = std::getenv("KEEL_TOKEN"); t && *t) inv.token = t;
  auto token_from = [&inv](const std::string& path) {
    std::string warning;
    auto t = read_token_file(path, &warning);
    if (!t) usage_fail(t.error().message());
    if (!warning.empty()) std::fprintf(stderr, "keel: warning: %s\n", warning.c_str());
    inv.token = std::move(*t);
  };
  if (const char* f = std::getenv("KEEL_TOKEN_FILE"); f && *f && !std::getenv("KEEL_TOKEN"))
    token_from(f);
  for (auto [var, slot] : {std::pair{"KEEL_CA", &inv.ca}, std::pair{"KEEL_CERT", &inv.cert},
                           std::pair{"KEEL_KEY", &inv.key}})
    if (const char* v = std::getenv(var); v && *v) *slot = v;

  std::vector<std::string> a(argv + 1, argv + argc);
  bool flags_done = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string& s = a[i];
    if (!flags_done && (s == "-f" || s == "--follow")) {
      inv.opts["follow"] = "";
      continue;
    }
    if (!flags_done && (s == "--unverified" || s == "--waiting" || s == "--all")) {
      inv.opts[s.substr(2)] = "";
      continue;
    }
    if (flags_done || s.size() < 3 || s.rfind("--", 0) != 0) {
      if (s == "--") {
        flags_done = true;
        continue;
      }
      if (inv.command.empty())
        inv.command = s;
      else
        inv.args.push_back(s);
      continue;
    }
    std::string name = s.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (name == "json" || name == "help") {
      if (has_value) usage_fail("--" + name + " takes no value");
      if (name == "help")
        inv.command = "help";
      else
        inv.json_out = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= a.size()) usage_fail("--" + name + " needs a value");
      value = a[++i];
    }
    if (name == "server")
      inv.server = value;
    else if (name == "token")
      inv.token = value;
    else if (name == "token-file")
      token_from(value);
    else if (name == "ca")
      inv.ca = value;
    else if (name == "cert")
      inv.cert = value;
    else if (name == "key")
      inv.key = value;
    else {
      inv.opts[name] = value;
      inv.all_opts.emplace_back(name, value);
    }
  }
  if (inv.cert.empty() != inv.key.empty())
    usage_fail(inv.cert.empty() ? "--key (KEEL_KEY) needs --cert (KEEL_CERT)"
                                : "--cert (KEEL_CERT) needs --key (KEEL_KEY)");
  return inv;
}

std::vector<std::string> opt_all(const invocation& inv, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& [k, v] : inv.all_opts)
    if (k == name) out.push_back(v);
  return out;
}

json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) usage_fail("cannot read " + what + " " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded()) usage_fail(what + " " + path + " is not valid JSON");
  return j;
}

void expect_args(const invocation& inv, std::size_t min, std::size_t max, const char* shape,
                 std::set<std::string> allowed_opts) {
  if (inv.args.size() < min || inv.args.size() > max)
    usage_fail(std::string("usage: keel ") + shape);
  for (const auto& [k, v] : inv.opts)
    if (!allowed_opts.count(k)) usage_fail("'" + inv.command + "' has no flag --" + k);
}

const std::string* opt(const invocation& inv, const std::string& name) {
  auto it = inv.opts.find(name);
  return it == inv.opts.end() ? nullptr : &it->second;
}

std::string number_opt(const invocation& inv, const std::string& name) {
  const std::string* v = opt(inv, name);
  if (!v) return {};
  if (v->empty() || !std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; }))
    usage_fail("--" + name + " must be a non-negative integer, got '" + *v + "'");
  return *v;
}

json parse_json_arg(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    std::string why = e.what();
    if (auto close = why.find("] "); close != std::string::npos) why.erase(0, close + 2);
    usage_fail(what + " must be JSON: " + why);
  }
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// "2024-05-01T12:00:00.123Z"
std::string iso_time(int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = static_cast<int>(ms - int64_t{secs} * 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", frac);
  return buf;
}

std::string text_of(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return "-";
  return dump(j);
}

void print_table(const std::vector<std::string>& head,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(head.size());
  for (std::size_t c = 0; c < head.size(); ++c) width[c] = head[c].size();
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], r[c].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t c = 0; c < cells.size(); ++c) {
      out += cells[c];
      if (c + 1 < cells.size()) out.append(width[c] - cells[c].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  line(head);
  for (const auto& r : rows) line(r);
}

void cli::set_up(net::http_client& c) const {
  if (!inv_.token.empty()) c.set_header("Authorization", "Bearer " + inv_.token);
  if (!inv_.ca.empty()) c.set_ca_file(inv_.ca);
  if (!inv_.cert.empty()) c.set_client_certificate(inv_.cert, inv_.key);
}

void cli::print_failure(const status& s, const net::http_client& c) const {
  const char* fix = "";
  switch (c.tls_problem()) {
    case net::http_client::tls_failure::server_not_trusted:
      fix = inv_.ca.empty() ? "; pass --ca FILE or set KEEL_CA to trust the node's CA"
                            : "; is --ca (KEEL_CA) the CA that signed the node's certificate?";
      break;
    case net::http_client::tls_failure::client_certificate_refused:
      fix = inv_.cert.empty() ? "; pass --cert FILE --key FILE (or set KEEL_CERT and KEEL_KEY)"
                              : "; is --cert (KEEL_CERT) signed by a CA the node trusts?";
      break;
    case net::http_client::tls_failure::none:
      break;
  }
  std::fprintf(stderr, "keel: %s%s\n", s.message().c_str(), fix);
}

bool cli::connect() {
  if (connected_) return true;
  auto addr = net::parse_url(inv_.server);
  if (!addr) usage_fail(addr.error().message());
  set_up(client_);
  if (auto s = client_.connect(*addr); !s) {
    // A CA file, client certificate or key that does not load.
    if (s.error_code() == code::invalid_argument) usage_fail(s.message());
    print_failure(s, client_);
    return false;
  }
  connected_ = true;
  return true;
}

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
  expect_args(inv_, 2, 2, "spawn TYPE NAME [--input JSON]", {"input"});
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
  expect_args(inv_, 2, 2, "send NAME BODY_JSON [--id ID] [--from NAME] [--wait MS]",
              {"id", "from", "wait"});
  json req{{"body", parse_json_arg(inv_.args[1], "the message body")}};
  if (auto id = opt(inv_, "id")) req["id"] = *id;
  if (auto from = opt(inv_, "from")) req["from"] = *from;
  auto j = call("POST", agent_path(inv_.args[0]) + "/messages" + wait_query(inv_), dump(req));
  return j ? print_ack(*j) : exit_server;
}

int cli::signal() {
  expect_args(inv_, 2, 2, "signal NAME SIGNAL [--payload JSON] [--wait MS]", {"payload", "wait"});
  json req = json::object();
  if (auto p = opt(inv_, "payload")) req["payload"] = parse_json_arg(*p, "--payload");
  auto j = call(
      "POST",
      agent_path(inv_.args[0]) + "/signals/" + net::percent_encode(inv_.args[1]) + wait_query(inv_),
      dump(req));
  return j ? print_ack(*j) : exit_server;
}

int cli::show() {
  expect_args(inv_, 1, 1, "show NAME", {});
  auto j = call("GET", agent_path(inv_.args[0]));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  print_view(*j);
  return exit_ok;
}

int cli::ls() {
  expect_args(inv_, 0, 0,
              "ls [--prefix P] [--limit N] [--after NAME] [--phase P]... [--waiting] [--all]",
              {"prefix", "limit", "after", "phase", "waiting", "all"});
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
  expect_args(inv_, 1, 1, "rm NAME", {});
  auto j = call("DELETE", agent_path(inv_.args[0]));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("terminated %s (status %s, last_seq %s)\n", text_of(j->value("name", json())).c_str(),
              text_of(j->value("status", json())).c_str(),
              text_of(j->value("last_seq", json())).c_str());
  return exit_ok;
}

int cli::query() {
  expect_args(inv_, 1, 2, "query NAME [JSON]", {});
  std::string body = inv_.args.size() == 2 ? dump(parse_json_arg(inv_.args[1], "the query")) : "";
  auto j = call("POST", agent_path(inv_.args[0]) + "/query", body);
  if (!j) return exit_server;
  return done(*j);
}

int cli::cancel() {
  expect_args(inv_, 1, 1, "cancel NAME [--by WHO] [--wait MS]", {"by", "wait"});
  json req = json::object();
  if (auto by = opt(inv_, "by")) req["by"] = *by;
  auto j = call("POST", agent_path(inv_.args[0]) + "/cancel" + wait_query(inv_), dump(req));
  return j ? print_ack(*j) : exit_server;
}

int cli::tasks() {
  const std::string sub = inv_.args.empty() ? "" : inv_.args[0];
  if (sub.empty()) {
    expect_args(inv_, 0, 0, "tasks", {});
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
    expect_args(inv_, 2, 2, "tasks poll QUEUE --worker W [--wait MS]", {"worker", "wait"});
    const std::string* worker = opt(inv_, "worker");
    if (!worker) usage_fail("usage: keel tasks poll QUEUE --worker W [--wait MS]");
    json req{{"queue", inv_.args[1]}, {"worker", *worker}};
    if (auto w = number_opt(inv_, "wait"); !w.empty()) req["wait_ms"] = std::stoull(w);
    auto j = call("POST", "/v1/tasks/poll", dump(req));
    if (!j) return exit_server;
    return done(*j);
  }
  if (sub == "complete" || sub == "fail") {
    const bool ok = sub == "complete";
    expect_args(inv_, 2, 2,
                ok ? "tasks complete ID [--result JSON]"
                   : "tasks fail ID --error TEXT [--retryable true|false] "
                     "[--maybe-applied true|false]",
                ok ? std::set<std::string>{"result"}
                   : std::set<std::string>{"error", "retryable", "maybe-applied"});
    json req = json::object();
    if (ok) {
      if (auto r = opt(inv_, "result")) req["result"] = parse_json_arg(*r, "--result");
    } else {
      const std::string* e = opt(inv_, "error");
      if (!e) usage_fail("usage: keel tasks fail ID --error TEXT [--retryable true|false]");
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
  usage_fail("unknown tasks command '" + sub + "' (poll, complete, fail)");
}

int cli::health() {
  expect_args(inv_, 0, 0, "health", {});
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
    expect_args(inv_, 0, 1, "cluster status", {});
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
    return exit_ok;
  }
  if (sub == "add-node") {
    expect_args(inv_, 2, 2, "cluster add-node ID --cluster HOST:PORT --http HOST:PORT",
                {"cluster", "http"});
    const std::string* cl = opt(inv_, "cluster");
    const std::string* ht = opt(inv_, "http");
    if (!cl || !ht)
      usage_fail("usage: keel cluster add-node ID --cluster HOST:PORT --http HOST:PORT");
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
    expect_args(inv_, 2, 2, "cluster remove-node ID", {});
    auto j = call("DELETE", "/v1/cluster/members/" + net::percent_encode(inv_.args[1]));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("removed %s: epoch %s, %s shards moved\n", inv_.args[1].c_str(),
                text_of(j->value("epoch", json())).c_str(),
                text_of(j->value("moved", json())).c_str());
    return exit_ok;
  }
  usage_fail("unknown cluster command '" + sub + "' (status, add-node, remove-node)");
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
  usage_fail(c.empty() ? "no command given" : "unknown command '" + c + "'");
}

}  // namespace keel::cli_app

int main(int argc, char** argv) {
  using namespace keel::cli_app;
  try {
    invocation inv = parse_command_line(argc, argv);
    if (inv.command == "help") {
      std::fputs(usage_text, stdout);
      return exit_ok;
    }
    cli app(std::move(inv));
    return app.run();
  } catch (const usage_failure& u) {
    std::fprintf(stderr, "keel: %s\n(run keel --help for usage)\n", u.message.c_str());
    return exit_usage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keel: %s\n", e.what());
    return exit_server;
  }
}
