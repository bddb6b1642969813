// etcd-specific tests; the shared behaviour is in kv_conformance_test.cc.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "kv/etcd_test_server.h"
#include "kv/kv.h"

namespace tessera {
namespace {

TEST(EtcdKvTest, RejectsMalformedUrls) {
  EXPECT_TRUE(OpenKv("etcd://127.0.0.1:2379").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("etcd://127.0.0.1:2379/").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("etcd:///vol").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("etcd://nohostport/vol").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("etcd://a:1,,b:2/vol").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("etcd://a:1/vol?bogus=1").status().Is(StatusCode::kInvalid));
  EXPECT_TRUE(OpenKv("etcd://a:1,b:2/vol?timeout_ms=10").ok());
}

TEST(EtcdKvTest, PrefixesAreSeparate) {
  auto a_url = NewEtcdTestUrl();
  ASSERT_TRUE(a_url.ok()) << a_url.status().ToString();
  auto b_url = NewEtcdTestUrl();
  ASSERT_TRUE(b_url.ok());
  auto a = OpenKv(*a_url);
  auto b = OpenKv(*b_url);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(WithTransaction(**a, [](KvTxn& t) {
                t.Put("k", "in a");
                return Status::Ok();
              }).ok());
  ASSERT_TRUE(WithTransaction(**b, [](KvTxn& t) -> Status {
                ASSIGN_OR_RETURN(ScanResult r, t.Scan("", "", 0));
                EXPECT_TRUE(r.items.empty());
                return Status::Ok();
              }).ok());
}

TEST(EtcdKvTest, UnreachableEndpointsFailWithinTheTimeout) {
  // Port 1 on loopback: connection refused at once, every time.
  auto store = OpenKv("etcd://127.0.0.1:1,127.0.0.1:1/vol?timeout_ms=300");
  ASSERT_TRUE(store.ok());
  auto start = std::chrono::steady_clock::now();
  auto txn = (*store)->Begin();
  ASSERT_TRUE(txn.ok());
  auto got = (*txn)->Get("k");
  EXPECT_TRUE(got.status().Is(StatusCode::kUnavailable)) << got.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// A transaction that scanned more keys than one etcd txn can compare still
// sees a delete in its range as a conflict; with few keys, a delete elsewhere
// is not one.
TEST(EtcdKvTest, DeletesAfterAScanConflict) {
  auto url = NewEtcdTestUrl();
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  auto store = OpenKv(*url);
  ASSERT_TRUE(store.ok());
  KvStore& kv = **store;
  ASSERT_TRUE(WithTransaction(kv, [](KvTxn& t) {
                for (int i = 0; i < 200; ++i) t.Put("big/" + std::to_string(1000 + i), "v");
                for (int i = 0; i < 3; ++i) t.Put("small/" + std::to_string(i), "v");
                t.Put("other", "v");
                return Status::Ok();
              }).ok());
  auto remove = [&kv](const std::string& key) {
    ASSERT_TRUE(WithTransaction(kv, [&](KvTxn& t) {
                  t.Delete(key);
                  return Status::Ok();
                }).ok());
  };
  auto scan_then_write = [&kv](const std::string& begin, const std::string& end) {
    auto txn = kv.Begin();
    EXPECT_TRUE(txn.ok());
    auto r = (*txn)->Scan(begin, end, 0);
    EXPECT_TRUE(r.ok());
    (*txn)->Put("written", "x");
    return txn.ok() ? std::move(txn).value() : nullptr;
  };

  auto big = scan_then_write("big/", "big0");
  remove("big/1100");
  EXPECT_TRUE(big->Commit().Is(StatusCode::kConflict));

  auto small = scan_then_write("small/", "small0");
  remove("other");
  EXPECT_TRUE(small->Commit().ok());

  small = scan_then_write("small/", "small0");
  remove("small/1");
  EXPECT_TRUE(small->Commit().Is(StatusCode::kConflict));
}

// A client given all three members keeps working when one of them dies.
TEST(EtcdKvTest, ThreeMemberClusterSurvivesAMemberLoss) {
  EtcdTestCluster cluster;
  Status started = cluster.Start(3);
  ASSERT_TRUE(started.ok()) << started.ToString();
  auto store = OpenKv("etcd://" + cluster.Endpoints() + "/vol");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  KvStore& kv = **store;

  // Increments a counter: a read-modify-write that conflicts if lost.
  auto increment = [&kv]() {
    return WithTransaction(kv, [](KvTxn& t) -> Status {
      ASSIGN_OR_RETURN(std::optional<std::string> v, t.Get("counter"));
      int n = v ? std::stoi(*v) : 0;
      t.Put("counter", std::to_string(n + 1));
      t.Put("item/" + std::to_string(n), "x");
      return Status::Ok();
    });
  };
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(increment().ok());
  // The first endpoint is the one the client prefers: stopping it forces a
  // fail-over, and it may also be the leader.
  cluster.StopMember(0);
  for (int i = 0; i < 5; ++i) {
    Status s = increment();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  Status s = WithReadTransaction(kv, [](KvTxn& t) -> Status {
    ASSIGN_OR_RETURN(std::optional<std::string> v, t.Get("counter"));
    EXPECT_EQ(v, "10");
    ASSIGN_OR_RETURN(ScanResult r, t.Scan("item/", "item0", 0));
    EXPECT_EQ(r.items.size(), 10u);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace tessera
