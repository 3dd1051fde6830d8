// http/client.hpp: parse_url and percent_encode (pure functions), and
// the errors a client reports before any server answers.

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "http/client.hpp"

using namespace keel;

TEST_CASE("parse_url reads host and port with or without the http scheme") {
  struct url_case {
    const char* url;
    const char* host;
    uint16_t port;
  };
  for (const auto& c : std::vector<url_case>{{"http://127.0.0.1:7070", "127.0.0.1", 7070},
                                             {"127.0.0.1:7070", "127.0.0.1", 7070},
                                             {"http://127.0.0.1:7070/", "127.0.0.1", 7070},
                                             {"http://localhost", "localhost", 80},
                                             {"node-1.example", "node-1.example", 80},
                                             {"http://h:1", "h", 1},
                                             {"http://h:65535", "h", 65535},
                                             {"http://[::1]:7070/", "::1", 7070},
                                             {"[::1]", "::1", 80},
                                             {"https://127.0.0.1:7070", "127.0.0.1", 7070},
                                             {"https://h", "h", 443}}) {
    CAPTURE(c.url);
    auto a = net::parse_url(c.url);
    REQUIRE_MESSAGE(a.is_ok(), a.error().to_string());
    CHECK(a->host == c.host);
    CHECK(a->port == c.port);
  }
}

TEST_CASE("parse_url refuses other schemes and paths and bad ports and a missing host") {
  struct bad_case {
    const char* url;
    const char* says;
  };
  for (const auto& c : std::vector<bad_case>{{"ftp://h", "only http:// and https://"},
                                             {"https://h:7070/v1", "must not have a path"},
                                             {"http://h:7070/v1", "must not have a path"},
                                             {"http://h:0", "bad port"},
                                             {"http://h:65536", "bad port"},
                                             {"http://h:70x", "bad port"},
                                             {"http://h:", "bad port"},
                                             {"http://h:-1", "bad port"},
                                             {"http://:7070", "no host"},
                                             {"", "no host"},
                                             {"http://[::1:7070", "missing ']'"},
                                             {"http://[::1]7070", "bad port"}}) {
    CAPTURE(c.url);
    auto a = net::parse_url(c.url);
    REQUIRE_FALSE(a.is_ok());
    CHECK(a.error().error_code() == code::invalid_argument);
    CHECK(a.error().message().find(c.says) != std::string::npos);
  }
}

TEST_CASE("percent_encode keeps unreserved bytes and encodes every other byte as uppercase hex") {
  CHECK(net::percent_encode("acct/alice") == "acct%2Falice");
  CHECK(net::percent_encode("AZaz09-._~") == "AZaz09-._~");
  CHECK(net::percent_encode("") == "");
  CHECK(net::percent_encode("a b") == "a%20b");
  CHECK(net::percent_encode("100%") == "100%25");
  CHECK(net::percent_encode("?&=#+") == "%3F%26%3D%23%2B");
  CHECK(net::percent_encode("\xc3\xa9") == "%C3%A9");  // UTF-8 bytes one by one
  CHECK(net::percent_encode(std::string("\0\xff", 2)) == "%00%FF");
  // One path segment: no '/' survives, whatever the name.
  CHECK(net::percent_encode("a/b/c/messages").find('/') == std::string::npos);
}

TEST_CASE("an http_client reports invalid_argument before connect and unavailable when refused") {
  net::http_client c;
  auto early = c.request("GET", "/v1/health");
  REQUIRE_FALSE(early.is_ok());
  CHECK(early.error().error_code() == code::invalid_argument);

  // A bound socket that never listens: connecting to its port is refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  uint16_t port = ntohs(a.sin_port);

  auto s = c.connect("127.0.0.1", port);
  CHECK(s.error_code() == code::unavailable);
  CHECK(s.message().find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
  auto r = c.request("GET", "/v1/health");
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.error().error_code() == code::unavailable);
  ::close(fd);
}
