#include "http/tls_context.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace keel::net::tls {

namespace ssl = boost::asio::ssl;

namespace {

// OpenSSL reports a file it cannot open as a bare "system library" error:
// the reason then comes from errno.
status failed(std::string_view what, const std::string& file, const boost::system::error_code& ec,
              std::string_view hint = {}) {
  std::string why = ec.message();
  if (std::FILE* f = std::fopen(file.c_str(), "rb"))
    std::fclose(f);
  else
    why = std::strerror(errno);
  return error(code::invalid_argument, "cannot load the " + std::string(what) + " '" + file + "'" +
                                           std::string(hint) + ": " + why);
}

}  // namespace

void harden(ssl::context& ctx) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                  SSL_OP_NO_RENEGOTIATION);
  ctx.set_password_callback([](std::size_t, ssl::context::password_purpose) { return ""; });
}

status use_key_pair(ssl::context& ctx, const std::string& cert_file, const std::string& key_file,
                    std::string_view whose) {
  const std::string name(whose);
  boost::system::error_code ec;
  ctx.use_certificate_chain_file(cert_file, ec);
  if (ec) return failed(name + " certificate", cert_file, ec);
  ctx.use_private_key_file(key_file, ssl::context::pem, ec);
  // OpenSSL compares the key with the certificate as it loads it.
  const bool mismatch =
      ec ? ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH
         : SSL_CTX_check_private_key(ctx.native_handle()) != 1;
  if (mismatch)
    return error(code::invalid_argument, "the " + name + " key '" + key_file +
                                             "' does not belong to the certificate '" + cert_file +
                                             "'");
  if (ec) return failed(name + " key", key_file, ec, " (PEM, not encrypted)");
  return status::ok();
}

status trust(ssl::context& ctx, const std::string& ca_file, std::string_view what) {
  boost::system::error_code ec;
  ctx.load_verify_file(ca_file, ec);
  if (ec) return failed(what, ca_file, ec);
  return status::ok();
}

}  // namespace keel::net::tls
