#pragma once
// A loopback port that refuses connections: bound, never listening, so no
// other process can take it while the test runs (until release()).

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>

namespace keel::test {

class refused_port {
 public:
  refused_port() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("refused_port: cannot bind a loopback socket");
    port_ = ntohs(a.sin_port);
  }
  ~refused_port() { release(); }
  refused_port(const refused_port&) = delete;
  refused_port& operator=(const refused_port&) = delete;

  uint16_t port() const { return port_; }
  // Closes the socket: the port is free for a server to listen on (a test
  // of a client that starts before its server).
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace keel::test
