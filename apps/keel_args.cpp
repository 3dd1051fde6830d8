// The keel command line as data: parsing it into an invocation, checking
// a command's arguments and flags against its entry in the table
// (apps/keel_help.cpp), and the value and output helpers every command
// shares.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "apps/keel_cli.hpp"
#include "base/clock.hpp"
#include "base/token_file.hpp"

namespace keel::cli_app {

[[noreturn]] void usage_fail(const std::string& message) {
  throw usage_failure{message, {}};
}

[[noreturn]] void usage_of(const invocation& inv) {
  const command_help* c = entry_for(inv.command, inv.args);
  if (!c) usage_fail(unknown_command(inv.args.empty() ? "" : inv.args[0], inv.command));
  throw usage_failure{"usage: keel " + std::string(c->synopsis), c->name};
}

namespace {

void parse_into(invocation& inv, int argc, char** argv);

}  // namespace

invocation parse_command_line(int argc, char** argv) {
  invocation inv;
  try {
    parse_into(inv, argc, argv);
  } catch (usage_failure& u) {
    // A bad flag of a known command: its help says which it takes.
    if (u.command.empty() && !inv.command.empty() && entry_for(inv.command, {}))
      u.command = inv.command;
    throw;
  }
  return inv;
}

namespace {

void parse_into(invocation& inv, int argc, char** argv) {
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
    if (!flags_done && (s == "-h" || s == "--help")) {
      inv.help = true;
      continue;
    }
    if (!flags_done && s == "--version") {
      inv.version = true;
      continue;
    }
    // A short switch of the command (-f), by the table.
    if (!flags_done && s.size() == 2 && s[0] == '-') {
      if (const char* name = long_name(inv.command, s[1])) {
        inv.opts[name] = "";
        continue;
      }
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
    if (name == "json" || is_switch(inv.command, name)) {
      if (has_value) usage_fail("--" + name + " takes no value");
      if (name == "json")
        inv.json_out = true;
      else
        inv.opts[name] = "";
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
}

}  // namespace

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

void expect_args(const invocation& inv, std::size_t min, std::size_t max) {
  const command_help* c = entry_for(inv.command, inv.args);
  if (!c) usage_of(inv);  // an unknown subcommand
  if (inv.args.size() < min || inv.args.size() > max) usage_of(inv);
  for (const auto& [k, v] : inv.opts)
    if (std::none_of(c->flags.begin(), c->flags.end(),
                     [&](const flag_help& f) { return f.name == k; }))
      throw usage_failure{"'" + std::string(c->name) + "' has no flag --" + k, c->name};
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
  return utc_iso8601(ms);
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

}  // namespace keel::cli_app
