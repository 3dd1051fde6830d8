#pragma once
// A small synchronous HTTP/1.1 client over one keep-alive connection, for
// the CLI, integration tests and benchmarks. A request on a connection the
// server has meanwhile closed (idle timeout, restart) is sent once more on a
// fresh connection; every request has a deadline.
//
// Thread-safety: one http_client per thread; distinct clients are
// independent. Errors: unavailable (cannot connect, connection lost),
// timeout (the deadline passed; the connection is dropped), invalid_argument
// (no connect() yet). An HTTP error status is a response, not an error.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.hpp"

namespace keel::net {

struct server_address {
  std::string host;
  uint16_t port = 80;
};

// "http://127.0.0.1:7070", "127.0.0.1:7070", "http://[::1]:7070/", "http://h"
// (port 80). Errors: invalid_argument (other schemes, a path, a bad port).
result<server_address> parse_url(std::string_view url);

// Encodes every byte but A-Z a-z 0-9 - . _ ~ as %XX, so an agent name such as
// "acct/alice" becomes one path segment, "acct%2Falice".
std::string percent_encode(std::string_view s);

class http_client {
 public:
  struct response {
    unsigned status = 0;
    std::string body;
    std::string content_type;
  };
  using header_list = std::vector<std::pair<std::string, std::string>>;

  http_client();
  ~http_client();
  http_client(http_client&&) noexcept;
  http_client& operator=(http_client&&) noexcept;

  // Remembers the server and connects to it now.
  status connect(std::string host, uint16_t port);

  // Deadline of each request (write and read together) and of connecting.
  // Default 30 s.
  void set_timeout(std::chrono::milliseconds timeout);
  // A header sent with every request, e.g. ("Authorization", "Bearer T").
  void set_header(std::string name, std::string value);

  // Sends one request and reads the whole response. A non-empty body is
  // sent as application/json unless `headers` names another Content-Type.
  result<response> request(std::string_view method, std::string_view target,
                           std::string_view body = {}, const header_list& headers = {});

  void close();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::net
