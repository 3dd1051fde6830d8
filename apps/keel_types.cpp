// keel types / keel upgrade: the agent types a node runs, their versions,
// and moving an agent to another version. Also the spec file reader that
// replay --spec and eval --spec share.

#include <filesystem>

#include "apps/keel_cli.hpp"

namespace keel::cli_app {

json read_spec_file(const std::string& path) {
  json spec = read_json_file(path, "agent-type spec");
  if (!spec.is_object()) usage_fail(path + ": an agent-type spec is a JSON object");
  // A node cannot read files named in a spec sent to it: a scripted
  // model's script goes inline, resolved as keeld resolves it.
  if (spec.contains("model") && spec["model"].is_object() && spec["model"].contains("script") &&
      spec["model"]["script"].is_string()) {
    std::filesystem::path script = spec["model"]["script"].get<std::string>();
    if (script.is_relative()) script = std::filesystem::path(path).parent_path() / script;
    spec["model"]["script"] = read_json_file(script.string(), "script of " + path);
  }
  return spec;
}

int cli::types() {
  const std::string sub = inv_.args.empty() ? "ls" : inv_.args[0];
  if (sub == "ls") {
    expect_args(inv_, 0, 1);
    auto j = call("GET", "/v1/types");
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : (*j)["types"])
      rows.push_back({text_of(t["name"]),
                      t.value("builtin", false) ? "(built-in)" : text_of(t["latest"]).substr(0, 12),
                      text_of(t["versions"])});
    print_table({"TYPE", "LATEST", "VERSIONS"}, rows);
    return exit_ok;
  }
  if (sub == "versions") {
    expect_args(inv_, 2, 2);
    auto j = call("GET", "/v1/types/" + net::percent_encode(inv_.args[1]) + "/versions");
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::vector<std::vector<std::string>> rows;
    for (const auto& v : (*j)["versions"])
      rows.push_back({text_of(v["version"]).substr(0, 12), v.value("latest", false) ? "*" : "",
                      iso_time(v.value("added_ms", int64_t{0})), text_of(v["source"]),
                      text_of(v["description"]).substr(0, 60)});
    print_table({"VERSION", "LATEST", "ADDED", "SOURCE", "DESCRIPTION"}, rows);
    return exit_ok;
  }
  if (sub == "show") {
    expect_args(inv_, 2, 3);
    const std::string version = inv_.args.size() == 3 ? inv_.args[2] : "latest";
    auto j = call("GET", "/v1/types/" + net::percent_encode(inv_.args[1]) + "/versions/" +
                             net::percent_encode(version));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("%s\n", (*j)["spec"].dump(2).c_str());
    return exit_ok;
  }
  if (sub == "put") {
    expect_args(inv_, 2, 2);
    json spec = read_spec_file(inv_.args[1]);
    if (!spec.contains("name") || !spec["name"].is_string())
      usage_fail(inv_.args[1] + ": the spec has no \"name\"");
    auto j = call("PUT", "/v1/types/" + net::percent_encode(spec["name"].get<std::string>()),
                  dump(spec));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("%s %s: version %s%s\n", (*j)["new"].get<bool>() ? "registered" : "known",
                text_of((*j)["name"]).c_str(), text_of((*j)["version"]).c_str(),
                (*j)["changed"].get<bool>() ? " is now the latest" : " was the latest already");
    return exit_ok;
  }
  usage_fail(unknown_command(sub, "types"));
}

int cli::upgrade() {
  expect_args(inv_, 1, 1);
  json req = json::object();
  if (auto to = opt(inv_, "to")) req["to"] = *to;
  req["by"] = opt(inv_, "by") ? *opt(inv_, "by") : who_default();
  auto j = call("POST", agent_path(inv_.args[0]) + "/upgrade", dump(req));
  if (!j) return exit_server;
  if (inv_.json_out) return done(*j);
  std::printf("%s: version %s -> %s\n", inv_.args[0].c_str(), text_of((*j)["from"]).c_str(),
              text_of((*j)["to"]).c_str());
  return exit_ok;
}

}  // namespace keel::cli_app
