// keeld's HTTP API over TLS, end to end: keeld started with certificates
// the test makes (support/test_certs.hpp) and the keel CLI talking to it
// over https://, with and without client certificates, a token and the
// ledger stream; plain HTTP to the TLS port; and TLS settings that stop a
// start.

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "http/client.hpp"
#include "support/cli_runner.hpp"
#include "support/keeld_process.hpp"
#include "support/raw_http.hpp"
#include "support/temp_dir.hpp"
#include "support/test_certs.hpp"

using namespace keel;
using namespace keel::test::cli;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

using pki = test::test_pki;

// keeld's flags for TLS with p's server certificate, then `more`.
std::vector<std::string> tls_flags(const pki& p, std::vector<std::string> more = {}) {
  std::vector<std::string> f{"--tls-cert", p.server.cert, "--tls-key", p.server.key};
  f.insert(f.end(), more.begin(), more.end());
  return f;
}

// keeld over TLS, and the CLI pointed at it.
struct tls_node {
  test::keeld_process keeld;
  explicit tls_node(const pki& p, std::vector<std::string> more = {})
      : keeld(KEEL_KEELD_PATH, (p.dir.path() / "data").string(), tls_flags(p, std::move(more))) {
    REQUIRE_MESSAGE(keeld.start(), keeld.output());
  }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(keeld.port()); }
  // keel --server https://... `args`, with `env` added to its environment.
  cli_result keel(std::vector<std::string> args, const env_list& env = {}) const {
    args.insert(args.begin(), {"--server", url()});
    return run_keel(args, env);
  }
};

}  // namespace

TEST_CASE("keeld with a certificate answers the CLI over https when it trusts the CA") {
  pki p;
  tls_node n(p);
  CHECK_MESSAGE(has(n.keeld.output(), "listening on https://127.0.0.1:"), n.keeld.output());
  CHECK_MESSAGE(has(n.keeld.output(), "info  TLS on: certificate " + p.server.cert),
                n.keeld.output());
  CHECK_FALSE(has(n.keeld.output(), "without TLS"));

  auto spawn = n.keel({"--ca", p.ca.cert(), "spawn", "counter", "tls/a"});
  REQUIRE_MESSAGE(spawn.exit_code == 0, said(spawn));
  auto send = n.keel({"--ca", p.ca.cert(), "send", "tls/a", R"({"add": 5})", "--wait", "5000"});
  CHECK_MESSAGE(send.exit_code == 0, said(send));
  CHECK(has(send.out, R"(reply {"total":5})"));
  // KEEL_CA does what --ca does.
  auto show = n.keel({"show", "tls/a"}, {{"KEEL_CA", p.ca.cert()}});
  CHECK_MESSAGE(show.exit_code == 0, said(show));
  CHECK(has(show.out, R"(state       {"total":5})"));

  SUBCASE("without --ca the certificate does not verify, and the CLI says what to pass") {
    auto r = n.keel({"health"});
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(has(r.err, "certificate verify failed"), said(r));
    CHECK_MESSAGE(has(r.err, "pass --ca FILE or set KEEL_CA"), said(r));
  }
  SUBCASE("a CA that did not sign the certificate does not verify it either") {
    test::test_ca other(p.dir.path(), "other");
    auto r = n.keel({"--ca", other.cert(), "health"});
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(has(r.err, "certificate verify failed"), said(r));
  }
  SUBCASE("plain HTTP to the TLS port gets no answer") {
    test::raw_connection plain;
    REQUIRE(plain.connect(n.keeld.port()));
    REQUIRE(plain.send("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"));
    bool closed = false;
    const std::string raw = plain.read_all(std::chrono::seconds(10), &closed);
    CHECK(closed);
    CHECK_MESSAGE(!has(raw, "HTTP/1."), raw);
    auto r = run_keel({"--server", "http://127.0.0.1:" + std::to_string(n.keeld.port()), "health"});
    CHECK_MESSAGE(r.exit_code == 1, said(r));
    // Counted for the operator.
    net::http_client c;
    c.set_ca_file(p.ca.cert());
    REQUIRE(c.connect(net::server_address{"https", "127.0.0.1", n.keeld.port()}).is_ok());
    auto metrics = c.request("GET", "/metrics");
    REQUIRE_MESSAGE(metrics, metrics.error().to_string());
    CHECK_MESSAGE(has(metrics->body, "keel_http_tls_handshake_failures_total "), metrics->body);
    CHECK_FALSE(has(metrics->body, "keel_http_tls_handshake_failures_total 0\n"));
  }
}

