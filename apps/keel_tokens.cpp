// keel token create|ls|revoke and keel whoami: the node's API tokens
// (net/api/auth_tokens.hpp) and who the CLI is to the node.

#include <cstdio>

#include "apps/keel_cli.hpp"
#include "base/principal.hpp"

namespace keel::cli_app {

namespace {

std::string joined(const json& list) {
  std::string out;
  for (const auto& s : list) out += (out.empty() ? "" : ",") + text_of(s);
  return out.empty() ? "-" : out;
}

// "ticket/*,refund/9" -> ["ticket/*", "refund/9"].
json split_list(const std::string& text) {
  json out = json::array();
  std::size_t from = 0;
  while (from <= text.size()) {
    auto comma = text.find(',', from);
    std::string item =
        text.substr(from, comma == std::string::npos ? std::string::npos : comma - from);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  return out;
}

}  // namespace

int cli::token() {
  const std::string sub = inv_.args.empty() ? "ls" : inv_.args[0];
  if (sub == "create") {
    expect_args(inv_, 2, 2);
    const std::string* scopes = opt(inv_, "scopes");
    if (!scopes || scopes->empty())
      usage_fail(std::string("token create needs --scopes (") + scope_choices + ")");
    json req = {{"principal", inv_.args[1]}, {"scopes", split_list(*scopes)}};
    if (const std::string* agents = opt(inv_, "agents")) req["agents"] = split_list(*agents);
    auto j = call("POST", "/v1/tokens", dump(req));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    // The token goes to stdout alone (for `> file`); what it is, to stderr.
    std::fprintf(stderr, "token %s for %s, scopes %s, agents %s (shown once: keep it)\n",
                 text_of((*j)["id"]).c_str(), text_of((*j)["principal"]).c_str(),
                 joined((*j)["scopes"]).c_str(), joined((*j)["agents"]).c_str());
    std::printf("%s\n", text_of((*j)["token"]).c_str());
    return exit_ok;
  }
  if (sub == "ls") {
    expect_args(inv_, 0, 1);
    auto j = call("GET", "/v1/tokens");
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : (*j)["tokens"])
      rows.push_back({text_of(t["id"]), text_of(t["principal"]), joined(t["scopes"]),
                      joined(t["agents"]), iso_time(t.value("created_ms", int64_t{0})),
                      text_of(t["created_by"])});
    print_table({"ID", "PRINCIPAL", "SCOPES", "AGENTS", "CREATED", "BY"}, rows);
    return exit_ok;
  }
  if (sub == "revoke") {
    expect_args(inv_, 2, 2);
    auto j = call("DELETE", "/v1/tokens/" + net::percent_encode(inv_.args[1]));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("revoked %s\n", inv_.args[1].c_str());
    return exit_ok;
  }
  usage_fail(unknown_command(sub, "token"));
}

int cli::whoami() {
  expect_args(inv_, 0, 0);
  auto j = call("GET", "/v1/whoami");
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("%s (scopes %s; agents %s)\n", text_of((*j)["principal"]).c_str(),
              joined((*j)["scopes"]).c_str(), joined((*j)["agents"]).c_str());
  return exit_ok;
}

}  // namespace keel::cli_app
