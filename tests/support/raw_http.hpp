#pragma once
// Raw bytes over a TCP connection to 127.0.0.1, for tests of what an HTTP
// client library would never send (smuggling attempts, idle connections,
// headers without their body), and a listener for what our server never
// answers. Blocking, with a deadline on every read.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace keel::test {

class raw_connection {
 public:
  raw_connection() = default;
  // Takes over a connected socket (raw_listener::accept).
  explicit raw_connection(int fd) : fd_(fd) {}
  ~raw_connection() { close(); }
  raw_connection(raw_connection&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  raw_connection& operator=(raw_connection&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }

  // Connects to 127.0.0.1:port; false when it cannot.
  bool connect(uint16_t port) {
    close();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close();
      return false;
    }
    return true;
  }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads until `text` has arrived (and returns all that did), the peer
  // closes or `timeout` passes (and returns "").
  std::string read_until(std::string_view text, std::chrono::milliseconds timeout) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.find(text) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {};
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return {};
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }

  // Reads until the peer closes or `timeout` passes; `closed` says which.
  std::string read_all(std::chrono::milliseconds timeout, bool* closed = nullptr) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        if (closed) *closed = true;
        return out;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
    if (closed) *closed = false;
    return out;
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // The address the other end connected from ("" when unknown).
  std::string peer_address() const {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    char text[INET_ADDRSTRLEN] = {};
    if (fd_ < 0 || ::getpeername(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
        ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text) == nullptr)
      return {};
    return text;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// A listener for a hand-written server (responses our server never
// sends, a server that takes a request and never answers).
class raw_listener {
 public:
  // Listens on `host` (an IPv4 address of this network namespace) at
  // `port` (0: a free one). Throws std::runtime_error when it cannot.
  explicit raw_listener(const std::string& host = "127.0.0.1", uint16_t port = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
      throw std::runtime_error("raw_listener: not an IPv4 address: " + host);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(fd_, 8) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("raw_listener: cannot listen on " + host);
    port_ = ntohs(a.sin_port);
  }
  ~raw_listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  raw_listener(const raw_listener&) = delete;
  raw_listener& operator=(const raw_listener&) = delete;

  uint16_t port() const { return port_; }
  // The next connection, waited for up to `timeout`; not connected (fd()
  // -1) when none came.
  raw_connection accept(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return raw_connection();
    return raw_connection(::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC));
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// How many HTTP responses (status lines) `raw` holds.
inline int count_responses(std::string_view raw) {
  int n = 0;
  for (std::size_t at = raw.find("HTTP/1."); at != std::string_view::npos;
       at = raw.find("HTTP/1.", at + 1))
    ++n;
  return n;
}

}  // namespace keel::test
