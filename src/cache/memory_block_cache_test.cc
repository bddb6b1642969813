#include "cache/memory_block_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache_test_util.h"

namespace tessera {
namespace {

using cache_test::BlockFor;

TEST(MemoryBlockCacheTest, HitsMissesAndRanges) {
  MemoryBlockCache cache(1 << 20);
  std::string block = BlockFor("k", 1000);
  cache.Put("k", block);
  std::string out(1000, '?');
  EXPECT_TRUE(cache.Read("k", 0, 1000, out.data()));
  EXPECT_EQ(out, block);
  EXPECT_TRUE(cache.Read("k", 990, 10, out.data()));
  EXPECT_EQ(out.substr(0, 10), block.substr(990));
  EXPECT_TRUE(cache.Read("k", 1000, 0, out.data()));
  EXPECT_FALSE(cache.Read("k", 990, 11, out.data()));
  EXPECT_FALSE(cache.Read("k", 1001, 0, out.data()));
  EXPECT_FALSE(cache.Read("k", UINT64_MAX, 2, out.data()));
  EXPECT_FALSE(cache.Read("absent", 0, 1, out.data()));
  std::string whole;
  EXPECT_TRUE(cache.ReadBlock("k", &whole));
  EXPECT_EQ(whole, block);
  CacheStats s = cache.Stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.bytes, 1000u);
  EXPECT_EQ(s.hits, 4u);
  EXPECT_EQ(s.misses, 4u);

  cache.Remove("k");
  EXPECT_FALSE(cache.Read("k", 0, 1, out.data()));
  EXPECT_EQ(cache.Stats().entries, 0u);
  EXPECT_EQ(cache.Stats().bytes, 0u);
}

TEST(MemoryBlockCacheTest, EvictsLeastRecentlyUsedByBytes) {
  MemoryBlockCache cache(300);
  cache.Put("a", BlockFor("a", 100));
  cache.Put("b", BlockFor("b", 100));
  cache.Put("c", BlockFor("c", 100));
  char c;
  ASSERT_TRUE(cache.Read("a", 0, 1, &c));  // b is now the least recently used
  cache.Put("d", BlockFor("d", 150));      // needs 150: b, then c go
  EXPECT_TRUE(cache.Read("a", 0, 1, &c));
  EXPECT_FALSE(cache.Read("b", 0, 1, &c));
  EXPECT_FALSE(cache.Read("c", 0, 1, &c));
  EXPECT_TRUE(cache.Read("d", 0, 1, &c));
  EXPECT_EQ(cache.Stats().evictions, 2u);
  EXPECT_EQ(cache.Stats().bytes, 250u);
}

TEST(MemoryBlockCacheTest, RefusesBlocksLargerThanCapacity) {
  MemoryBlockCache cache(100);
  cache.Put("small", BlockFor("small", 60));
  cache.Put("big", BlockFor("big", 101));
  char c;
  EXPECT_FALSE(cache.Read("big", 0, 1, &c));
  EXPECT_TRUE(cache.Read("small", 0, 1, &c));  // and nothing was evicted for it
  EXPECT_EQ(cache.Stats().rejected, 1u);
  MemoryBlockCache none(0);
  none.Put("x", "y");
  EXPECT_FALSE(none.Read("x", 0, 1, &c));
}

TEST(MemoryBlockCacheTest, SameKeyKeepsOrReplaces) {
  MemoryBlockCache cache(1000);
  cache.Put("k", "aaaa");
  cache.Put("k", "bbbb");  // same length: immutable block, first copy kept
  std::string out(4, '?');
  ASSERT_TRUE(cache.Read("k", 0, 4, out.data()));
  EXPECT_EQ(out, "aaaa");
  cache.Put("k", "ccccc");  // another length: replaced
  out.assign(5, '?');
  ASSERT_TRUE(cache.Read("k", 0, 5, out.data()));
  EXPECT_EQ(out, "ccccc");
  EXPECT_EQ(cache.Stats().entries, 1u);
  EXPECT_EQ(cache.Stats().bytes, 5u);
}

TEST(MemoryBlockCacheTest, CapacityIsNeverExceeded) {
  const uint64_t capacity = 10000;
  MemoryBlockCache cache(capacity);
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string key = "k" + std::to_string(rng() % 100);
    cache.Put(key, BlockFor(key, rng() % 3000));
    ASSERT_LE(cache.Stats().bytes, capacity);
  }
}

TEST(MemoryBlockCacheTest, ConcurrentPutsAndReadsNeverSeeWrongBytes) {
  MemoryBlockCache cache(64 << 10);
  std::atomic<uint64_t> hits{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::string out;
      for (int i = 0; i < 3000; ++i) {
        std::string key = "k" + std::to_string(rng() % 64);
        size_t size = 1000 + std::hash<std::string>{}(key) % 4000;
        if (rng() % 2 == 0) {
          cache.Put(key, BlockFor(key, size));
        } else {
          uint64_t off = rng() % size, len = rng() % (size - off + 1);
          out.assign(len, '?');
          if (cache.Read(key, off, len, out.data())) {
            ++hits;
            ASSERT_EQ(out, BlockFor(key, size).substr(off, len));
          }
        }
        if (i % 500 == 0) cache.Remove(key);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_GT(hits.load(), 0u);
  EXPECT_LE(cache.Stats().bytes, 64u << 10);
}

}  // namespace
}  // namespace tessera
