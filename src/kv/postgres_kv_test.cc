// PostgreSQL engine specifics beyond the conformance suite: URL redaction,
// an unreachable server, recovery from cut connections, and the read cache.
#include "kv/postgres_kv.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "kv/kv.h"
#include "kv/kv_test_util.h"
#include "kv/pg_test_server.h"

namespace tessera {
namespace {

TEST(PostgresKvTest, RedactsPasswords) {
  EXPECT_EQ(RedactPostgresUrl("postgres://user:secret@db.example:5432/meta?sslmode=require"),
            "postgres://user@db.example:5432/meta?sslmode=require");
  EXPECT_EQ(RedactPostgresUrl("postgresql://db.example/meta?password=secret&sslmode=require"),
            "postgresql://db.example/meta?password=&sslmode=require");
  EXPECT_EQ(RedactPostgresUrl("postgres://user@host/db"), "postgres://user@host/db");
  EXPECT_EQ(RedactPostgresUrl("postgres://host:5432/db"), "postgres://host:5432/db");
}

TEST(PostgresKvTest, UnreachableServerIsUnavailable) {
  // Port 1 on the loopback: nothing listens there, the refusal is immediate.
  auto store = OpenKv("postgres://u:secret@127.0.0.1:1/meta?connect_timeout=2&sslmode=disable");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable) << store.status().ToString();
  EXPECT_EQ(store.status().message().find("secret"), std::string::npos);
}

TEST(PostgresKvTest, UrlHasNoPassword) {
  Result<std::string> url = NewPgTestDatabase();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  // The test server trusts local connections, so any password is accepted.
  std::string with_password = *url;
  with_password.replace(with_password.find("tessera@"), 8, "tessera:hunter2@");
  auto store = OpenKv(with_password);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->Url(), *url);
}

TEST(PostgresKvTest, CachedReadsThatWentStaleAreRetriedNotTrusted) {
  Result<std::string> url = NewPgTestDatabase();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto a = OpenKv(*url);
  auto b = OpenKv(*url);
  ASSERT_TRUE(a.ok() && b.ok());
  ExpectStaleCachedReadsRetried(**a, **b);
}

TEST(PostgresKvTest, RecoversFromCutConnections) {
  Result<std::string> url = NewPgTestDatabase();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto opened = OpenKv(*url);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<KvStore> store = std::move(opened).value();
  ASSERT_TRUE(WithTransaction(*store, [](KvTxn& txn) {
                txn.Put("a", "1");
                return Status::Ok();
              }).ok());

  // A transaction whose connection is cut mid-way reports kUnavailable
  // rather than silently continuing on a new snapshot.
  auto txn = store->Begin();
  ASSERT_TRUE(txn.ok());
  ASSERT_EQ(*(*txn)->Get("a"), "1");
  ASSERT_TRUE(TerminatePgTestConnections().ok());
  auto lost = (*txn)->Get("x");  // not read before (reads are remembered)
  EXPECT_EQ(lost.status().code(), StatusCode::kUnavailable) << lost.status().ToString();
  (*txn)->Put("b", "2");
  EXPECT_EQ((*txn)->Commit().code(), StatusCode::kUnavailable);
  txn->reset();

  // Pooled connections cut while idle are replaced transparently.
  ASSERT_TRUE(TerminatePgTestConnections().ok());
  std::optional<std::string> got;
  Status s = WithTransaction(*store, [&](KvTxn& t) -> Status {
    ASSIGN_OR_RETURN(got, t.Get("a"));
    t.Put("c", "3");
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, "1");
  s = WithReadTransaction(*store, [&](KvTxn& t) -> Status {
    ASSIGN_OR_RETURN(got, t.Get("b"));
    EXPECT_EQ(got, std::nullopt);
    ASSIGN_OR_RETURN(got, t.Get("c"));
    return Status::Ok();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, "3");
}

}  // namespace
}  // namespace tessera
