#pragma once
// Certificates made at test time through OpenSSL's API: a throwaway CA
// that issues server certificates (for 127.0.0.1 and localhost) and client
// certificates, written as PEM files into a directory the test owns. No key
// is committed and none outlives the test's temp dir. EC P-256 keys,
// SHA-256 signatures, valid from an hour ago for two days.
//
// Errors: std::runtime_error naming the OpenSSL call that failed.

#include <filesystem>
#include <memory>
#include <string>

#include "support/temp_dir.hpp"

namespace keel::test {

struct cert_files {
  std::string cert;  // path of the PEM certificate
  std::string key;   // path of its PEM private key (not encrypted)
};

class test_ca {
 public:
  // A self-signed CA with common name `name`; its certificate is written to
  // dir/NAME-ca.pem. REQUIRES: `dir` exists.
  test_ca(std::filesystem::path dir, std::string name);
  ~test_ca();
  test_ca(const test_ca&) = delete;
  test_ca& operator=(const test_ca&) = delete;

  // Path of the CA's certificate: what a peer trusts.
  const std::string& cert() const { return cert_path_; }

  // A server certificate for IP 127.0.0.1 and DNS localhost (serverAuth),
  // written to dir/NAME.pem and dir/NAME.key.
  cert_files issue_server(const std::string& name) const;
  // A client certificate with common name `name` (clientAuth), written to
  // dir/NAME.pem and dir/NAME.key.
  cert_files issue_client(const std::string& name) const;

  struct impl;

 private:
  cert_files issue(const std::string& name, bool server) const;

  std::filesystem::path dir_;
  std::string cert_path_;
  std::unique_ptr<impl> impl_;
};

// What a TLS test usually needs: a temp dir holding a CA, a server
// certificate for 127.0.0.1 and a client certificate, both from that CA.
struct test_pki {
  temp_dir dir{"keel-tls"};
  test_ca ca{dir.path(), "keel"};
  cert_files server = ca.issue_server("server");
  cert_files client = ca.issue_client("client");
};

}  // namespace keel::test
