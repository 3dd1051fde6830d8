// keel CLI: the ledger as a whole (timeline, export, follow, audit, replay,
// fork, import, compaction) and the operator controls.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "apps/keel_cli.hpp"
#include "http/sse.hpp"

namespace keel::cli_app {

namespace {

// One line of an event for people: what happened, in a few words.
std::string summary(const std::string& type, const json& d) {
  auto s = [&d](const char* k) { return d.contains(k) ? text_of(d[k]) : std::string("-"); };
  auto clip = [](std::string t) { return t.size() > 100 ? t.substr(0, 97) + "..." : t; };
  if (type == "message_received")
    return clip((d.value("from", "").empty() ? "" : "from " + s("from") + ": ") + s("body"));
  if (type == "fork_started") return "fork of " + s("parent") + " at seq " + s("at");
  if (type == "signal_received") return clip(s("signal") + " " + s("payload"));
  if (type == "model_replied") {
    std::string out;
    for (const auto& c : d.value("tool_calls", json::array()))
      out += (out.empty() ? "proposes " : ", ") + text_of(c.value("name", json())) + "(" +
             dump(c.value("arguments", json())) + ")";
    return clip(out.empty() ? "says " + s("content") : out);
  }
  if (type == "guardrail_decided")
    return clip(s("verdict") + " " + s("tool") + " (" + s("rule") + ")" +
                (d.value("reason", "").empty() ? "" : ": " + s("reason")));
  if (type == "effect_started") return clip(s("tool") + "(" + s("arguments") + ")");
  if (type == "effect_completed") return clip("-> " + s("result"));
  if (type == "effect_failed")
    return clip(s("error") + (d.value("final", false) ? " (final)" : ""));
  if (type == "turn_completed")
    return clip(s("status") + ": " + (d.contains("answer") ? s("answer") : s("reason")));
  if (type == "paused" || type == "resumed") return "by " + s("by");
  if (type == "forked") return "as " + s("as") + " at seq " + s("at") + " by " + s("by");
  return clip(dump(d));
}

std::vector<std::string> row_of(const json& e) {
  const std::string type = text_of(e.value("type", json()));
  std::string when = e.contains("time") && e["time"].is_number_integer()
                         ? iso_time(e["time"].get<int64_t>())
                         : "-";
  return {text_of(e.value("seq", json())), when, type, summary(type, e.value("data", json()))};
}

// "7=reply.json" -> {"7": <file>}
void add_override(json& overrides, const std::string& spec) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
    usage_fail("--override takes SEQ=FILE, got '" + spec + "'");
  const std::string seq = spec.substr(0, eq);
  if (!std::all_of(seq.begin(), seq.end(), [](char c) { return c >= '0' && c <= '9'; }))
    usage_fail("--override takes SEQ=FILE; '" + seq + "' is not a seq");
  overrides[seq] = read_json_file(spec.substr(eq + 1), "override");
}

// Side by side: the original steps on the left, the replayed on the right,
// aligned on the longest common subsequence of their texts, so a person
// sees where the runs part and meet again.
void print_side_by_side(const json& a, const json& b) {
  auto text = [](const json& s) {
    return text_of(s.value("kind", json())) + ": " + text_of(s.value("text", json()));
  };
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::vector<uint32_t>> lcs(n + 1, std::vector<uint32_t>(m + 1, 0));
  for (std::size_t i = n; i-- > 0;)
    for (std::size_t j = m; j-- > 0;)
      lcs[i][j] =
          text(a[i]) == text(b[j]) ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
  constexpr int width = 58;
  auto cell = [](std::string t) {
    if (t.size() > static_cast<std::size_t>(width)) t = t.substr(0, width - 3) + "...";
    return t;
  };
  std::printf("  %-*s | %s\n", width, "original", "replayed");
  std::printf("  %s-+-%s\n", std::string(width, '-').c_str(), std::string(width, '-').c_str());
  std::size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && text(a[i]) == text(b[j])) {
      std::printf("  %-*s | %s\n", width, cell(text(a[i])).c_str(), cell(text(b[j])).c_str());
      ++i, ++j;
    } else if (j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      std::printf("+ %-*s | %s\n", width, "", cell(text(b[j])).c_str());
      ++j;
    } else {
      std::printf("- %-*s |\n", width, cell(text(a[i])).c_str());
      ++i;
    }
  }
}

}  // namespace