TEST_CASE("with --tls-client-ca only a client with a certificate that CA signed gets in") {
  pki p;
  tls_node n(p, {"--tls-client-ca", p.ca.cert()});
  CHECK_MESSAGE(has(n.keeld.output(), "client certificates required, signed by " + p.ca.cert()),
                n.keeld.output());

  SUBCASE("a client without a certificate is refused, and told what to pass") {
    auto r = n.keel({"--ca", p.ca.cert(), "health"});
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(has(r.err, "requires a client certificate"), said(r));
    CHECK_MESSAGE(has(r.err, "--cert FILE --key FILE"), said(r));
  }
  SUBCASE("a client with one gets in, by flags or by the environment") {
    auto r =
        n.keel({"--ca", p.ca.cert(), "--cert", p.client.cert, "--key", p.client.key, "health"});
    CHECK_MESSAGE(r.exit_code == 0, said(r));
    CHECK(has(r.out, "ok"));
    auto env = n.keel(
        {"health"},
        {{"KEEL_CA", p.ca.cert()}, {"KEEL_CERT", p.client.cert}, {"KEEL_KEY", p.client.key}});
    CHECK_MESSAGE(env.exit_code == 0, said(env));
  }
  SUBCASE("a certificate from another CA is refused") {
    test::test_ca other(p.dir.path(), "other");
    auto stranger = other.issue_client("stranger");
    auto r =
        n.keel({"--ca", p.ca.cert(), "--cert", stranger.cert, "--key", stranger.key, "health"});
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(has(r.err, "refused the client certificate"), said(r));
  }
  SUBCASE("--cert without --key, or a file that cannot be read, is a usage error") {
    auto r = n.keel({"--ca", p.ca.cert(), "--cert", p.client.cert, "health"});
    CHECK(r.exit_code == 2);
    CHECK_MESSAGE(has(r.err, "--cert (KEEL_CERT) needs --key"), said(r));
    const std::string missing = p.dir.str() + "/missing.key";
    auto unread =
        n.keel({"--ca", p.ca.cert(), "--cert", p.client.cert, "--key", missing, "health"});
    CHECK(unread.exit_code == 2);
    CHECK_MESSAGE(has(unread.err, "cannot load the client key '" + missing + "'"), said(unread));
    CHECK_MESSAGE(has(unread.err, "No such file or directory"), said(unread));
  }
}

TEST_CASE("keel ledger -f follows an agent over mutual TLS with a token") {
  pki p;
  tls_node n(p, {"--tls-client-ca", p.ca.cert(), "--token", "s3cret"});
  const std::vector<std::string> auth{"--ca",  p.ca.cert(),  "--cert",  p.client.cert,
                                      "--key", p.client.key, "--token", "s3cret"};
  auto with_auth = [&](std::vector<std::string> args) {
    args.insert(args.begin(), auth.begin(), auth.end());
    return n.keel(std::move(args));
  };
  REQUIRE(with_auth({"spawn", "counter", "tls/follow"}).exit_code == 0);

  std::vector<std::string> argv{KEEL_CLI_PATH, "--server", n.url()};
  argv.insert(argv.end(), auth.begin(), auth.end());
  argv.insert(argv.end(), {"--json", "ledger", "tls/follow", "-f"});
  test::child_process follower(argv, keel_environment(), test::child_process::stderr_to::output);
  REQUIRE_MESSAGE(follower.wait_output([](const std::string& out) { return has(out, "spawned"); },
                                       std::chrono::seconds(20)),
                  follower.output());
  for (int add : {2, 3}) {
    auto sent = with_auth({"send", "tls/follow", R"({"add": )" + std::to_string(add) + "}"});
    REQUIRE_MESSAGE(sent.exit_code == 0, said(sent));
  }
  CHECK_MESSAGE(
      follower.wait_output([](const std::string& out) { return has(out, R"("total":5)"); },
                           std::chrono::seconds(20)),
      follower.output());
  CHECK(follower.kill9());  // still following when stopped
}

