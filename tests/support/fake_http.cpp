#include "support/fake_http.hpp"

#include <chrono>
#include <stdexcept>

#include "config/node_config.hpp"

namespace keel::test {

std::unique_ptr<net::http_server> open_fake_server(const char* what, uint16_t port,
                                                   net::request_handler handler) {
  config::node_config cfg;
  cfg.http_host = "127.0.0.1";
  cfg.http_port = port;
  cfg.max_body_bytes = 64 << 20;
  net::server_options opts;
  opts.threads = 2;
  // Answers held by a test (delays, holds) are dropped at stop rather than
  // waited for.
  opts.stop_grace = std::chrono::milliseconds(500);
  auto server = net::http_server::open(cfg, opts);
  if (!server) throw std::runtime_error(std::string(what) + ": " + server.error().to_string());
  (*server)->start(std::move(handler));
  return std::move(*server);
}

std::string find_header(const std::vector<std::pair<std::string, std::string>>& headers,
                        std::string_view name) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
  for (const auto& [k, v] : headers) {
    if (k.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; same && i < k.size(); ++i) same = lower(k[i]) == lower(name[i]);
    if (same) return v;
  }
  return {};
}

net::http_response json_response(unsigned status, const nlohmann::json& body) {
  return {status, "application/json", body.dump(), {}};
}

}  // namespace keel::test
