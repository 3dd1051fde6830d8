#pragma once
// What the fake servers (fake_openai_server, fake_tool_server) share: a
// loopback HTTP server on our own net::http_server, and helpers for the
// requests they record.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/server.hpp"

namespace keel::test {

// Listens on 127.0.0.1:`port` (0: a free port) with two threads, large
// bodies allowed, and answers through `handler`. Answers still held at stop
// are dropped after half a second. Throws std::runtime_error naming `what`
// when it cannot listen.
std::unique_ptr<net::http_server> open_fake_server(const char* what, uint16_t port,
                                                   net::request_handler handler);

// The value of header `name` (case-insensitive), or "".
std::string find_header(const std::vector<std::pair<std::string, std::string>>& headers,
                        std::string_view name);

net::http_response json_response(unsigned status, const nlohmann::json& body);

}  // namespace keel::test