std::string who_default() {
  const char* u = std::getenv("USER");
  return u && *u ? u : "cli";
}

int cli::ledger() {
  expect_args(inv_, 1, 1);
  const std::string* until = opt(inv_, "until");
  if (until && !opt(inv_, "follow")) usage_fail("--until goes with -f (follow until an event)");
  bool reached = false;  // an event of type --until was printed
  const std::string& name = inv_.args[0];
  uint64_t from = 1;
  if (auto f = number_opt(inv_, "from"); !f.empty()) from = std::max<uint64_t>(std::stoull(f), 1);
  const std::string lim = number_opt(inv_, "limit");
  uint64_t left = lim.empty() ? UINT64_MAX : std::stoull(lim);
  std::vector<std::vector<std::string>> rows;
  // Pages until the end (or --limit): --json writes one event per line, the
  // export format `keel import` reads.
  while (left > 0) {
    const uint64_t page = std::min<uint64_t>(left, 1000);
    auto j = call("GET", agent_path(name) + "/ledger?from=" + std::to_string(from) +
                             "&limit=" + std::to_string(page));
    if (!j) return exit_server;
    const json& events = (*j)["events"];
    for (const auto& e : events) {
      reached = reached || (until && e.value("type", "") == *until);
      if (inv_.json_out)
        std::printf("%s\n", dump(e).c_str());
      else
        rows.push_back(row_of(e));
      from = e.value("seq", from) + 1;
    }
    left -= std::min<uint64_t>(left, events.size());
    // A page may end before `page` events (its byte bound): "next" says
    // whether the ledger goes on.
    if (!(*j)["next"].is_number_unsigned()) break;
    from = (*j)["next"].get<uint64_t>();
  }
  if (!inv_.json_out) print_table({"SEQ", "TIME", "TYPE", "SUMMARY"}, rows);
  if (!opt(inv_, "follow") || reached) return exit_ok;
  std::fflush(stdout);
  return follow(name, from);
}

int cli::follow(const std::string& name, uint64_t from) {
  if (!connect()) return exit_server;
  net::sse_parser parser;
  // --until TYPE: the stream ends after the first event of that type.
  const std::string* until = opt(inv_, "until");
  bool reached = false;
  auto on_data = [&](std::string_view chunk) {
    parser.feed(chunk, [&](const net::sse_event& ev) {
      if (reached) return;
      json e = json::parse(ev.data, nullptr, false);
      if (ev.event == "error" || e.is_discarded()) {
        std::fprintf(stderr, "keel: %s\n", ev.data.c_str());
        return;
      }
      if (inv_.json_out) {
        std::printf("%s\n", dump(e).c_str());
      } else {
        auto row = row_of(e);
        std::printf("%-6s %s  %-22s %s\n", row[0].c_str(), row[1].c_str(), row[2].c_str(),
                    row[3].c_str());
      }
      std::fflush(stdout);
      reached = reached || (until && e.value("type", "") == *until);
    });
    return !reached;
  };
  // Quiet agents are fine: the server sends a comment every 15 s.
  constexpr auto idle = std::chrono::minutes(2);
  const std::string target = agent_path(name) + "/ledger/stream?from=" + std::to_string(from);
  auto r = client_.stream("GET", target, on_data, idle);
  // In a cluster a member that does not serve the agent names its owner
  // (307): the stream is read from there.
  net::http_client owner;
  const net::http_client* answered_by = &client_;  // the client `r` came from
  if (r && r->status == 307) {
    json j = json::parse(r->body, nullptr, false);
    auto to = net::parse_url_target(j.is_object() ? j.value("location", "") : "");
    if (!to) {
      std::fprintf(stderr, "keel: the node answered 307 without a usable location\n");
      return exit_server;
    }
    set_up(owner);
    if (auto s = owner.connect(to->server); !s) {
      print_failure(s, owner);
      return exit_server;
    }
    r = owner.stream("GET", to->target, on_data, idle);
    answered_by = &owner;
  }
  if (!r) {
    print_failure(r.error(), *answered_by);
    return exit_server;
  }
  if (r->status >= 300) {
    std::fprintf(stderr, "keel: HTTP %u: %s\n", r->status, r->body.c_str());
    return exit_server;
  }
  return exit_ok;
}

