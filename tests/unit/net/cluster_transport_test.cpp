// net/cluster/transport.hpp: transports in one process on 127.0.0.1, each
// with its own actor system, talking over real sockets.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.hpp"
#include "net/cluster/transport.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

using namespace keel;
using namespace std::chrono_literals;
using net::cluster_transport;

namespace {

config::cluster_config cluster(std::string secret = "0123456789abcdef-secret") {
  config::cluster_config c;
  c.cluster_id = "test-cluster";
  c.secret = std::move(secret);
  c.heartbeat_ms = 100;
  c.connection_timeout_ms = 1000;
  c.reconnect_min_ms = 20;
  c.reconnect_max_ms = 200;
  return c;
}

config::cluster_member member(std::string id, uint16_t port = 0) {
  config::cluster_member m;
  m.id = std::move(id);
  m.host = "127.0.0.1";
  m.cluster_port = port;
  return m;
}

// What one node's handlers saw. The handler echoes "echo:<payload>", fails
// "fail" with conflict and keeps the responder of "hold" without answering.
struct recorder {
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> peer_events;
  std::vector<std::string> callers;
  std::vector<net::transport_handlers::respond_fn> held;
  std::atomic<int> calls{0};
  std::vector<std::pair<std::string, std::string>> casts;  // from, payload
  std::atomic<int> cast_count{0};

  std::vector<std::pair<std::string, bool>> events() {
    std::lock_guard lk(mu);
    return peer_events;
  }
};

net::transport_handlers handlers_for(const std::shared_ptr<recorder>& r) {
  net::transport_handlers h;
  h.on_call = [r](const std::string& from, std::string payload,
                  net::transport_handlers::respond_fn respond) {
    ++r->calls;
    {
      std::lock_guard lk(r->mu);
      if (r->callers.size() < 16) r->callers.push_back(from);
      if (payload == "hold") {
        r->held.push_back(std::move(respond));
        return;
      }
    }
    if (payload == "fail")
      respond(error(code::conflict, "no way"));
    else
      respond("echo:" + payload);
  };
  h.on_cast = [r](const std::string& from, std::string payload) {
    std::lock_guard lk(r->mu);
    r->casts.emplace_back(from, std::move(payload));
    ++r->cast_count;
  };
  h.on_peer = [r](const std::string& peer, bool up) {
    std::lock_guard lk(r->mu);
    r->peer_events.emplace_back(peer, up);
  };
  return h;
}

std::unique_ptr<cluster_transport> start(const config::cluster_config& c,
                                         const config::cluster_member& self,
                                         std::vector<config::cluster_member> peers,
                                         const std::shared_ptr<recorder>& r) {
  auto t = cluster_transport::start(c, self, std::move(peers), handlers_for(r));
  REQUIRE_MESSAGE(t.is_ok(), t.error().to_string());
  return std::move(t).value();
}

result<std::string> call_and_wait(cluster_transport& t, const std::string& to, std::string payload,
                                  uint32_t timeout_ms = 5000) {
  auto got = std::make_shared<test::future_value<result<std::string>>>();
  t.call(to, std::move(payload), timeout_ms,
         [got](result<std::string> r) { got->set(std::move(r)); });
  auto r = got->wait(10s);
  REQUIRE(r.has_value());
  return *r;
}

std::optional<net::peer_status> status_of(const cluster_transport& t, const std::string& id) {
  for (auto& p : t.peers())
    if (p.id == id) return p;
  return std::nullopt;
}

// Two members "a" and "b" of one cluster, both up.
struct pair_of_nodes {
  std::shared_ptr<recorder> ra = std::make_shared<recorder>();
  std::shared_ptr<recorder> rb = std::make_shared<recorder>();
  std::unique_ptr<cluster_transport> a;
  std::unique_ptr<cluster_transport> b;

  explicit pair_of_nodes(const config::cluster_config& ca, const config::cluster_config& cb) {
    a = start(ca, member("a"), {}, ra);
    b = start(cb, member("b"), {member("a", a->port())}, rb);
    a->add_peer(member("b", b->port()));
  }
  pair_of_nodes() : pair_of_nodes(cluster(), cluster()) {}
  bool both_up() const { return a->is_up("b") && b->is_up("a"); }
};

}  // namespace

