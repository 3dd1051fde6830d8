#pragma once
// Private to http/ (client.cpp, server.cpp): what both ends of a
// TLS connection set up alike in their OpenSSL context. Errors name the file
// and say what OpenSSL found wrong with it.

#include <string>
#include <string_view>

#include <boost/asio/ssl/context.hpp>

#include "base/status.hpp"

namespace keel::net::tls {

// TLS 1.2 or newer, no compression, no renegotiation, and no pass phrase
// prompt on the terminal for an encrypted key (it fails to load instead).
void harden(boost::asio::ssl::context& ctx);

// Loads a PEM certificate chain (leaf first) and its PEM private key, and
// checks that they belong together. `whose` names them in errors ("TLS",
// "client"). Errors: invalid_argument.
status use_key_pair(boost::asio::ssl::context& ctx, const std::string& cert_file,
                    const std::string& key_file, std::string_view whose);

// Trusts the CA certificates of a PEM file for verifying the peer. `what`
// names it in errors ("CA file", "TLS client CA"). Errors: invalid_argument.
status trust(boost::asio::ssl::context& ctx, const std::string& ca_file, std::string_view what);

}  // namespace keel::net::tls
