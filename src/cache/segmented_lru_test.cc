#include "cache/segmented_lru.h"

#include <gtest/gtest.h>

#include <string>

namespace tessera {
namespace {

TEST(SegmentedLruTest, WithoutPromotionItIsAnLruByBytes) {
  SegmentedLru<int> lru;
  EXPECT_EQ(lru.Victim(), nullptr);
  ASSERT_TRUE(lru.Insert("a", 10, 1));
  ASSERT_TRUE(lru.Insert("b", 20, 2));
  ASSERT_TRUE(lru.Insert("c", 30, 3));
  EXPECT_FALSE(lru.Insert("a", 99, 9));  // present: unchanged
  EXPECT_EQ(*lru.Find("a"), 1);
  EXPECT_EQ(lru.bytes(), 60u);
  EXPECT_EQ(*lru.Victim(), "a");
  lru.Touch("a");
  EXPECT_EQ(*lru.Victim(), "b");
  EXPECT_TRUE(lru.Erase("b"));
  EXPECT_FALSE(lru.Erase("b"));
  EXPECT_EQ(*lru.Victim(), "c");
  EXPECT_EQ(lru.bytes(), 40u);
  EXPECT_EQ(lru.size(), 2u);
  EXPECT_EQ(lru.Find("b"), nullptr);
}

TEST(SegmentedLruTest, ProbationIsEvictedBeforeProtected) {
  SegmentedLru<int> lru(/*protected_capacity=*/100);
  lru.Insert("hot", 10, 0);
  lru.Insert("cold1", 10, 0);
  lru.Promote("hot");
  EXPECT_TRUE(lru.IsProtected("hot"));
  lru.Insert("cold2", 10, 0);
  // hot is the oldest entry, but protected.
  EXPECT_EQ(*lru.Victim(), "cold1");
  lru.Erase("cold1");
  EXPECT_EQ(*lru.Victim(), "cold2");
  lru.Erase("cold2");
  EXPECT_EQ(*lru.Victim(), "hot");  // protected is evicted when probation is empty
  EXPECT_EQ(lru.protected_bytes(), 10u);
  lru.Erase("hot");
  EXPECT_EQ(lru.protected_bytes(), 0u);
  EXPECT_EQ(lru.bytes(), 0u);
}

TEST(SegmentedLruTest, ProtectedOverflowDemotesItsLeastRecentlyUsed) {
  SegmentedLru<int> lru(/*protected_capacity=*/25);
  lru.Insert("a", 10, 0);
  lru.Insert("b", 10, 0);
  lru.Insert("c", 10, 0);
  lru.Insert("x", 10, 0);
  lru.Promote("a");
  lru.Promote("b");
  lru.Promote("a");  // a is now protected's MRU
  lru.Promote("c");  // 30 > 25: b, protected's LRU, goes back to probation's MRU
  EXPECT_TRUE(lru.IsProtected("a"));
  EXPECT_FALSE(lru.IsProtected("b"));
  EXPECT_TRUE(lru.IsProtected("c"));
  EXPECT_EQ(lru.protected_bytes(), 20u);
  EXPECT_EQ(*lru.Victim(), "x");
  lru.Erase("x");
  EXPECT_EQ(*lru.Victim(), "b");
}

TEST(SegmentedLruTest, EntryLargerThanProtectedStaysInProbation) {
  SegmentedLru<int> lru(/*protected_capacity=*/5);
  lru.Insert("big", 10, 0);
  lru.Insert("small", 1, 0);
  lru.Promote("big");
  EXPECT_FALSE(lru.IsProtected("big"));
  EXPECT_EQ(*lru.Victim(), "small");  // but it became probation's MRU
}

}  // namespace
}  // namespace tessera
