// Redis engine specifics the conformance suite does not cover: URL handling,
// the eviction-policy check, reconnecting after a dropped connection, and
// snapshots rebuilt across another client's commits.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "kv/kv.h"
#include "kv/kv_test_util.h"
#include "kv/redis_test_server.h"

namespace tessera {
namespace {

std::unique_ptr<KvStore> Open(const std::string& url) {
  auto store = OpenKv(url);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

Status PutOne(KvStore& store, const std::string& key, const std::string& value) {
  return WithTransaction(store, [&](KvTxn& txn) {
    txn.Put(key, value);
    return Status::Ok();
  });
}

TEST(RedisKvTest, RejectsBadUrls) {
  EXPECT_TRUE(OpenKv("redis://127.0.0.1:notaport/0").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("redis://127.0.0.1:6379/x").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("redis://:6379/0").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("redis://127.0.0.1:6379/0?cacert=/x").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("redis://127.0.0.1:6379/0?color=red").status().Is(StatusCode::kInvalid));
}

// rediss://: the whole conformance suite runs on TLS too (kv_conformance_test);
// here the certificate checks.
TEST(RedisKvTest, TlsVerifiesTheServerCertificate) {
  auto url = NewRedisTlsTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = Open(*url);
  ASSERT_TRUE(store);
  ASSERT_TRUE(PutOne(*store, "k", "over tls").ok());
  auto txn = store->Begin();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(*(*txn)->Get("k"), "over tls");
  // Without the CA that signed it, the certificate is rejected.
  std::string untrusted = url->substr(0, url->find("&cacert="));
  Status s = OpenKv(untrusted).status();
  EXPECT_TRUE(s.Is(StatusCode::kUnavailable)) << s.ToString();
  EXPECT_NE(s.message().find("certificate"), std::string::npos) << s.ToString();
  // A plain client on the TLS port gets nowhere, and says so.
  std::string plain = "redis" + url->substr(6, url->find('?') - 6);
  EXPECT_FALSE(OpenKv(plain).ok());
}

// A server busy with a long script (or loading its data after a restart)
// answers with an error reply; that is a passing condition, retried within
// the store's window, not a failure.
TEST(RedisKvTest, BusyServerIsRetriedNotAnError) {
  auto url = NewRedisTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = Open(*url);
  ASSERT_TRUE(store);
  ASSERT_TRUE(PutOne(*store, "k", "v").ok());
  ASSERT_TRUE(RedisTestCommand({"CONFIG", "SET", "busy-reply-threshold", "100"}).ok());
  std::thread busy([] {
    // Spins for 1.5 s on the server's clock.
    (void)RedisTestCommand({"EVAL",
                            "local t0 = redis.call('TIME') "
                            "while true do local t = redis.call('TIME') "
                            "if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1500000 then break end end "
                            "return 1",
                            "0"});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  store->set_unavailable_retry_ms(10'000);
  Status s = PutOne(*store, "k", "after the script");
  busy.join();
  EXPECT_TRUE(s.ok()) << s.ToString();
  auto txn = store->Begin();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(*(*txn)->Get("k"), "after the script");
}

// Two stores on one server stand for two mounts, each with its own cache of
// what it read and wrote.
TEST(RedisKvTest, CachedReadsThatWentStaleAreRetriedNotTrusted) {
  auto url = NewRedisTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto a = Open(*url);
  auto b = Open(*url);
  ASSERT_TRUE(a && b);
  ExpectStaleCachedReadsRetried(*a, *b);
}

TEST(RedisKvTest, UnreachableServerIsUnavailable) {
  // Port 1 on loopback: nothing listens there, the connect is refused.
  EXPECT_TRUE(OpenKv("redis://127.0.0.1:1/0").status().Is(StatusCode::kUnavailable));
}

TEST(RedisKvTest, UrlHidesPassword) {
  auto url = NewRedisTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  // The test server has no password; AUTH fails, and the error must not
  // show the password either.
  std::string with_pass = "redis://bob:s3cret@" + url->substr(8);
  Status s = OpenKv(with_pass).status();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message().find("s3cret"), std::string::npos) << s.ToString();
}

TEST(RedisKvTest, RefusesEvictingMaxmemoryPolicy) {
  auto url = NewRedisTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  ASSERT_TRUE(RedisTestCommand({"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"}).ok());
  Status s = OpenKv(*url).status();
  ASSERT_TRUE(RedisTestCommand({"CONFIG", "SET", "maxmemory-policy", "noeviction"}).ok());
  EXPECT_TRUE(s.Is(StatusCode::kInvalid)) << s.ToString();
  EXPECT_NE(s.message().find("maxmemory-policy allkeys-lru"), std::string::npos) << s.ToString();
  ASSERT_TRUE(RedisTestCommand({"CONFIG", "SET", "maxmemory-policy", "volatile-lru"}).ok());
  EXPECT_TRUE(OpenKv(*url).ok());
  ASSERT_TRUE(RedisTestCommand({"CONFIG", "SET", "maxmemory-policy", "noeviction"}).ok());
}

TEST(RedisKvTest, ReconnectsAfterTheServerDropsConnections) {
  auto url = NewRedisTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = Open(*url);
  ASSERT_TRUE(store);
  ASSERT_TRUE(PutOne(*store, "k", "v").ok());
  // Drops every client connection, including the idle pooled one.
  ASSERT_TRUE(RedisTestCommand({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}).ok());
  auto txn = store->Begin();
  ASSERT_TRUE(txn.ok());
  auto v = (*txn)->Get("k");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "v");
}

TEST(RedisKvTest, SnapshotSurvivesOtherClientsAndPrefixesAreSeparate) {
  auto url = NewRedisTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto a = Open(*url);
  auto b = Open(*url);  // another client of the same namespace
  auto other = NewRedisTestUrl();
  ASSERT_TRUE(other.ok());
  auto c = Open(*other);
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(PutOne(*a, "d/1", "one").ok());
  ASSERT_TRUE(PutOne(*a, "d/3", "three").ok());
  auto txn = a->Begin();
  ASSERT_TRUE(txn.ok());
  ASSERT_EQ(*(*txn)->Get("d/1"), "one");
  // Several commits by the other client: insert, delete, overwrite.
  ASSERT_TRUE(PutOne(*b, "d/2", "two").ok());
  ASSERT_TRUE(WithTransaction(*b, [](KvTxn& t) {
                t.Delete("d/3");
                t.Put("d/1", "uno");
                return Status::Ok();
              }).ok());
  auto scan = (*txn)->Scan("d/", "d0", 1);
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  ASSERT_EQ(scan->items.size(), 1u);
  EXPECT_EQ(scan->items[0], (KeyValue{"d/1", "one"}));
  EXPECT_TRUE(scan->more);
  scan = (*txn)->Scan("d/", "d0", 0);
  ASSERT_TRUE(scan.ok());
  ASSERT_EQ(scan->items.size(), 2u);
  EXPECT_EQ(scan->items[1], (KeyValue{"d/3", "three"}));
  (*txn)->Put("x", "y");
  EXPECT_TRUE((*txn)->Commit().Is(StatusCode::kConflict));
  // The other namespace saw none of it.
  auto ctxn = c->Begin();
  ASSERT_TRUE(ctxn.ok());
  auto all = (*ctxn)->Scan("", "", 0);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->items.empty());
}

}  // namespace
}  // namespace tessera
