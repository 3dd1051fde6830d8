#pragma once
// Private to http/server.cpp and http/session.cpp: the server's
// state, which its sessions read (limits, token, handler, TLS context) and
// report to (forget, counters).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>

#include "http/connection.hpp"
#include "http/server.hpp"

namespace keel::net {

struct http_server::impl {
  using tcp = boost::asio::ip::tcp;

  impl(const config::node_config& cfg, server_options o)
      : host(cfg.http_host),
        token(cfg.token),
        max_body(cfg.max_body_bytes),
        max_connections(cfg.max_connections),
        opts(std::move(o)),
        ioc(static_cast<int>(opts.threads == 0 ? 1 : opts.threads)) {
    opts.header_timeout =
        std::min(opts.header_timeout, std::chrono::milliseconds(cfg.http_header_timeout_ms));
  }

  std::string host;
  std::string token;
  uint64_t max_body;
  std::size_t max_connections;
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> handshake_failures{0};
  server_options opts;
  uint16_t port = 0;
  request_handler handler;
  // Set when the port speaks TLS; shared by every session's stream.
  std::shared_ptr<boost::asio::ssl::context> tls;

  // Declared before everything that holds sockets or timers: destroyed last.
  boost::asio::io_context ioc;
  std::shared_ptr<http_detail::gate> door = std::make_shared<http_detail::gate>();
  tcp::acceptor acceptor{boost::asio::make_strand(ioc)};
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  bool started = false;
  std::atomic<bool> stopped{false};

  using connection_map =
      std::unordered_map<http_detail::connection*, std::shared_ptr<http_detail::connection>>;
  std::mutex mu;
  std::condition_variable all_closed;
  bool stopping = false;    // guarded by mu
  connection_map sessions;  // guarded by mu
  // TLS connections past the limit, handshaking to be told 503; not
  // counted as open. Guarded by mu.
  connection_map refusals;

  enum class admission {
    serve,     // registered in `sessions`: start() it
    refuse,    // answer 503 (refuse()); a TLS one is registered in `refusals`
    shed,      // past the limit and too many refusals under way: just close
    stopping,  // the server is stopping: just close
  };
  admission admit(const std::shared_ptr<http_detail::connection>& c);

  // The caller's principal; nullopt when the request must be refused (401).
  std::optional<principal> authorized(std::string_view target,
                                      std::string_view authorization) const;
  // A session that closed: it no longer counts, and stop() stops waiting
  // for it.
  void forget(http_detail::connection* c);
  void do_accept();
  void on_accept(boost::system::error_code ec, tcp::socket socket);
  void run_thread();
};

namespace http_detail {

// A session for a socket the server accepted: TLS when srv.tls is set.
// Defined in session.cpp.
std::shared_ptr<connection> make_session(boost::asio::ip::tcp::socket&& socket,
                                         http_server::impl& srv);

}  // namespace http_detail

}  // namespace keel::net
