// Helpers shared by the kv tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <optional>
#include <string>

#include "common/coding.h"
#include "kv/kv.h"

namespace tessera {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* tmp = getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/tessera-kv-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// For engines whose transactions that may write read a per-store cache of
// values (Redis, PostgreSQL): `a` and `b` are two stores of one database,
// as two mounts would hold them. A value `a` cached that `b` changed since
// costs `a` a retry, never a wrong result; read-only transactions always
// see the newest value; counters changed by additions are never trusted
// stale.
inline void ExpectStaleCachedReadsRetried(KvStore& a, KvStore& b) {
  auto put = [](KvStore& store, const std::string& key, const std::string& value) {
    return WithTransaction(store, [&](KvTxn& txn) {
      txn.Put(key, value);
      return Status::Ok();
    });
  };
  ASSERT_TRUE(put(a, "x", "a1").ok());  // a now knows x = a1
  int attempts = 0;
  auto append = [&](KvTxn& txn) -> Status {
    ++attempts;
    ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("x"));
    txn.Put("x", (v ? *v : std::string()) + "+a");
    return Status::Ok();
  };
  ASSERT_TRUE(WithTransaction(a, append).ok());
  EXPECT_EQ(attempts, 1);  // the cached value was current
  ASSERT_TRUE(put(b, "x", "b1").ok());
  attempts = 0;
  ASSERT_TRUE(WithTransaction(a, append).ok());
  EXPECT_EQ(attempts, 2);  // a1+a from the cache conflicted; then b1
  auto check = b.Begin();
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(*(*check)->Get("x"), "b1+a");

  // A body that fails on a stale cached read runs again instead of
  // reporting the failure.
  ASSERT_TRUE(WithTransaction(a, [](KvTxn& txn) -> Status {
                ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("y"));
                if (!v) txn.Put("seen-without-y", "1");
                return Status::Ok();
              }).ok());  // a now knows y is absent
  ASSERT_TRUE(put(b, "y", "there").ok());
  attempts = 0;
  Status s = WithTransaction(a, [&](KvTxn& txn) -> Status {
    ++attempts;
    ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("y"));
    if (!v) return NotFound("no y");
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(attempts, 2);

  // A counter read by `a`, then added to by `b`: `a` reads the sum.
  auto add = [](KvStore& store, int64_t delta) {
    return WithTransaction(store, [&](KvTxn& txn) {
      txn.Increment("c", delta);
      return Status::Ok();
    });
  };
  auto read_counter = [](KvStore& store, std::string* out) {
    return WithTransaction(store, [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("c"));
      *out = v.value_or("");
      txn.Put("c-seen", *out);
      return Status::Ok();
    });
  };
  ASSERT_TRUE(add(a, 1).ok());
  std::string seen;
  ASSERT_TRUE(read_counter(a, &seen).ok());
  std::string one, six;
  PutBig64(&one, 1);
  PutBig64(&six, 6);
  EXPECT_EQ(seen, one);
  ASSERT_TRUE(add(b, 5).ok());
  ASSERT_TRUE(read_counter(a, &seen).ok());
  EXPECT_EQ(seen, six);

  // Read-only transactions always ask the server.
  ASSERT_TRUE(put(b, "x", "b2").ok());
  Status r = WithReadTransaction(a, [](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("x"));
    if (v && *v == "b2") return Status::Ok();
    return Internal("a read-only transaction did not see the newest value");
  });
  EXPECT_TRUE(r.ok()) << r.ToString();
}

}  // namespace tessera
