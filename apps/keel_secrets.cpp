// keel secret set | ls | rm: a node's named secrets. A value is read from
// stdin or a file, never from the command line, where every local user can
// read it (/proc/PID/cmdline); a terminal does not echo it.

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "apps/keel_cli.hpp"

namespace keel::cli_app {

namespace {

// The value as a file or a pipe gives it, one trailing newline dropped
// (what `echo` and editors add), as keeld reads a secret's file.
std::string drop_one_newline(std::string v) {
  if (!v.empty() && v.back() == '\n') {
    v.pop_back();
    if (!v.empty() && v.back() == '\r') v.pop_back();
  }
  return v;
}

std::string read_value_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) usage_fail("cannot read --from-file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return drop_one_newline(ss.str());
}

// From a terminal: one line, typed without echo. From a pipe: all of it.
std::string read_value_stdin(const std::string& name) {
  if (::isatty(STDIN_FILENO) == 1) {
    std::fprintf(stderr, "value of secret %s (not shown): ", name.c_str());
    std::fflush(stderr);
    termios old{};
    const bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
      termios quiet = old;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    std::string line;
    std::getline(std::cin, line);
    if (tty) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    std::fprintf(stderr, "\n");
    return drop_one_newline(line);
  }
  std::stringstream ss;
  ss << std::cin.rdbuf();
  return drop_one_newline(ss.str());
}

}  // namespace

int cli::secret() {
  const std::string sub = inv_.args.empty() ? "" : inv_.args[0];
  if (sub == "set") {
    if (inv_.args.size() > 2)
      usage_fail(
          "keel secret set takes no value on the command line (any local user can read it "
          "there): pipe it to stdin or pass --from-file FILE");
    expect_args(inv_, 2, 2);
    const std::string& name = inv_.args[1];
    const std::string* file = opt(inv_, "from-file");
    std::string value = file ? read_value_file(*file) : read_value_stdin(name);
    if (value.empty()) usage_fail("the value of secret " + name + " is empty");
    auto j = call("PUT", "/v1/secrets/" + net::percent_encode(name), dump({{"value", value}}));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("%s secret %s\n", j->value("created", false) ? "set" : "replaced", name.c_str());
    return exit_ok;
  }
  if (sub == "ls") {
    expect_args(inv_, 1, 1);
    auto j = call("GET", "/v1/secrets");
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : j->value("secrets", json::array())) {
      std::string source = text_of(s.value("source", json()));
      if (s.contains("from")) source += " " + text_of(s["from"]);
      rows.push_back(
          {text_of(s.value("name", json())), source, iso_time(s.value("updated_ms", int64_t{0}))});
    }
    print_table({"NAME", "SOURCE", "UPDATED"}, rows);
    return exit_ok;
  }
  if (sub == "rm") {
    expect_args(inv_, 2, 2);
    auto j = call("DELETE", "/v1/secrets/" + net::percent_encode(inv_.args[1]));
    if (!j) return exit_server;
    if (inv_.json_out) return done(*j);
    std::printf("removed secret %s\n", inv_.args[1].c_str());
    return exit_ok;
  }
  usage_fail(sub.empty() ? "usage: keel secret set NAME | secret ls | secret rm NAME"
                         : unknown_command(sub, "secret"));
}

}  // namespace keel::cli_app
