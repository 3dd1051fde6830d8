// The keel CLI's commands as data: one table read by the overview (keel
// --help), each command's help (keel help CMD, keel CMD --help), the usage
// errors and flag checks (expect_args), and the bash completion, so none of
// them can say something the others do not.

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "apps/keel_cli.hpp"
#include "base/names.hpp"

namespace keel::cli_app {

namespace {

constexpr const char* g_agents = "Agents";
constexpr const char* g_control = "Operator controls";
constexpr const char* g_history = "Ledger, replay and history";
constexpr const char* g_types = "Agent types";
constexpr const char* g_tasks = "Worker tasks";
constexpr const char* g_access = "Tokens and secrets";
constexpr const char* g_node = "Node and cluster";
constexpr const char* g_cli = "This CLI";

const flag_help f_wait_reply{"wait", "MS", "wait up to MS ms for the agent's reply and print it"};
const flag_help f_by{"by", "WHO", "a note of who asks (the token's principal is what is recorded)"};

std::vector<command_help> make_table() {
  std::vector<command_help> t;
  // Agents
  t.push_back({"spawn",
               g_agents,
               "spawn TYPE NAME [--input JSON]",
               "create an agent of a type",
               "The name is the agent's address for good: a-z, 0-9 and ._-/ (see\n"
               "docs/http-api.md). The input becomes its spawned event.",
               {{"input", "JSON", "the agent's input, recorded in its spawned event"}},
               {"keel spawn counter acct/alice",
                "keel spawn refund-desk ticket/4711 --input '{\"customer\": \"c-9\"}'"}});
  t.push_back({"send",
               g_agents,
               "send NAME BODY_JSON [--id ID] [--from NAME] [--wait MS]",
               "send a message; --wait shows the reply",
               "The message is durable before keel prints `accepted`. A resend with the same\n"
               "--id is a duplicate: answered again, never processed twice.\n\n"
               "With --wait the exit code says how the turn ended: 0 it answered, 3 it is\n"
               "parked (waiting for an approval, an answer or a resolve), 4 it failed,\n"
               "5 no reply came within MS ms.",
               {{"id", "ID", "the message id (the dedupe key); default: one the node makes"},
                {"from", "NAME", "who sends it: an agent's name or a person's"},
                f_wait_reply},
               {"keel send acct/alice '{\"add\": 5}' --id m-1 --wait 5000",
                "keel send ticket/4711 '{\"text\": \"refund order 9\"}' --wait 30000"}});
  t.push_back({"signal",
               g_agents,
               "signal NAME SIGNAL [--payload JSON] [--wait MS]",
               "send a signal: approve, reject, resolve, answer, cancel, ...",
               "Approvals, doubts and human answers are signals, recorded with the principal\n"
               "of the token that sent them (a \"by\" in the payload is kept as a note).\n\n"
               "With --wait the exit code says how the turn ended: 0 it answered, 3 it is\n"
               "parked (waiting for an approval, an answer or a resolve), 4 it failed,\n"
               "5 no reply came within MS ms.",
               {{"payload", "JSON", "the signal's payload"}, f_wait_reply},
               {"keel signal ticket/4711 approve",
                "keel signal ticket/4711 reject --payload '{\"reason\": \"duplicate\"}'",
                "keel signal ticket/4711 resolve --payload '{\"outcome\": \"succeeded\"}'"}});
  t.push_back({"show",
               g_agents,
               "show NAME",
               "an agent's status, node, last seq, phase and state",
               "For agent loops it adds the phase with what the turn waits for, and the\n"
               "last turn's outcome.",
               {},
               {"keel show acct/alice", "keel show acct/alice --json"}});
  t.push_back({"ls",
               g_agents,
               "ls [--prefix P] [--limit N] [--after NAME] [--phase P]... [--waiting] [--all]",
               "list agents with their phase and node (no agent is woken)",
               "Columns NAME TYPE PHASE NODE CREATED MEMORY, and PAUSED when one is paused.\n"
               "One page at a time: `more: keel ls --after NAME ...` on stderr when there is\n"
               "another. Terminated agents are left out unless --all.",
               {{"prefix", "P", "only names starting with P"},
                {"limit", "N", "at most N agents per page"},
                {"after", "NAME", "the page after NAME (what `more:` says)"},
                {"phase", "P", "only agents in phase P, e.g. waiting_approval (repeatable)"},
                {"waiting", nullptr,
                 "only agents waiting for a person: an approval, an answer, an effect in doubt"},
                {"all", nullptr, "terminated agents too"}},
               {"keel ls --prefix ticket/", "keel ls --waiting", "keel ls --phase failed --all"}});
  t.push_back({"query",
               g_agents,
               "query NAME [JSON]",
               "ask the agent's state (read-only: nothing is recorded)",
               "",
               {},
               {"keel query acct/alice '{\"get\": true}'"}});
  t.push_back({"rm",
               g_agents,
               "rm NAME",
               "terminate an agent (its ledger stays)",
               "",
               {},
               {"keel rm acct/alice"}});
  t.push_back({"retry",
               g_agents,
               "retry NAME [--by WHO] [--wait MS]",
               "run a failed (or budget-stopped) turn again with the same input",
               "Recorded in the ledger (turn_started with retry_of), so replay reproduces it.\n"
               "Refused (409) when the last turn did not fail or a turn is in progress.\n"
               "With --wait the exit codes are those of send.",
               {f_by, f_wait_reply},
               {"keel retry ticket/4711", "keel retry ticket/4711 --wait 30000"}});
  // Operator controls
  t.push_back({"cancel",
               g_control,
               "cancel NAME [--by WHO] [--wait MS]",
               "cancel the agent's turn; completed calls are compensated in reverse order",
               "",
               {f_by, {"wait", "MS", "wait up to MS ms for the cancel to be recorded"}},
               {"keel cancel ticket/4711"}});
  t.push_back({"pause",
               g_control,
               "pause NAME [--by WHO] [--wait MS]",
               "finish the current step, then hold; messages queue durably",
               "",
               {f_by, {"wait", "MS", "wait up to MS ms for the pause to be recorded"}},
               {"keel pause ticket/4711"}});
  t.push_back({"resume",
               g_control,
               "resume NAME [--by WHO] [--wait MS]",
               "go on where a paused agent held",
               "",
               {f_by, {"wait", "MS", "wait up to MS ms for the resume to be recorded"}},
               {"keel resume ticket/4711"}});
  t.push_back(
      {"resolve",
       g_control,
       "resolve NAME --outcome succeeded|failed|retry [--result JSON] [--by WHO] [--wait MS]",
       "settle a call in doubt (it may or may not have happened)",
       "",
       {{"outcome", "OUTCOME", "succeeded (it happened), failed (it did not) or retry"},
        {"result", "JSON", "the call's result, for --outcome succeeded"},
        f_by,
        {"wait", "MS", "wait up to MS ms for the agent's reply"}},
       {"keel resolve ticket/4711 --outcome succeeded --result '{}'"}});
  t.push_back({"upgrade",
               g_control,
               "upgrade NAME [--to VERSION|latest] [--by WHO]",
               "run another version of the agent's type from its next step",
               "",
               {{"to", "VERSION", "a version hash, a unique prefix of 6+ digits, or latest"}, f_by},
               {"keel upgrade ticket/4711 --to latest"}});
  // Ledger, replay and history
  t.push_back(
      {"ledger",
       g_history,
       "ledger NAME [--from SEQ] [--limit N] [-f [--until TYPE]]",
       "the agent's timeline; -f follows new events",
       "With --json: one event per line, the export format `keel import` reads.",
       {{"from", "SEQ", "start at SEQ (default 1)"},
        {"limit", "N", "at most N events"},
        {"follow", nullptr, "then follow new events as they are written, until Ctrl-C", 'f'},
        {"until", "TYPE",
         "with -f: stop after the first event of TYPE (at once if one was printed), "
         "e.g. turn_completed"}},
       {"keel ledger acct/alice --from 2 --limit 10", "keel ledger acct/alice --json > alice.jsonl",
        "keel ledger acct/alice -f", "keel ledger ticket/4711 -f --until turn_completed"}});
  t.push_back({"audit verify",
               g_history,
               "audit verify NAME",
               "check the ledger's hash chain",
               "Prints `intact: ...` (exit 0) or `BROKEN at seq N: REASON` (exit 1).",
               {},
               {"keel audit verify acct/alice"}});
  t.push_back(
      {"replay",
       g_history,
       "replay NAME [--override SEQ=FILE]... [--overrides FILE] [--policy P] [--script FILE] "
       "[--spec FILE]",
       "replay the ledger: identical, or where decisions differ; what-ifs with overrides",
       "Without overrides: `identical` (exit 0) or `DIVERGED at seq N` (exit 1). With\n"
       "them: what if the model (or a tool) had said FILE at SEQ, side by side with\n"
       "the original. --spec: an edited agent-type spec decides.",
       {{"override", "SEQ=FILE", "the reply at SEQ is FILE's JSON (repeatable)"},
        {"overrides", "FILE", "a JSON object {\"SEQ\": replacement}"},
        {"policy", "P", "after the overrides: recorded, scripted or stop"},
        {"script", "FILE", "the model script for --policy scripted"},
        {"spec", "FILE", "an agent-type spec to decide instead of the recorded versions"}},
       {"keel replay ticket/4711", "keel replay ticket/4711 --override 7=reply.json",
        "keel replay ticket/4711 --spec refund-desk.json"}});
  t.push_back({"fork",
               g_history,
               "fork NAME --at SEQ --as NEW [--override FILE] [--by WHO]",
               "a new agent sharing NAME's ledger up to SEQ, going on live from there",
               "",
               {{"at", "SEQ", "the last event the fork shares"},
                {"as", "NEW", "the new agent's name"},
                {"override", "FILE", "the reply at SEQ is FILE's JSON instead"},
                f_by},
               {"keel fork ticket/4711 --at 7 --as ticket/4711-b --override reply.json"}});
  t.push_back(
      {"import",
       g_history,
       "import NAME FILE.jsonl [--unverified]",
       "load an exported ledger (read-only); each line's hash is checked",
       "",
       {{"unverified", nullptr, "load one without its hash chain (audit reports it unverified)"}},
       {"keel import ticket/4711-copy alice.jsonl"}});
  t.push_back({"compact",
               g_history,
               "compact NAME --before SEQ",
               "fold older events into a snapshot and archive them on the node",
               "",
               {{"before", "SEQ", "fold every event before SEQ"}},
               {"keel compact acct/alice --before 1000"}});
  t.push_back({"eval",
               g_history,
               "eval SUITE.json [--spec FILE]",
               "run a suite of replays with expectations",
               "Exit 0 when every case passed, 1 otherwise (docs/replay.md).",
               {{"spec", "FILE", "an edited agent-type spec decides every case"}},
               {"keel eval suite.json --spec refund-desk.json"}});
  // Agent types
  t.push_back({"types ls",
               g_types,
               "types [ls]",
               "agent types: latest version, how many",
               "",
               {},
               {"keel types"},
               true});
  t.push_back({"types versions",
               g_types,
               "types versions TYPE",
               "every version of TYPE, newest last",
               "",
               {},
               {"keel types versions refund-desk"}});
  t.push_back({"types show",
               g_types,
               "types show TYPE [VERSION]",
               "a version's spec (default: the latest)",
               "",
               {},
               {"keel types show refund-desk 93abaf"}});
  t.push_back({"types put",
               g_types,
               "types put FILE.json",
               "register a spec as its type's latest version",
               "",
               {},
               {"keel types put examples/agents/refund-desk.json"}});
  // Worker tasks
  t.push_back(
      {"tasks", g_tasks, "tasks", "worker queues: ready and leased tasks", "", {}, {"keel tasks"}});
  t.push_back(
      {"tasks poll",
       g_tasks,
       "tasks poll QUEUE --worker W [--wait MS]",
       "lease the oldest ready task of QUEUE",
       "",
       {{"worker", "W", "the worker's name"}, {"wait", "MS", "wait up to MS ms for a task"}},
       {"keel tasks poll refunds --worker w1 --wait 30000"}});
  t.push_back({"tasks complete",
               g_tasks,
               "tasks complete ID [--result JSON]",
               "report a leased task done",
               "",
               {{"result", "JSON", "the task's result"}},
               {"keel tasks complete t-17 --result '{\"ok\": true}'"}});
  t.push_back({"tasks fail",
               g_tasks,
               "tasks fail ID --error TEXT [--retryable true|false] [--maybe-applied true|false]",
               "report a leased task failed",
               "",
               {{"error", "TEXT", "what went wrong"},
                {"retryable", "BOOL", "true: it may be tried again"},
                {"maybe-applied", "BOOL", "true: it may have taken effect (then it is in doubt)"}},
               {"keel tasks fail t-17 --error 'upstream 503' --retryable true"}});
  // Tokens and secrets
  t.push_back(
      {"token create",
       g_access,
       "token create PRINCIPAL --scopes S1,S2 [--agents 'ticket/*,...']",
       "a token for PRINCIPAL, printed once",
       "Scopes: read, send, approve, operate, admin, work (docs/operations.md, Security).",
       {{"scopes", "S1,S2", "what the token may do"},
        {"agents", "PATTERNS", "only agents matching these names or prefixes (ticket/*)"}},
       {"keel token create maria --scopes read,approve --agents 'ticket/*' > maria.token"}});
  t.push_back({"token ls",
               g_access,
               "token [ls]",
               "the node's tokens (never the tokens themselves)",
               "",
               {},
               {"keel token ls"},
               true});
  t.push_back({"token revoke",
               g_access,
               "token revoke ID",
               "revoke a token at once",
               "",
               {},
               {"keel token revoke tk-3"}});
  t.push_back({"whoami",
               g_access,
               "whoami",
               "the principal and scopes the CLI's token has",
               "",
               {},
               {"keel whoami"}});
  t.push_back({"secret set",
               g_access,
               "secret set NAME [--from-file FILE]",
               "set a secret on the node; the value from stdin or FILE, never argv",
               "From a terminal the value is read without echo.",
               {{"from-file", "FILE", "read the value from FILE (one trailing newline dropped)"}},
               {"keel secret set crm < /run/credentials/crm.token",
                "keel secret set openai --from-file ~/.config/openai.key"}});
  t.push_back({"secret ls",
               g_access,
               "secret ls",
               "the node's secrets: name, source, updated (never a value)",
               "",
               {},
               {"keel secret ls"}});
  t.push_back({"secret rm",
               g_access,
               "secret rm NAME",
               "remove a secret set with secret set",
               "",
               {},
               {"keel secret rm crm"}});
  // Node and cluster
  t.push_back({"health",
               g_node,
               "health",
               "is the node up? its version and store",
               "",
               {},
               {"keel health"}});
  t.push_back({"wait",
               g_node,
               "wait [--timeout MS]",
               "wait until the node answers (for scripts that start keeld)",
               "Exit 0 once GET /v1/health answers, 1 when it did not within the timeout.",
               {{"timeout", "MS", "give up after MS ms (default 10000)"}},
               {"./build/keeld --data /tmp/k1 & keel wait && keel spawn counter acct/alice"}});
  t.push_back({"cluster status",
               g_node,
               "cluster status",
               "members, up/down, shards, epoch, outbox",
               "",
               {},
               {"keel cluster status"},
               true});
  t.push_back({"cluster add-node",
               g_node,
               "cluster add-node ID --cluster HOST:PORT --http HOST:PORT",
               "add a member (started with --join); moves its shards to it",
               "",
               {{"cluster", "HOST:PORT", "the new member's cluster address"},
                {"http", "HOST:PORT", "the new member's HTTP address"}},
               {"keel cluster add-node n4 --cluster 10.0.0.4:7171 --http 10.0.0.4:7070"}});
  t.push_back({"cluster remove-node",
               g_node,
               "cluster remove-node ID",
               "move a member's shards away, then drop it",
               "",
               {},
               {"keel cluster remove-node n4"}});
  // This CLI
  t.push_back({"help",
               g_cli,
               "help [COMMAND]",
               "the overview, or a command's usage, flags and examples",
               "keel COMMAND --help (or -h) says the same.",
               {},
               {"keel help send", "keel help types show"}});
  t.push_back({"completion",
               g_cli,
               "completion bash",
               "print a bash completion script",
               "Load it in the shell, or from ~/.bashrc:\n  source <(keel completion bash)",
               {},
               {"source <(keel completion bash)"}});
  return t;
}

std::string first_word(std::string_view name) {
  return std::string(name.substr(0, name.find(' ')));
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

std::string flags_text(const command_help& c) {
  if (c.flags.empty()) return "";
  std::vector<std::pair<std::string, std::string>> rows;
  std::size_t width = 0;
  for (const auto& f : c.flags) {
    std::string left = f.short_name ? "-" + std::string(1, f.short_name) + ", --" + f.name
                                    : "--" + std::string(f.name);
    if (f.value) left += " " + std::string(f.value);
    width = std::max(width, left.size());
    rows.emplace_back(left, f.meaning);
  }
  std::string out = "\nflags:\n";
  for (const auto& [l, m] : rows)
    out += "  " + l + std::string(width - l.size() + 2, ' ') + m + "\n";
  return out;
}

std::string one_help(const command_help& c) {
  std::string out = "usage: keel " + std::string(c.synopsis) + "\n\n" + c.summary + "\n";
  if (*c.details) out += "\n" + std::string(c.details) + "\n";
  out += flags_text(c);
  if (!c.examples.empty()) {
    out += "\nexamples:\n";
    for (const char* e : c.examples) out += "  " + std::string(e) + "\n";
  }
  return out;
}

}  // namespace

const std::vector<command_help>& command_table() {
  static const std::vector<command_help> table = make_table();
  return table;
}

std::vector<std::string> command_words(std::string_view parent) {
  std::vector<std::string> out;
  for (const auto& c : command_table()) {
    const std::string_view n = c.name;
    std::string w;
    if (parent.empty())
      w = first_word(n);
    else if (n.size() > parent.size() + 1 && n.substr(0, parent.size()) == parent &&
             n[parent.size()] == ' ')
      w = n.substr(parent.size() + 1);
    if (!w.empty() && std::find(out.begin(), out.end(), w) == out.end()) out.push_back(w);
  }
  return out;
}

const command_help* find_command(std::string_view name) {
  for (const auto& c : command_table())
    if (c.name == name) return &c;
  return nullptr;
}

const command_help* entry_for(const std::string& command, const std::vector<std::string>& args) {
  if (!args.empty())
    if (auto* sub = find_command(command + " " + args[0])) return sub;
  if (auto* own = find_command(command)) return own;
  for (const auto& c : command_table())
    if (c.is_default && first_word(c.name) == command) return &c;
  return nullptr;
}

bool is_switch(const std::string& command, std::string_view name) {
  for (const auto& c : command_table()) {
    if (!command.empty() && first_word(c.name) != command) continue;
    for (const auto& f : c.flags)
      if (!f.value && f.name == name) return true;
  }
  return false;
}

const char* long_name(const std::string& command, char short_name) {
  for (const auto& c : command_table()) {
    if (!command.empty() && first_word(c.name) != command) continue;
    for (const auto& f : c.flags)
      if (f.short_name == short_name) return f.name;
  }
  return nullptr;
}

std::string unknown_command(std::string_view word, std::string_view parent) {
  const std::vector<std::string> choices = command_words(parent);
  const std::string what = parent.empty() ? "command" : std::string(parent) + " command";
  // A suggestion only for a likely slip (base/names.hpp).
  if (const std::string best = nearest_name(word, choices); !best.empty())
    return "unknown " + what + " '" + std::string(word) + "'; did you mean '" + best + "'?";
  if (parent.empty()) return "unknown " + what + " '" + std::string(word) + "'";
  return "unknown " + what + " '" + std::string(word) + "' (" + joined(choices) + ")";
}

std::string overview_text() {
  std::string out =
      "usage: keel [--server URL] [--token TOKEN] [--json] COMMAND [ARGS]\n\n"
      "Talks to a keeld node over its HTTP API.\n";
  std::size_t width = 0;
  for (const auto& c : command_table()) width = std::max(width, std::string_view(c.name).size());
  const char* group = nullptr;
  for (const auto& c : command_table()) {
    if (!group || std::string_view(group) != c.group) {
      group = c.group;
      out += "\n" + std::string(group) + ":\n";
    }
    out += "  " + std::string(c.name) +
           std::string(width - std::string_view(c.name).size() + 2, ' ') + c.summary + "\n";
  }
  out += R"(
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
  --help, -h       this text; after a command, that command's help
  --version        print the version

A command waits up to $KEEL_CONNECT_WAIT_MS ms (default 10000; 0: not at all)
for a node that refuses connections (one starting up).

exit codes: 0 done, 1 the server answered with an error or could not be
reached, 2 a usage error; send and signal --wait add 3, 4 and 5.

Run 'keel help COMMAND' (or 'keel COMMAND --help') for a command's flags and
examples; 'source <(keel completion bash)' completes commands and flags.
)";
  return out;
}

std::string help_text(const std::vector<std::string>& words) {
  if (words.empty()) return overview_text();
  const std::string& top = words[0];
  const auto subs = command_words(top);
  if (words.size() > 1 && !subs.empty()) {
    if (auto* c = find_command(top + " " + words[1])) return one_help(*c);
    throw usage_failure{unknown_command(words[1], top), top};
  }
  const command_help* own = find_command(top);
  if (!own && subs.empty()) throw usage_failure{unknown_command(top), ""};
  // The command's own entry, then each of its subcommands'.
  std::string out = own ? one_help(*own) : "";
  for (const auto& sub : subs)
    out += (out.empty() ? "" : "\n") + one_help(*find_command(top + " " + sub));
  return out;
}

}  // namespace keel::cli_app
