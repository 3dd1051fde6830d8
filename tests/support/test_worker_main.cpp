// keel_test_worker: a worker that dies holding a lease, for integration
// tests of worker queues. It polls one task from a keeld queue, prints the
// poll answer as one JSON line on stdout, then waits to be killed without
// completing the task. It gives up waiting after 60 s (exit 0) so a test
// that dies first cannot leave it behind for long.
//
// usage: keel_test_worker PORT QUEUE WORKER WAIT_MS
// exit: 0 after the wait, 1 when the poll failed (the reason on stderr),
//       2 on a usage error.

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "http/client.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: keel_test_worker PORT QUEUE WORKER WAIT_MS\n");
    return 2;
  }
  int port = 0;
  unsigned long wait_ms = 0;
  try {
    port = std::stoi(argv[1]);
    wait_ms = std::stoul(argv[4]);
  } catch (const std::exception&) {
    std::fprintf(stderr, "keel_test_worker: PORT and WAIT_MS must be numbers\n");
    return 2;
  }
  keel::net::http_client client;
  if (auto st = client.connect("127.0.0.1", static_cast<uint16_t>(port)); !st.is_ok()) {
    std::fprintf(stderr, "keel_test_worker: %s\n", st.to_string().c_str());
    return 1;
  }
  const nlohmann::json body = {{"queue", argv[2]}, {"worker", argv[3]}, {"wait_ms", wait_ms}};
  auto r = client.request("POST", "/v1/tasks/poll", body.dump());
  if (!r.is_ok()) {
    std::fprintf(stderr, "keel_test_worker: %s\n", r.error().to_string().c_str());
    return 1;
  }
  if (r->status != 200) {
    std::fprintf(stderr, "keel_test_worker: HTTP %u: %s\n", r->status, r->body.c_str());
    return 1;
  }
  std::printf("%s\n", nlohmann::json::parse(r->body, nullptr, false).dump().c_str());
  std::fflush(stdout);
  // Holds the lease without completing it until the test kills us.
  std::this_thread::sleep_for(std::chrono::seconds(60));
  return 0;
}
