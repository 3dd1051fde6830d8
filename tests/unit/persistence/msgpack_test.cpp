#include <doctest/doctest.h>

#include <random>

#include "persistence/msgpack.hpp"

using keel::persistence::msgpack_decode;
using keel::persistence::to_msgpack;
using nlohmann::json;

namespace {

json random_json(std::mt19937_64& rng, int depth) {
  auto pick = rng() % (depth > 3 ? 7 : 9);
  switch (pick) {
    case 0:
      return nullptr;
    case 1:
      return rng() % 2 == 0;
    case 2:
      return static_cast<int64_t>(rng()) >> (rng() % 64);  // every width, both signs
    case 3:
      return static_cast<uint64_t>(rng()) >> (rng() % 64);
    case 4:
      return static_cast<double>(static_cast<int64_t>(rng() % 2000000) - 1000000) / 7.0;
    case 5:
    case 6: {
      static const std::size_t lengths[] = {0, 1, 31, 32, 255, 256, 1000, 65535, 65536};
      std::size_t n = lengths[rng() % 9];
      std::string s(n, 'a');
      for (auto& c : s) c = static_cast<char>(rng() & 0xff);
      return s;
    }
    case 7: {
      json a = json::array();
      std::size_t n = rng() % 3 == 0 ? 16 + rng() % 10 : rng() % 5;
      for (std::size_t i = 0; i < n; ++i) a.push_back(random_json(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      std::size_t n = rng() % 3 == 0 ? 16 + rng() % 10 : rng() % 5;
      for (std::size_t i = 0; i < n; ++i)
        o["k" + std::to_string(rng() % 1000)] = random_json(rng, depth + 1);
      return o;
    }
  }
}

}  // namespace

TEST_CASE("the MessagePack decoder agrees with nlohmann's on random documents") {
  std::mt19937_64 rng(20261126);
  for (int i = 0; i < 400; ++i) {
    json j = random_json(rng, 0);
    std::string bytes = to_msgpack(j);
    auto ours = msgpack_decode(bytes);
    REQUIRE(ours.has_value());
    json theirs = json::from_msgpack(bytes);
    CHECK(*ours == theirs);
    // Same number types too (dump prints 5 and 5.0 differently).
    auto text = [](const json& x) {
      return x.dump(-1, ' ', false, json::error_handler_t::replace);
    };
    CHECK(text(*ours) == text(theirs));
  }
}

TEST_CASE("the MessagePack decoder refuses truncated, padded and unsupported input") {
  json j = {{"total", -5}, {"label", std::string(300, 'z')}, {"list", {1, 2.5, nullptr, "x"}}};
  std::string bytes = to_msgpack(j);
  for (std::size_t len = 0; len < bytes.size(); ++len)
    CHECK_FALSE(msgpack_decode(std::string_view(bytes).substr(0, len)).has_value());
  CHECK_FALSE(msgpack_decode(bytes + '\x00').has_value());
  CHECK_FALSE(msgpack_decode("\xc1").has_value());          // never used
  CHECK_FALSE(msgpack_decode("\xd4\x01\x00").has_value());  // ext types
  CHECK_FALSE(msgpack_decode("\x81\x01\x02").has_value());  // non-string key
  std::string deep(200, '\x91');                            // arrays nested 200 deep
  deep.push_back('\xc0');
  CHECK_FALSE(msgpack_decode(deep).has_value());
  CHECK_FALSE(msgpack_decode("\xdd\xff\xff\xff\xff").has_value());  // huge count, no body
}
