// fake_servers: the fake OpenAI server and the fake tool API as one process,
// for tests that run keeld as a separate process (and demos). Prints, once
// both listen,
//   fake-openai http://127.0.0.1:P/v1
//   fake-tools http://127.0.0.1:Q
// and serves until SIGTERM or SIGINT.
//
//   fake_servers [--config FILE] [--openai-port P] [--tools-port Q]
//
// FILE (every key optional; the flags win over the ports in it):
//   {"openai": {"port": 0, "replies": [<reply>...], "default_reply": <reply>,
//               "fail_next": {"count": 2, "status": 500, "message": "..."},
//               "delay_next": {"count": 1, "ms": 500},
//               "fail_if_contacted": false},
//    "tools": {"port": 0, "behaviours": {"<tool>": <behaviour>...}}}
// with <reply> as scripted_reply::from_json and <behaviour> as
// tool_behaviour::from_json read them.

#include <signal.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "support/fake_openai_server.hpp"
#include "support/fake_tool_server.hpp"

using json = nlohmann::json;
using namespace keel::test;

namespace {

int usage(const std::string& why) {
  std::fprintf(stderr,
               "fake_servers: %s\nusage: fake_servers [--config FILE] [--openai-port P] "
               "[--tools-port Q]\n",
               why.c_str());
  return 2;
}

bool parse_port(std::string_view s, uint16_t& port) {
  unsigned p = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), p);
  if (ec != std::errc() || end != s.data() + s.size() || p > 65535) return false;
  port = static_cast<uint16_t>(p);
  return true;
}

void configure(fake_openai_server& ai, const json& j) {
  if (auto r = j.find("replies"); r != j.end())
    for (const auto& reply : *r) ai.push(scripted_reply::from_json(reply));
  if (auto d = j.find("default_reply"); d != j.end())
    ai.set_default_reply(scripted_reply::from_json(*d));
  if (auto f = j.find("fail_next"); f != j.end())
    ai.fail_next(f->at("count").get<unsigned>(), f->value("status", 500u),
                 f->value("message", std::string("injected failure")));
  if (auto d = j.find("delay_next"); d != j.end())
    ai.delay_next(d->at("count").get<unsigned>(),
                  std::chrono::milliseconds(d->at("ms").get<uint64_t>()));
  if (j.value("fail_if_contacted", false)) ai.fail_if_contacted(true);
}

void configure(fake_tool_server& tools, const json& j) {
  if (auto b = j.find("behaviours"); b != j.end())
    for (const auto& [name, behaviour] : b->items())
      tools.set_behaviour(name, tool_behaviour::from_json(behaviour));
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::optional<uint16_t> openai_port, tools_port;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) return usage("missing value after " + std::string(a));
    std::string_view v = argv[++i];
    uint16_t port = 0;
    if (a == "--config") {
      config_path = v;
    } else if (a == "--openai-port" || a == "--tools-port") {
      if (!parse_port(v, port)) return usage("bad port '" + std::string(v) + "'");
      (a == "--openai-port" ? openai_port : tools_port) = port;
    } else {
      return usage("unknown argument '" + std::string(a) + "'");
    }
  }

  json config = json::object();
  if (!config_path.empty()) {
    std::ifstream in(config_path);
    if (!in) return usage("cannot read " + config_path);
    config = json::parse(in, nullptr, false);
    if (config.is_discarded() || !config.is_object())
      return usage(config_path + " is not a JSON object");
  }
  json ai_config = config.value("openai", json::object());
  json tools_config = config.value("tools", json::object());

  // Blocked before the servers start their threads, so only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    fake_openai_server ai(openai_port.value_or(ai_config.value("port", uint16_t{0})));
    fake_tool_server tools(tools_port.value_or(tools_config.value("port", uint16_t{0})));
    configure(ai, ai_config);
    configure(tools, tools_config);
    std::cout << "fake-openai " << ai.base_url() << "\n"
              << "fake-tools " << tools.base_url() << std::endl;
    int sig = 0;
    sigwait(&stop_signals, &sig);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fake_servers: %s\n", e.what());
    return 1;
  }
  return 0;
}
