#include "cache/tiered_block_cache.h"

#include <gtest/gtest.h>

#include <string>

#include "cache/block_file.h"
#include "cache/cache_test_util.h"
#include "cache/disk_block_cache.h"
#include "cache/memory_block_cache.h"

namespace tessera {
namespace {

using cache_test::BlockFor;
using cache_test::TempDir;

class TieredBlockCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto memory = std::make_unique<MemoryBlockCache>(2 << 20);
    DiskCacheOptions o;
    o.dir = tmp_.path() + "/disk";
    o.capacity_bytes = 64 << 20;
    auto disk = DiskBlockCache::Open(std::move(o));
    ASSERT_TRUE(disk.ok()) << disk.status().ToString();
    memory_ = memory.get();
    disk_ = disk->get();
    cache_ = std::make_unique<TieredBlockCache>(std::move(memory), std::move(disk).value());
  }

  TempDir tmp_;
  MemoryBlockCache* memory_ = nullptr;
  DiskBlockCache* disk_ = nullptr;
  std::unique_ptr<TieredBlockCache> cache_;
};

TEST_F(TieredBlockCacheTest, PutGoesToBothTiersAndRemoveFromBoth) {
  std::string block = BlockFor("k", 100000);
  cache_->Put("k", block);
  disk_->Drain();
  std::string out(100, '?');
  EXPECT_TRUE(memory_->Read("k", 0, 100, out.data()));
  EXPECT_TRUE(disk_->Read("k", 0, 100, out.data()));
  EXPECT_TRUE(cache_->Read("k", 500, 100, out.data()));
  EXPECT_EQ(out, block.substr(500, 100));

  cache_->Remove("k");
  disk_->Drain();
  EXPECT_FALSE(cache_->Read("k", 0, 100, out.data()));
  EXPECT_FALSE(memory_->Read("k", 0, 100, out.data()));
  EXPECT_FALSE(disk_->Read("k", 0, 100, out.data()));
  EXPECT_EQ(cache_->Stats().entries, 0u);
}

TEST_F(TieredBlockCacheTest, SecondDiskHitPromotesTheWholeBlock) {
  std::string block = BlockFor("k", 200000);
  disk_->Put("k", block);  // as after a restart: on disk only
  disk_->Drain();
  std::string out(1000, '?');
  ASSERT_TRUE(cache_->Read("k", 0, 1000, out.data()));
  EXPECT_EQ(memory_->Stats().entries, 0u);  // one disk hit: not yet
  ASSERT_TRUE(cache_->Read("k", 1000, 1000, out.data()));
  EXPECT_EQ(out, block.substr(1000, 1000));
  EXPECT_EQ(memory_->Stats().entries, 1u);
  EXPECT_EQ(memory_->Stats().bytes, block.size());

  uint64_t disk_hits = disk_->Stats().hits;
  ASSERT_TRUE(cache_->Read("k", 150000, 1000, out.data()));
  EXPECT_EQ(out, block.substr(150000, 1000));
  EXPECT_EQ(disk_->Stats().hits, disk_hits);  // served by memory

  CacheStats s = cache_->Stats();
  EXPECT_EQ(s.hits, 3u);
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(s.entries, 2u);  // one per tier
  EXPECT_EQ(s.bytes, block.size() + blockfile::FileSize(block.size()));
}

TEST_F(TieredBlockCacheTest, ReadBlockFromDiskPromotesAtOnce) {
  std::string block = BlockFor("k", 5000);
  disk_->Put("k", block);
  disk_->Drain();
  std::string whole;
  ASSERT_TRUE(cache_->ReadBlock("k", &whole));
  EXPECT_EQ(whole, block);
  EXPECT_EQ(memory_->Stats().entries, 1u);
  EXPECT_FALSE(cache_->ReadBlock("absent", &whole));
  EXPECT_EQ(cache_->Stats().misses, 1u);
}

TEST_F(TieredBlockCacheTest, CorruptDiskCopyIsAMiss) {
  std::string block = BlockFor("k", 5000);
  disk_->Put("k", block);
  disk_->Drain();
  cache_test::FlipByte(disk_->PathFor("k"), blockfile::FileSize(5000) - 1);
  std::string out(10, '?');
  EXPECT_FALSE(cache_->Read("k", 4990, 10, out.data()));
  EXPECT_EQ(cache_->Stats().corrupt_dropped, 1u);
  EXPECT_EQ(cache_->Stats().misses, 1u);
}

TEST(MakeBlockCacheTest, RejectsInconsistentOptions) {
  CacheOptions o;
  o.disk_bytes = 1 << 20;  // without a directory
  EXPECT_TRUE(MakeBlockCache(o).status().Is(StatusCode::kInvalid));
  o = CacheOptions();
  o.disk_dir = "/tmp/x";  // without a size
  EXPECT_TRUE(MakeBlockCache(o).status().Is(StatusCode::kInvalid));
  o = CacheOptions();
  o.free_space_ratio = -0.5;
  Status st = MakeBlockCache(o).status();
  EXPECT_TRUE(st.Is(StatusCode::kInvalid));
  EXPECT_NE(st.message().find("free_space_ratio"), std::string::npos);
}

TEST(MakeBlockCacheTest, BuildsWhatTheOptionsAskFor) {
  TempDir tmp;
  CacheOptions o;
  auto none = MakeBlockCache(o);
  ASSERT_TRUE(none.ok());
  (*none)->Put("k", "v");
  char c;
  EXPECT_FALSE((*none)->Read("k", 0, 1, &c));

  o.memory_bytes = 1 << 20;
  auto memory = MakeBlockCache(o);
  ASSERT_TRUE(memory.ok());
  EXPECT_NE(dynamic_cast<MemoryBlockCache*>(memory->get()), nullptr);

  o.disk_dir = tmp.path() + "/tiered";
  o.disk_bytes = 1 << 20;
  auto tiered = MakeBlockCache(o);
  ASSERT_TRUE(tiered.ok()) << tiered.status().ToString();
  EXPECT_NE(dynamic_cast<TieredBlockCache*>(tiered->get()), nullptr);
  (*tiered)->Put("k", "v");
  EXPECT_TRUE((*tiered)->Read("k", 0, 1, &c));
  EXPECT_EQ(c, 'v');

  o.memory_bytes = 0;
  o.disk_dir = tmp.path() + "/disk";
  auto disk = MakeBlockCache(o);
  ASSERT_TRUE(disk.ok()) << disk.status().ToString();
  EXPECT_NE(dynamic_cast<DiskBlockCache*>(disk->get()), nullptr);

  // The tiered cache above still holds its directory.
  o.disk_dir = tmp.path() + "/tiered";
  EXPECT_TRUE(MakeBlockCache(o).status().Is(StatusCode::kBusy));
}

}  // namespace
}  // namespace tessera