int cli::audit() {
  expect_args(inv_, 2, 2);
  if (inv_.args[0] != "verify") usage_of(inv_);
  auto j = call("GET", agent_path(inv_.args[1]) + "/audit");
  if (!j) return exit_server;
  if (inv_.json_out) {
    done(*j);
  } else if (j->value("intact", false)) {
    std::printf("intact: %s events, seq %s..%s, head %s\n", text_of((*j)["events"]).c_str(),
                text_of((*j)["first_seq"]).c_str(), text_of((*j)["last_seq"]).c_str(),
                text_of((*j)["head"]).c_str());
    if (j->contains("unchained"))
      std::printf("the first %s events predate the hash chain (checksummed, not chained)\n",
                  text_of((*j)["unchained"]).c_str());
    if (j->contains("compacted_seq"))
      std::printf("compacted through seq %s (anchor %s)\n", text_of((*j)["compacted_seq"]).c_str(),
                  text_of((*j)["anchor"]).c_str());
  } else if (j->value("unverified", false)) {
    std::printf("UNVERIFIED: %s events, seq %s..%s: %s\n", text_of((*j)["events"]).c_str(),
                text_of((*j)["first_seq"]).c_str(), text_of((*j)["last_seq"]).c_str(),
                text_of((*j)["reason"]).c_str());
  } else {
    std::printf("BROKEN at seq %s: %s\n", text_of((*j)["bad_seq"]).c_str(),
                text_of((*j)["reason"]).c_str());
  }
  return j->value("intact", false) ? exit_ok : exit_server;
}

int cli::replay() {
  expect_args(inv_, 1, 1);
  json req = json::object();
  json overrides = json::object();
  if (auto f = opt(inv_, "overrides")) overrides = read_json_file(*f, "overrides");
  if (!overrides.is_object()) usage_fail("--overrides must hold {\"SEQ\": replacement}");
  for (const auto& spec : opt_all(inv_, "override")) add_override(overrides, spec);
  if (!overrides.empty()) req["overrides"] = overrides;
  if (auto p = opt(inv_, "policy")) req["policy"] = *p;
  if (auto f = opt(inv_, "script")) req["script"] = read_json_file(*f, "script");
  if (auto f = opt(inv_, "spec")) req["spec"] = read_spec_file(*f);
  auto j = call("POST", agent_path(inv_.args[0]) + "/replay", dump(req));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  if (j->value("mode", "") == "strict") {
    if (j->value("identical", false)) {
      std::printf("identical: %s events in %s decisions replayed through the same code%s\n",
                  text_of((*j)["events"]).c_str(), text_of((*j)["decisions"]).c_str(),
                  j->contains("spec") ? " and the given spec" : "");
      return exit_ok;
    }
    const json& d = (*j)["divergence"];
    std::printf("DIVERGED at seq %s: %s\n", text_of(d["seq"]).c_str(),
                text_of(d["reason"]).c_str());
    std::printf("  recorded: %s\n  replayed: %s\n", dump(d["recorded"]).c_str(),
                dump(d["replayed"]).c_str());
    return exit_server;
  }
  print_side_by_side((*j)["original"], (*j)["replayed"]);
  const std::string stopped = j->value("stopped", "");
  std::printf("\n%s (answered from the record: %s, from the script: %s)\n",
              stopped.empty() ? "settled" : ("stopped: " + stopped).c_str(),
              text_of((*j)["answered_recorded"]).c_str(),
              text_of((*j)["answered_scripted"]).c_str());
  // A history that does not replay up to the override is a failure: the
  // what-if would start from a state the agent never had.
  return (*j)["prefix"].value("identical", false) ? exit_ok : exit_server;
}

