#include <doctest/doctest.h>

#include "http/url.hpp"

using namespace keel;
using namespace keel::net;

TEST_CASE("percent_encode keeps only unreserved bytes and percent_decode reverses it") {
  const std::string raw = "acct/alice bob+?&=%~._-\xC3\xA9";
  const std::string enc = percent_encode(raw);
  CHECK(enc == "acct%2Falice%20bob%2B%3F%26%3D%25~._-%C3%A9");
  auto back = percent_decode(enc, false);
  REQUIRE(back);
  CHECK(*back == raw);
}

TEST_CASE(
    "percent_decode refuses a '%' without two hex digits and reads '+' as a space only in "
    "queries") {
  CHECK(percent_decode("a%2", false).error().error_code() == code::invalid_argument);
  CHECK(percent_decode("a%zz", false).error().error_code() == code::invalid_argument);
  CHECK(*percent_decode("a+b", false) == "a+b");
  CHECK(*percent_decode("a+b", true) == "a b");
}

TEST_CASE("parse_target splits raw path segments from decoded query parameters") {
  auto t = parse_target("/v1/agents/a%2Fb?wait=1&q=x+y&flag#frag");
  REQUIRE(t);
  REQUIRE(t->segments.size() == 3);
  CHECK(t->segments[2] == "a%2Fb");
  REQUIRE(t->param("wait"));
  CHECK(*t->param("wait") == "1");
  CHECK(*t->param("q") == "x y");
  CHECK(*t->param("flag") == "");
  CHECK(t->param("frag") == nullptr);

  auto trailing = parse_target("/v1/agents/");
  REQUIRE(trailing);
  CHECK(trailing->segments.size() == 3);
  CHECK(trailing->segments[2].empty());

  CHECK(parse_target("v1/agents").error().error_code() == code::invalid_argument);
  CHECK(parse_target("/v1?x=%g0").error().error_code() == code::invalid_argument);
}

TEST_CASE("parse_url takes a server address with its scheme's default port and refuses a path") {
  auto a = parse_url("127.0.0.1:7070");
  REQUIRE(a);
  CHECK(a->scheme == "http");
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 7070);
  auto s = parse_url("https://example.test");
  REQUIRE(s);
  CHECK(s->tls());
  CHECK(s->port == 443);
  CHECK(!parse_url("http://h/path"));
  CHECK(!parse_url("ftp://h"));
  auto u = parse_url_target("https://api.example.test/v1");
  REQUIRE(u);
  CHECK(u->server.host == "api.example.test");
  CHECK(u->target == "/v1");
}
