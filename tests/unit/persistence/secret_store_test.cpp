// persistence/secret_cipher.hpp and persistence/secret_store.hpp: values
// sealed with AES-256-GCM under a key file, kept in the meta family.

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "persistence/secret_cipher.hpp"
#include "persistence/secret_store.hpp"
#include "persistence/store.hpp"
#include "support/file_scan.hpp"
#include "support/temp_dir.hpp"

using keel::code;
namespace p = keel::persistence;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

p::secret_key new_key(const keel::test::temp_dir& dir, const std::string& file = "k") {
  auto k = p::create_key_file((dir.path() / file).string());
  REQUIRE_MESSAGE(k.is_ok(), k.error().to_string());
  return *k;
}

std::unique_ptr<p::store> open_store(const fs::path& dir) {
  auto r = p::store::open({dir.string(), 8 << 20, true});
  REQUIRE_MESSAGE(r.is_ok(), r.error().to_string());
  return std::move(r).value();
}

}  // namespace

TEST_CASE("a sealed value opens only with its key and under its name") {
  keel::test::temp_dir dir("keel-secrets");
  const p::secret_key key = new_key(dir);
  const p::secret_key other = new_key(dir, "other");
  auto sealed = p::seal_secret(key, "crm", "s3cret-value");
  REQUIRE(sealed.is_ok());
  CHECK(static_cast<uint8_t>((*sealed)[0]) == p::sealed_format_version);
  CHECK(sealed->size() == 1 + 12 + std::string("s3cret-value").size() + 16);
  CHECK_FALSE(contains(*sealed, "s3cret-value"));

  auto opened = p::open_secret(key, "crm", *sealed);
  REQUIRE(opened.is_ok());
  CHECK(*opened == "s3cret-value");

  // A fresh nonce each time: the same value never seals to the same bytes.
  auto again = p::seal_secret(key, "crm", "s3cret-value");
  REQUIRE(again.is_ok());
  CHECK(*again != *sealed);

  SUBCASE("another name (the associated data)") {
    auto r = p::open_secret(key, "erp", *sealed);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
  }
  SUBCASE("another key") {
    auto r = p::open_secret(other, "crm", *sealed);
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "does not decrypt with this key"));
  }
  SUBCASE("an altered byte") {
    std::string bad = *sealed;
    bad[15] = static_cast<char>(bad[15] ^ 1);
    CHECK_FALSE(p::open_secret(key, "crm", bad).is_ok());
  }
  SUBCASE("an unknown format version") {
    std::string bad = *sealed;
    bad[0] = 9;
    auto r = p::open_secret(key, "crm", bad);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::corruption);
  }
}

TEST_CASE("a key file is created with mode 0600 and 32 bytes, and read back") {
  keel::test::temp_dir dir("keel-secrets");
  const std::string path = (dir.path() / "secret.key").string();
  auto made = p::create_key_file(path);
  REQUIRE(made.is_ok());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_size == 32);
  CHECK(p::create_key_file(path).error().error_code() == code::already_exists);

  auto read = p::read_key_file(path);
  REQUIRE(read.is_ok());
  auto sealed = p::seal_secret(*made, "crm", "value-1");
  REQUIRE(sealed.is_ok());
  CHECK(p::open_secret(*read, "crm", *sealed).is_ok());
}

TEST_CASE("a key file its group or others may read is refused") {
  keel::test::temp_dir dir("keel-secrets");
  const std::string path = (dir.path() / "secret.key").string();
  REQUIRE(p::create_key_file(path).is_ok());
  for (mode_t mode : {0640, 0604, 0620}) {
    CAPTURE(mode);
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    auto r = p::read_key_file(path);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::invalid_argument);
    CHECK(contains(r.error().message(), "group or others"));
    CHECK(contains(r.error().message(), "chmod 600 " + path));
  }
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  CHECK(p::read_key_file(path).is_ok());
}

TEST_CASE("stored secrets come back after a reopen and are on disk only sealed") {
  keel::test::temp_dir dir("keel-secrets");
  const fs::path data = dir.path() / "data";
  const std::string key_file = (dir.path() / "secret.key").string();
  const std::string value = "crm-token-5f2c9a0e7d";
  {
    auto db = open_store(data);
    std::vector<p::stored_secret> loaded;
    auto s = p::secret_store::open(*db, key_file, loaded);
    REQUIRE_MESSAGE(s.is_ok(), s.error().to_string());
    CHECK(loaded.empty());
    CHECK_FALSE(fs::exists(key_file));  // created on first need
    REQUIRE((*s)->put("crm", value, 1234).is_ok());
    REQUIRE((*s)->put("erp", "erp-token-0000", 1235).is_ok());
    REQUIRE((*s)->erase("erp").is_ok());
    CHECK(fs::exists(key_file));
    // Into a table file, out of the memtable and the log.
    REQUIRE(db->compact(p::family::meta).is_ok());
  }
  CHECK_FALSE(keel::test::any_file_holds(data, value));
  CHECK_FALSE(keel::test::any_file_holds(data, "erp-token-0000"));

  auto db = open_store(data);
  std::vector<p::stored_secret> loaded;
  auto s = p::secret_store::open(*db, key_file, loaded);
  REQUIRE_MESSAGE(s.is_ok(), s.error().to_string());
  REQUIRE(loaded.size() == 1);
  CHECK(loaded[0].name == "crm");
  CHECK(loaded[0].value == value);
  CHECK(loaded[0].updated_ms == 1234);
}

TEST_CASE("a store holding secrets refuses a missing or wrong key file until they are forgotten") {
  keel::test::temp_dir dir("keel-secrets");
  const fs::path data = dir.path() / "data";
  const std::string key_file = (dir.path() / "secret.key").string();
  auto db = open_store(data);
  {
    std::vector<p::stored_secret> loaded;
    auto s = p::secret_store::open(*db, key_file, loaded);
    REQUIRE(s.is_ok());
    REQUIRE((*s)->put("crm", "crm-token-1", 1).is_ok());
  }
  std::vector<p::stored_secret> loaded;

  SUBCASE("missing") {
    fs::remove(key_file);
    auto r = p::secret_store::open(*db, key_file, loaded);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.error().error_code() == code::not_found);
    CHECK(contains(r.error().message(), "holds 1 secrets, but their key file " + key_file));
    CHECK(contains(r.error().message(), "--forget-secrets"));
  }
  SUBCASE("another key") {
    fs::remove(key_file);
    REQUIRE(p::create_key_file(key_file).is_ok());
    auto r = p::secret_store::open(*db, key_file, loaded);
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "secret \"crm\" does not decrypt with this key"));
  }
  SUBCASE("readable by others") {
    REQUIRE(::chmod(key_file.c_str(), 0644) == 0);
    auto r = p::secret_store::open(*db, key_file, loaded);
    REQUIRE_FALSE(r.is_ok());
    CHECK(contains(r.error().message(), "refusing to use it"));
  }
  auto forgot = p::forget_secrets(*db);
  REQUIRE(forgot.is_ok());
  CHECK(*forgot == 1);
  // With nothing stored, any usable key file (or none) opens.
  if (fs::exists(key_file)) REQUIRE(::chmod(key_file.c_str(), 0600) == 0);
  auto r = p::secret_store::open(*db, key_file, loaded);
  CHECK_MESSAGE(r.is_ok(), r.error().to_string());
  CHECK(loaded.empty());
}