int cli::fork() {
  expect_args(inv_, 1, 1);
  const std::string at = number_opt(inv_, "at");
  const std::string* as = opt(inv_, "as");
  if (at.empty() || !as) usage_of(inv_);
  json req = {{"at", std::stoull(at)}, {"as", *as}};
  if (auto f = opt(inv_, "override")) req["override"] = read_json_file(*f, "override");
  req["by"] = opt(inv_, "by") ? *opt(inv_, "by") : who_default();
  auto j = call("POST", agent_path(inv_.args[0]) + "/fork", dump(req));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  const json& f = j->value("fork", json::object());
  std::printf("forked %s at seq %s as %s (%s events copied, %s bytes); now %s, phase %s\n",
              inv_.args[0].c_str(), at.c_str(), as->c_str(), text_of(f["copied_events"]).c_str(),
              text_of(f["copied_bytes"]).c_str(), text_of((*j)["status"]).c_str(),
              text_of((*j)["phase"]).c_str());
  return exit_ok;
}

int cli::import() {
  expect_args(inv_, 2, 2);
  std::ifstream in(inv_.args[1], std::ios::binary);
  if (!in) usage_fail("cannot read " + inv_.args[1]);
  json events = json::array();
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json e = json::parse(line, nullptr, false);
    if (e.is_discarded()) usage_fail(inv_.args[1] + ":" + std::to_string(n) + " is not JSON");
    if (e.contains("archive")) continue;  // an archive's header line
    events.push_back(std::move(e));
  }
  const bool unverified = opt(inv_, "unverified") != nullptr;
  json body{{"events", events}};
  if (unverified) body["unverified"] = true;
  auto j = call("POST", agent_path(inv_.args[0]) + "/import", dump(body));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  if (unverified)
    std::printf("imported %s UNVERIFIED: %zu events, no exported chain checked; read-only\n",
                inv_.args[0].c_str(), events.size());
  else
    std::printf(
        "imported %s: %zu events, each exported hash checked; read-only (replay it, audit "
        "it)\n",
        inv_.args[0].c_str(), events.size());
  return exit_ok;
}

int cli::compact() {
  expect_args(inv_, 1, 1);
  const std::string before = number_opt(inv_, "before");
  if (before.empty()) usage_of(inv_);
  auto j = call("POST", agent_path(inv_.args[0]) + "/compact",
                dump(json{{"before", std::stoull(before)}}));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("compacted %s events into a snapshot at seq %s; archive %s\n",
              text_of((*j)["archived"]).c_str(), text_of((*j)["compacted_seq"]).c_str(),
              text_of((*j)["archive"]).c_str());
  return exit_ok;
}

int cli::control(const std::string& action) {
  expect_args(inv_, 1, 1);
  json req = {{"by", opt(inv_, "by") ? *opt(inv_, "by") : who_default()}};
  if (action == "resolve") {
    const std::string* outcome = opt(inv_, "outcome");
    if (!outcome) usage_of(inv_);
    req["outcome"] = *outcome;
    if (auto r = opt(inv_, "result")) req["result"] = parse_json_arg(*r, "--result");
  }
  auto j = call("POST", agent_path(inv_.args[0]) + "/" + action + wait_query(inv_), dump(req));
  return j ? print_ack(*j) : exit_server;
}

}  // namespace keel::cli_app
