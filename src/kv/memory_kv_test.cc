// Memory-engine specifics: named sharing, and per-key (not per-store)
// conflict detection, which the conformance suite does not require.
#include <gtest/gtest.h>

#include <string>

#include "kv/kv.h"

namespace tessera {
namespace {

std::unique_ptr<KvStore> Open(const std::string& url) {
  auto store = OpenKv(url);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

void Put(KvStore& store, const std::string& key, const std::string& value) {
  ASSERT_TRUE(WithTransaction(store, [&](KvTxn& txn) {
                txn.Put(key, value);
                return Status::Ok();
              }).ok());
}

std::optional<std::string> Get(KvStore& store, const std::string& key) {
  auto txn = store.Begin();
  EXPECT_TRUE(txn.ok());
  auto v = (*txn)->Get(key);
  EXPECT_TRUE(v.ok());
  return *v;
}

TEST(MemoryKvTest, NamedStoresAreSharedAndUnnamedArePrivate) {
  auto a1 = Open("mem://memory_kv_test_a");
  auto a2 = Open("mem://memory_kv_test_a");
  auto b = Open("mem://memory_kv_test_b");
  auto fresh1 = Open("mem://");
  auto fresh2 = Open("mem://");
  Put(*a1, "k", "a");
  Put(*fresh1, "k", "fresh");
  EXPECT_EQ(Get(*a2, "k"), "a");
  EXPECT_EQ(Get(*b, "k"), std::nullopt);
  EXPECT_EQ(Get(*fresh2, "k"), std::nullopt);
  a1.reset();
  a2.reset();
  EXPECT_EQ(Get(*Open("mem://memory_kv_test_a"), "k"), "a");  // lives on
}

TEST(MemoryKvTest, DisjointTransactionsDoNotConflict) {
  auto store = Open("mem://");
  Put(*store, "a", "0");
  Put(*store, "b", "0");
  auto t1 = std::move(store->Begin()).value();
  auto t2 = std::move(store->Begin()).value();
  ASSERT_TRUE(t1->Get("a").ok());
  ASSERT_TRUE(t2->Get("b").ok());
  t1->Put("a", "1");
  t2->Put("b", "1");
  EXPECT_TRUE(t1->Commit().ok());
  EXPECT_TRUE(t2->Commit().ok());
}

TEST(MemoryKvTest, LimitedScanConflictsOnlyUpToWhereItStopped) {
  auto store = Open("mem://");
  Put(*store, "k1", "v");
  Put(*store, "k5", "v");
  auto t1 = std::move(store->Begin()).value();
  auto r = t1->Scan("k", "l", 1);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->items.size(), 1u);
  ASSERT_TRUE(r->more);
  Put(*store, "k7", "v");  // past k1: does not change what t1 saw
  t1->Put("x", "1");
  EXPECT_TRUE(t1->Commit().ok());

  auto t2 = std::move(store->Begin()).value();
  ASSERT_TRUE(t2->Scan("k", "l", 1).ok());
  Put(*store, "k0", "v");  // before k1: would have been returned
  t2->Put("y", "1");
  EXPECT_EQ(t2->Commit().code(), StatusCode::kConflict);
}

// Old versions are dropped as snapshots close, but an open snapshot keeps
// seeing its own; a key deleted and re-created is still a conflict.
TEST(MemoryKvTest, OldSnapshotSurvivesManyRewrites) {
  auto store = Open("mem://");
  Put(*store, "k", "0");
  auto old = std::move(store->Begin()).value();
  ASSERT_EQ(*old->Get("k"), "0");
  for (int i = 1; i <= 100; ++i) {
    if (i % 10 == 0) {
      ASSERT_TRUE(WithTransaction(*store, [](KvTxn& txn) {
                    txn.Delete("k");
                    return Status::Ok();
                  }).ok());
    } else {
      Put(*store, "k", std::to_string(i));
    }
  }
  EXPECT_EQ(*old->Get("k"), "0");
  EXPECT_EQ(Get(*store, "k"), std::nullopt);  // deleted at i == 100
  old->Put("k2", "x");
  EXPECT_EQ(old->Commit().code(), StatusCode::kConflict);
  Put(*store, "k", "again");
  EXPECT_EQ(Get(*store, "k"), "again");
}

}  // namespace
}  // namespace tessera
