#include "support/test_certs.hpp"

#include <cstdio>
#include <random>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace keel::test {

namespace {

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test certificates: ") + what + " failed");
}

struct key_deleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct cert_deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using key_ptr = std::unique_ptr<EVP_PKEY, key_deleter>;
using cert_ptr = std::unique_ptr<X509, cert_deleter>;

key_ptr new_key() {
  key_ptr k(EVP_EC_gen("P-256"));
  check(k != nullptr, "EVP_EC_gen");
  return k;
}

// Adds extension `nid` with the value as openssl.cnf would write it.
void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  check(ext != nullptr, value);
  const int added = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  check(added == 1, "X509_add_ext");
}

// A certificate for `key` named `common_name`, not yet signed and without
// extensions. `issuer` null: self-issued.
cert_ptr new_cert(EVP_PKEY* key, const std::string& common_name, X509* issuer) {
  cert_ptr x(X509_new());
  check(x != nullptr, "X509_new");
  check(X509_set_version(x.get(), 2) == 1, "X509_set_version");
  std::random_device rd;
  check(ASN1_INTEGER_set(X509_get_serialNumber(x.get()), static_cast<long>(rd() >> 1)) == 1,
        "ASN1_INTEGER_set");
  check(X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(x.get()), 2 * 24 * 3600) != nullptr, "notAfter");
  check(X509_set_pubkey(x.get(), key) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(x.get());
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                   -1, 0) == 1,
        "X509_NAME_add_entry_by_txt");
  check(X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name) == 1,
        "X509_set_issuer_name");
  return x;
}

void write_pem(const std::filesystem::path& path, X509* cert, EVP_PKEY* key) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  check(f != nullptr, "fopen");
  const bool ok = cert ? PEM_write_X509(f, cert) == 1
                       : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  check(std::fclose(f) == 0 && ok, "PEM_write");
}

}  // namespace

struct test_ca::impl {
  key_ptr key;
  cert_ptr cert;
};

test_ca::test_ca(std::filesystem::path dir, std::string name)
    : dir_(std::move(dir)), impl_(std::make_unique<impl>()) {
  impl_->key = new_key();
  impl_->cert = new_cert(impl_->key.get(), name + " test CA", nullptr);
  X509* x = impl_->cert.get();
  add_extension(x, x, NID_basic_constraints, "critical,CA:TRUE");
  add_extension(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(x, x, NID_subject_key_identifier, "hash");
  check(X509_sign(x, impl_->key.get(), EVP_sha256()) > 0, "X509_sign");
  cert_path_ = (dir_ / (name + "-ca.pem")).string();
  write_pem(cert_path_, x, nullptr);
}

test_ca::~test_ca() = default;

cert_files test_ca::issue_server(const std::string& name) const {
  return issue(name, true);
}

cert_files test_ca::issue_client(const std::string& name) const {
  return issue(name, false);
}

cert_files test_ca::issue(const std::string& name, bool server) const {
  key_ptr key = new_key();
  X509* ca = impl_->cert.get();
  cert_ptr cert = new_cert(key.get(), server ? "localhost" : name, ca);
  add_extension(cert.get(), ca, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), ca, NID_key_usage, "critical,digitalSignature");
  add_extension(cert.get(), ca, NID_ext_key_usage, server ? "serverAuth" : "clientAuth");
  add_extension(cert.get(), ca, NID_authority_key_identifier, "keyid");
  if (server) add_extension(cert.get(), ca, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
  check(X509_sign(cert.get(), impl_->key.get(), EVP_sha256()) > 0, "X509_sign");
  cert_files out{(dir_ / (name + ".pem")).string(), (dir_ / (name + ".key")).string()};
  write_pem(out.cert, cert.get(), nullptr);
  write_pem(out.key, nullptr, key.get());
  std::filesystem::permissions(
      out.key, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return out;
}

}  // namespace keel::test
