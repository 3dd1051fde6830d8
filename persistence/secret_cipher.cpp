#include "persistence/secret_cipher.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace keel::persistence {

namespace {

constexpr std::size_t nonce_size = 12;
constexpr std::size_t tag_size = 16;

struct ctx_free {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using cipher_ctx = std::unique_ptr<EVP_CIPHER_CTX, ctx_free>;

class fd_closer {
 public:
  explicit fd_closer(int fd) : fd_(fd) {}
  ~fd_closer() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

status io_fail(const std::string& what, const std::string& path) {
  return error(code::io_error, what + " " + path + ": " + std::strerror(errno));
}

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

secret_key::~secret_key() {
  OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

result<secret_key> read_key_file(const std::string& path) {
  // O_NOFOLLOW is not used: a key file may be a link an operator made on
  // purpose; fstat below checks what was opened.
  fd_closer fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT)
      return error(code::not_found, "secret key file " + path + " does not exist");
    return io_fail("cannot open secret key file", path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return io_fail("cannot stat secret key file", path);
  if (!S_ISREG(st.st_mode))
    return error(code::invalid_argument, "secret key file " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0)
    return error(code::invalid_argument,
                 "secret key file " + path +
                     " may be read or written by its group or others (mode " +
                     mode_text(st.st_mode) + "); refusing to use it: run chmod 600 " + path +
                     " (and consider whether the key has leaked)");
  if (st.st_size != static_cast<off_t>(secret_key_size))
    return error(code::invalid_argument, "secret key file " + path + " holds " +
                                             std::to_string(st.st_size) + " bytes, not " +
                                             std::to_string(secret_key_size));
  std::array<unsigned char, secret_key_size> buf{};
  std::size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd.get(), buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      OPENSSL_cleanse(buf.data(), buf.size());
      return n < 0 ? io_fail("cannot read secret key file", path)
                   : error(code::invalid_argument, "secret key file " + path + " is short");
    }
    got += static_cast<std::size_t>(n);
  }
  secret_key key(buf);
  OPENSSL_cleanse(buf.data(), buf.size());
  return key;
}

result<secret_key> create_key_file(const std::string& path) {
  std::array<unsigned char, secret_key_size> buf{};
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1)
    return error(code::io_error, "cannot create secret key file " + path +
                                     ": the random source (OpenSSL RAND_bytes) failed");
  secret_key key(buf);
  OPENSSL_cleanse(buf.data(), buf.size());
  fd_closer fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) {
    if (errno == EEXIST)
      return error(code::already_exists, "secret key file " + path + " already exists");
    return io_fail("cannot create secret key file", path);
  }
  // The umask can only take bits away; fchmod makes it exactly 0600.
  bool ok = ::fchmod(fd.get(), 0600) == 0;
  std::size_t put = 0;
  while (ok && put < secret_key_size) {
    ssize_t n = ::write(fd.get(), key.data() + put, secret_key_size - put);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) put += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd.get()) == 0;
  if (!ok) {
    status s = io_fail("cannot write secret key file", path);
    ::unlink(path.c_str());
    return s;
  }
  // The file's name must be durable too, or a crash could lose the key of
  // values already stored.
  std::string dir = std::filesystem::path(path).parent_path().string();
  fd_closer d(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0 || ::fsync(d.get()) != 0) return io_fail("cannot sync the folder of", path);
  return key;
}

result<std::string> seal_secret(const secret_key& key, std::string_view name,
                                std::string_view value) {
  if (value.size() > INT_MAX / 2 || name.size() > INT_MAX / 2)
    return error(code::invalid_argument, "secret value too large");
  std::string out(1 + nonce_size + value.size() + tag_size, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  p[0] = sealed_format_version;
  unsigned char* nonce = p + 1;
  unsigned char* text = nonce + nonce_size;
  unsigned char* tag = text + value.size();
  if (RAND_bytes(nonce, static_cast<int>(nonce_size)) != 1)
    return error(code::internal, "the random source (OpenSSL RAND_bytes) failed");
  cipher_ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(nonce_size),
                          nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(name), static_cast<int>(name.size())) !=
          1 ||
      EVP_EncryptUpdate(ctx.get(), text, &len, bytes(value), static_cast<int>(value.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), text + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag_size), tag) != 1)
    return error(code::internal, "AES-256-GCM encryption failed (OpenSSL)");
  return out;
}

result<std::string> open_secret(const secret_key& key, std::string_view name,
                                std::string_view sealed) {
  if (sealed.empty() || static_cast<uint8_t>(sealed[0]) != sealed_format_version)
    return error(code::corruption,
                 "secret \"" + std::string(name) + "\": unknown format version " +
                     (sealed.empty() ? std::string("(empty)")
                                     : std::to_string(static_cast<uint8_t>(sealed[0]))));
  if (sealed.size() < 1 + nonce_size + tag_size || sealed.size() > INT_MAX / 2)
    return error(code::corruption, "secret \"" + std::string(name) + "\": sealed value of " +
                                       std::to_string(sealed.size()) + " bytes is malformed");
  const unsigned char* nonce = bytes(sealed) + 1;
  const unsigned char* text = nonce + nonce_size;
  const std::size_t text_size = sealed.size() - 1 - nonce_size - tag_size;
  const unsigned char* tag = text + text_size;
  std::string out(text_size, '\0');
  auto* plain = reinterpret_cast<unsigned char*>(out.data());
  // EVP_CTRL_GCM_SET_TAG takes a non-const pointer; it only reads.
  unsigned char tag_copy[tag_size];
  std::memcpy(tag_copy, tag, tag_size);
  cipher_ctx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(nonce_size),
                          nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(name), static_cast<int>(name.size())) !=
          1 ||
      EVP_DecryptUpdate(ctx.get(), plain, &len, text, static_cast<int>(text_size)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag_size), tag_copy) !=
          1)
    return error(code::internal, "AES-256-GCM decryption failed (OpenSSL)");
  if (EVP_DecryptFinal_ex(ctx.get(), plain + len, &len) != 1) {
    OPENSSL_cleanse(out.data(), out.size());
    return error(code::invalid_argument,
                 "secret \"" + std::string(name) +
                     "\" does not decrypt with this key: the key file is not the one it was "
                     "stored with, or the stored bytes were altered");
  }
  return out;
}

}  // namespace keel::persistence