TEST_CASE("over TLS the bearer token is still required") {
  pki p;
  tls_node n(p, {"--token", "s3cret"});
  auto without = n.keel({"--ca", p.ca.cert(), "ls"});
  CHECK(without.exit_code == 1);
  CHECK_MESSAGE(has(without.err, "unauthorized"), said(without));
  CHECK(has(without.err, "401"));
  auto wrong = n.keel({"--ca", p.ca.cert(), "--token", "guess", "ls"});
  CHECK(wrong.exit_code == 1);
  auto with = n.keel({"--ca", p.ca.cert(), "--token", "s3cret", "ls"});
  CHECK_MESSAGE(with.exit_code == 0, said(with));
  // /v1/health needs no token, over TLS as over TCP.
  CHECK(n.keel({"--ca", p.ca.cert(), "health"}).exit_code == 0);
}

TEST_CASE("keeld refuses to start on TLS settings that cannot work, naming the flag or the file") {
  pki p;
  const std::string data = (p.dir.path() / "data").string();
  test::keeld_process keeld(KEEL_KEELD_PATH, data);
  auto start = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"--data", data, "--http", "127.0.0.1:0"});
    return keeld.run_to_exit(flags);
  };
  std::vector<std::string> flags;
  std::string needle;
  SUBCASE("a certificate without a key") {
    flags = {"--tls-cert", p.server.cert};
    needle = "give --tls-cert and --tls-key together";
  }
  SUBCASE("a key without a certificate") {
    flags = {"--tls-key", p.server.key};
    needle = "give --tls-cert and --tls-key together";
  }
  SUBCASE("a client CA without TLS") {
    flags = {"--tls-client-ca", p.ca.cert()};
    needle = "tls_client_ca needs TLS on";
  }
  SUBCASE("a certificate file that is not there") {
    const std::string missing = p.dir.str() + "/missing.pem";
    flags = {"--tls-cert", missing, "--tls-key", p.server.key};
    needle = "cannot read the TLS certificate file '" + missing + "'";
  }
  SUBCASE("a certificate file that holds no certificate") {
    const std::string junk = p.dir.str() + "/junk.pem";
    std::ofstream(junk) << "not a certificate\n";
    flags = {"--tls-cert", junk, "--tls-key", p.server.key};
    needle = "cannot load the TLS certificate '" + junk + "'";
  }
  SUBCASE("a key of another certificate") {
    flags = {"--tls-cert", p.server.cert, "--tls-key", p.client.key};
    needle = "does not belong to the certificate";
  }
  SUBCASE("the same through the config file") {
    const std::string config = p.dir.str() + "/keeld.json";
    std::ofstream(config) << R"({"tls_cert": ")" << p.server.cert << R"("})";
    flags = {"--config", config};
    needle = "give --tls-cert and --tls-key together";
  }
  CHECK_MESSAGE(start(flags) == 2, keeld.output());
  CHECK_MESSAGE(has(keeld.output(), needle), keeld.output());
  // Refused before the store was opened.
  CHECK_FALSE(fs::exists(data));
}

TEST_CASE("keeld warns when it serves a non-loopback address without TLS") {
  test::temp_dir dir("keel-tls");
  test::keeld_process keeld(KEEL_KEELD_PATH, (dir.path() / "data").string(),
                            {"--http", "0.0.0.0:0", "--token", "s3cret"});
  REQUIRE_MESSAGE(keeld.start(), keeld.output());
  CHECK_MESSAGE(has(keeld.output(), "info  TLS off"), keeld.output());
  CHECK_MESSAGE(has(keeld.output(), "warn  serving 0.0.0.0 without TLS"), keeld.output());
}