// CAF 0.17.6's OpenSSL module sometimes leaks a connection's session and its
// BASP broker when an actor system with TLS connections shuts down (seen
// under LeakSanitizer with one or two connections per pair, never without
// TLS). Not ours to fix; keep the sanitizer run about our own leaks.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libcaf_openssl.so\n";
}

TEST_CASE("two cluster transports authenticate each other and round-trip calls") {
  pair_of_nodes n;
  // on_peer runs just after the status turns up.
  REQUIRE(test::eventually(
      [&] { return n.both_up() && !n.ra->events().empty() && !n.rb->events().empty(); }));
  CHECK(n.ra->events() == std::vector<std::pair<std::string, bool>>{{"b", true}});
  CHECK(n.rb->events() == std::vector<std::pair<std::string, bool>>{{"a", true}});
  auto sb = status_of(*n.a, "b");
  REQUIRE(sb.has_value());
  CHECK(sb->up);
  CHECK(sb->connects == 1);
  CHECK(sb->since_ms > 0);

  SUBCASE("a call carries the payload and the caller's id, both ways") {
    auto r = call_and_wait(*n.a, "b", "hello");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK(*r == "echo:hello");
    auto back = call_and_wait(*n.b, "a", std::string(100'000, 'x'));
    REQUIRE(back.is_ok());
    CHECK(back->size() == 100'005);
    std::lock_guard lk(n.rb->mu);
    CHECK(n.rb->callers == std::vector<std::string>{"a"});
  }

  SUBCASE("a handler's error comes back with its code and message") {
    auto r = call_and_wait(*n.a, "b", "fail");
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::conflict);
    CHECK(r.error().message() == "no way");
  }

  SUBCASE("a call to a peer that is not connected fails at once with unavailable") {
    bool done = false;
    n.a->call("nobody", "x", 5000, [&](result<std::string> r) {
      CHECK(r.error().error_code() == code::unavailable);
      done = true;
    });
    CHECK(done);  // before call() returned
    CHECK(n.rb->calls == 0);
  }

  SUBCASE("a call nobody answers times out and a late answer is ignored") {
    std::atomic<int> completions{0};
    auto got = std::make_shared<test::future_value<result<std::string>>>();
    auto t0 = mono_ns();
    n.a->call("b", "hold", 200, [&, got](result<std::string> r) {
      ++completions;
      got->set(std::move(r));
    });
    auto r = got->wait(10s);
    REQUIRE(r.has_value());
    CHECK(r->error().error_code() == code::timeout);
    CHECK(mono_ns() - t0 >= 190'000'000);
    net::transport_handlers::respond_fn late;
    {
      std::lock_guard lk(n.rb->mu);
      REQUIRE(n.rb->held.size() == 1);
      late = n.rb->held[0];
    }
    late(std::string("too late"));
    // The late reply travels like any other: a call behind it proves it
    // arrived (and was dropped) without completing the first call again.
    CHECK(call_and_wait(*n.a, "b", "after").is_ok());
    CHECK(completions == 1);
  }

  SUBCASE("stopping a transport fails its pending calls with unavailable") {
    auto got = std::make_shared<test::future_value<result<std::string>>>();
    n.a->call("b", "hold", 60'000, [got](result<std::string> r) { got->set(std::move(r)); });
    REQUIRE(test::eventually([&] { return n.rb->calls == 1; }));
    n.a->stop();
    auto r = got->wait(0ms);  // completed before stop() returned
    REQUIRE(r.has_value());
    CHECK(r->error().error_code() == code::unavailable);
    CHECK_FALSE(n.a->is_up("b"));
    bool done = false;
    n.a->call("b", "x", 1000, [&](result<std::string> r2) {
      CHECK(r2.error().error_code() == code::unavailable);
      done = true;
    });
    CHECK(done);
    n.a->stop();  // idempotent
  }
}

TEST_CASE("casts reach an authenticated peer one-way, in the order sent, and fail fast when down") {
  pair_of_nodes n;
  REQUIRE(test::eventually([&] { return n.both_up(); }));
  constexpr int count = 5000;
  for (int i = 0; i < count; ++i) {
    // Binary payloads, as raft messages are.
    std::string payload = std::to_string(i);
    payload.push_back('\0');
    payload.push_back(static_cast<char>(i & 0xff));
    REQUIRE(n.a->cast("b", std::move(payload)));
  }
  REQUIRE(test::eventually([&] { return n.rb->cast_count == count; }));
  {
    std::lock_guard lk(n.rb->mu);
    for (int i = 0; i < count; ++i) {
      CAPTURE(i);
      REQUIRE(n.rb->casts[i].first == "a");
      REQUIRE(n.rb->casts[i].second.size() == std::to_string(i).size() + 2);
      REQUIRE(n.rb->casts[i].second.substr(0, std::to_string(i).size()) == std::to_string(i));
      REQUIRE(n.rb->casts[i].second.back() == static_cast<char>(i & 0xff));
    }
  }
  CHECK(n.rb->calls == 0);  // nothing was a call
  CHECK_FALSE(n.a->cast("nobody", "x"));
  n.b->stop();
  REQUIRE(test::eventually([&] { return !n.a->is_up("b"); }));
  CHECK_FALSE(n.a->cast("b", "after"));
  n.a->stop();
  CHECK_FALSE(n.a->cast("b", "stopped"));
}

TEST_CASE("a peer with the wrong secret is refused on both sides and gets no calls through") {
  pair_of_nodes n(cluster("0123456789abcdef-secret"), cluster("another-secret-of-16+"));
  auto refused = [](const cluster_transport& t, const std::string& id) {
    auto s = status_of(t, id);
    return s && s->detail == "refused: wrong secret";
  };
  REQUIRE(test::eventually([&] { return refused(*n.a, "b") && refused(*n.b, "a"); }));
  CHECK_FALSE(n.a->is_up("b"));
  CHECK_FALSE(n.b->is_up("a"));
  auto r = call_and_wait(*n.a, "b", "hello");
  CHECK(r.error().error_code() == code::unavailable);
  CHECK(n.ra->events().empty());
  CHECK(n.rb->events().empty());
  CHECK(n.ra->calls == 0);
  CHECK(n.rb->calls == 0);
  // Nor casts: refused before they are sent, and nothing arrives.
  CHECK_FALSE(n.a->cast("b", "hello"));
  CHECK(n.rb->cast_count == 0);
}

TEST_CASE("a peer that is not a configured member is refused") {
  auto ra = std::make_shared<recorder>();
  auto rc = std::make_shared<recorder>();
  auto a = start(cluster(), member("a"), {}, ra);
  auto c = start(cluster(), member("c"), {member("a", a->port())}, rc);
  REQUIRE(test::eventually([&] {
    auto s = status_of(*c, "a");
    return s && s->detail.find("unknown member") != std::string::npos;
  }));
  CHECK_FALSE(c->is_up("a"));
  CHECK(a->peers().empty());
  CHECK(ra->events().empty());
}

TEST_CASE("a stopped peer is marked down and comes back up when restarted on its port") {
  auto c = cluster();
  pair_of_nodes n(c, c);
  REQUIRE(test::eventually([&] { return n.both_up(); }));
  uint16_t port_b = n.b->port();
  auto t0 = mono_ns();
  n.b->stop();
  REQUIRE(test::eventually([&] { return !n.a->is_up("b"); }, 5s));
  CHECK(mono_ns() - t0 < int64_t{c.connection_timeout_ms} * 1'000'000 * 2);
  REQUIRE(test::eventually([&] { return n.ra->events().size() == 2; }));
  CHECK(n.ra->events() == std::vector<std::pair<std::string, bool>>{{"b", true}, {"b", false}});
  auto down = status_of(*n.a, "b");
  REQUIRE(down.has_value());
  CHECK(down->detail.rfind("lost", 0) == 0);
  CHECK(call_and_wait(*n.a, "b", "x").error().error_code() == code::unavailable);

  auto rb2 = std::make_shared<recorder>();
  auto b2 = start(c, member("b", port_b), {member("a", n.a->port())}, rb2);
  CHECK(b2->port() == port_b);
  REQUIRE(test::eventually([&] { return n.a->is_up("b") && b2->is_up("a"); }));
  auto again = call_and_wait(*n.a, "b", "again");
  REQUIRE(again.is_ok());
  CHECK(*again == "echo:again");
  CHECK(status_of(*n.a, "b")->connects == 2);
}

TEST_CASE("a removed peer is forgotten and an added one is connected") {
  pair_of_nodes n;
  REQUIRE(test::eventually([&] { return n.both_up(); }));
  n.a->remove_peer("b");
  REQUIRE(test::eventually([&] { return n.a->peers().empty() && n.ra->events().size() == 2; }));
  CHECK(n.ra->events().back() == std::pair<std::string, bool>{"b", false});
  CHECK(call_and_wait(*n.a, "b", "x").error().error_code() == code::unavailable);
  n.a->add_peer(member("b", n.b->port()));
  REQUIRE(test::eventually([&] { return n.a->is_up("b"); }));
  CHECK(call_and_wait(*n.a, "b", "back").is_ok());
}

TEST_CASE("twenty thousand pipelined calls between two transports all complete") {
  pair_of_nodes n;
  REQUIRE(test::eventually([&] { return n.both_up(); }));
  constexpr int total = 20'000;
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  auto t0 = mono_ns();
  for (int i = 0; i < total; ++i)
    n.a->call("b", std::to_string(i), 60'000, [&ok, &failed, i](result<std::string> r) {
      if (r.is_ok() && *r == "echo:" + std::to_string(i))
        ++ok;
      else
        ++failed;
    });
  REQUIRE(test::eventually([&] { return ok + failed == total; }, 60s));
  CHECK(ok == total);
  double secs = static_cast<double>(mono_ns() - t0) / 1e9;
  MESSAGE("pipelined cluster calls: " << total / secs << " calls/s");
}

TEST_CASE(
    "cluster transports with TLS files connect; a peer whose certificate is not trusted does not") {
  if (!std::filesystem::exists("/usr/bin/openssl")) {
    MESSAGE("skipped: no openssl program to make certificates");
    return;
  }
  test::temp_dir dir("keel-cluster-tls");
  auto make_cert = [&](const std::string& name) {
    std::string base = dir.str() + "/" + name;
    std::string cmd =
        "/usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
        " -nodes -days 2 -subj /CN=" +
        name + " -keyout " + base + ".key -out " + base + ".pem >/dev/null 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return base;
  };
  // Self-signed: the certificate is its own CA.
  std::string trusted = make_cert("cluster"), stranger = make_cert("stranger");
  auto tls_cluster = [&](const std::string& base, const std::string& ca) {
    auto c = cluster();
    c.tls.certificate = base + ".pem";
    c.tls.key = base + ".key";
    c.tls.ca = ca + ".pem";
    return c;
  };

  SUBCASE("members with certificates the CA signed authenticate and call") {
    auto c = tls_cluster(trusted, trusted);
    pair_of_nodes n(c, c);
    REQUIRE(test::eventually([&] { return n.both_up(); }));
    auto r = call_and_wait(*n.a, "b", "over tls");
    REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
    CHECK(*r == "echo:over tls");
  }
  SUBCASE("a member with a certificate the CA did not sign never comes up") {
    pair_of_nodes n(tls_cluster(trusted, trusted), tls_cluster(stranger, trusted));
    REQUIRE(test::eventually([&] {
      auto s = status_of(*n.a, "b");
      return s && s->detail.rfind("unreachable", 0) == 0;
    }));
    CHECK_FALSE(n.a->is_up("b"));
    CHECK_FALSE(n.b->is_up("a"));
    CHECK(n.ra->calls == 0);
    CHECK(n.rb->calls == 0);
  }
  SUBCASE("unreadable TLS files are invalid_argument") {
    auto c = tls_cluster(dir.str() + "/missing", trusted);
    auto t = cluster_transport::start(c, member("a"), {}, {});
    REQUIRE_FALSE(t.is_ok());
    CHECK(t.error().error_code() == code::invalid_argument);
  }
}
