#include "cache/disk_block_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/block_file.h"
#include "cache/cache_test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using cache_test::BlockFor;
using cache_test::FileBytesUnder;
using cache_test::FlipByte;
using cache_test::ReadWholeFile;
using cache_test::TempDir;
using cache_test::WriteWholeFile;

constexpr uint64_t kBlock = 32768;
const uint64_t kFile = blockfile::FileSize(kBlock);  // what one kBlock block costs
constexpr int64_t kSecond = 1'000'000'000;

class DiskBlockCacheTest : public ::testing::Test {
 protected:
  // A cache whose clock and free space the test controls; free space is
  // measured before every write.
  DiskCacheOptions Options(uint64_t capacity) {
    DiskCacheOptions o;
    o.dir = tmp_.path() + "/cache";
    o.capacity_bytes = capacity;
    o.free_space_ratio = 0.1;
    o.space_check_interval_ns = 0;
    o.probe_space = [this](const std::string&) -> Result<FsSpace> {
      return FsSpace{total_.load(), free_.load()};
    };
    o.now_ns = [this] { return clock_.load(); };
    return o;
  }

  std::unique_ptr<DiskBlockCache> Open(DiskCacheOptions o) {
    auto cache = DiskBlockCache::Open(std::move(o));
    EXPECT_TRUE(cache.ok()) << cache.status().ToString();
    return cache.ok() ? std::move(cache).value() : nullptr;
  }

  // Puts a block of `size` bytes made from its key and waits until it is
  // on disk.
  static void PutNow(DiskBlockCache& cache, const std::string& key, size_t size = kBlock) {
    cache.Put(key, BlockFor(key, size));
    cache.Drain();
  }

  static bool Has(DiskBlockCache& cache, const std::string& key, size_t size = kBlock) {
    std::string out(size, '?');
    return cache.Read(key, 0, size, out.data()) && out == BlockFor(key, size);
  }

  TempDir tmp_;
  std::atomic<uint64_t> total_{1ull << 40};
  std::atomic<uint64_t> free_{1ull << 39};
  std::atomic<int64_t> clock_{1000 * kSecond};
};

TEST_F(DiskBlockCacheTest, HitsMissesAndRanges) {
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  std::string block = BlockFor("vol/chunks/0/0/1_0_100000", 100000);
  cache->Put("vol/chunks/0/0/1_0_100000", block);
  std::string out(100000, '?');
  // Served from the write queue or from the file, whichever it is in.
  EXPECT_TRUE(cache->Read("vol/chunks/0/0/1_0_100000", 0, 100000, out.data()));
  EXPECT_EQ(out, block);
  cache->Drain();
  EXPECT_TRUE(fs::exists(cache->PathFor("vol/chunks/0/0/1_0_100000")));

  struct Range {
    uint64_t off, len;
    bool hit;
  } ranges[] = {{0, 100000, true}, {5, 10, true},       {32760, 20, true},  {99990, 10, true},
                {100000, 0, true}, {99990, 11, false}, {100001, 0, false}, {UINT64_MAX, 2, false}};
  for (const Range& r : ranges) {
    out.assign(r.len, '?');
    EXPECT_EQ(cache->Read("vol/chunks/0/0/1_0_100000", r.off, r.len, out.data()), r.hit)
        << r.off << "+" << r.len;
    if (r.hit) {
      EXPECT_EQ(out, block.substr(r.off, r.len));
    }
  }
  EXPECT_FALSE(cache->Read("absent", 0, 1, out.data()));
  std::string whole;
  EXPECT_TRUE(cache->ReadBlock("vol/chunks/0/0/1_0_100000", &whole));
  EXPECT_EQ(whole, block);
  EXPECT_FALSE(cache->ReadBlock("absent", &whole));

  CacheStats s = cache->Stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.bytes, blockfile::FileSize(100000));
  EXPECT_EQ(s.hits, 7u);
  EXPECT_EQ(s.misses, 5u);
  EXPECT_EQ(s.corrupt_dropped, 0u);
}

TEST_F(DiskBlockCacheTest, EvictsLeastRecentlyUsedByBytes) {
  auto cache = Open(Options(3 * kFile));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "a");
  PutNow(*cache, "b");
  PutNow(*cache, "c");
  EXPECT_TRUE(Has(*cache, "a"));  // b is now the least recently used
  PutNow(*cache, "d");
  EXPECT_FALSE(fs::exists(cache->PathFor("b")));
  EXPECT_FALSE(Has(*cache, "b"));
  EXPECT_TRUE(Has(*cache, "a"));
  EXPECT_TRUE(Has(*cache, "c"));
  EXPECT_TRUE(Has(*cache, "d"));
  EXPECT_EQ(cache->Stats().evictions, 1u);
  EXPECT_EQ(cache->Stats().bytes, 3 * kFile);
}

TEST_F(DiskBlockCacheTest, CapacityIsNeverExceeded) {
  const uint64_t capacity = 10 * kFile;
  auto cache = Open(Options(capacity));
  ASSERT_NE(cache, nullptr);
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    std::string key = "k" + std::to_string(rng() % 40);
    size_t size = 1 + std::hash<std::string>{}(key) % (3 * kBlock);
    cache->Put(key, BlockFor(key, size));
    if (i % 3 == 0) Has(*cache, "k" + std::to_string(rng() % 40), size);  // some promotions
    clock_ += kSecond / 2;
    cache->Drain();
    ASSERT_LE(cache->Stats().bytes, capacity);
    ASSERT_LE(FileBytesUnder(cache->dir()), capacity);
  }
  EXPECT_GT(cache->Stats().evictions, 0u);
  EXPECT_EQ(FileBytesUnder(cache->dir()), cache->Stats().bytes);
}

TEST_F(DiskBlockCacheTest, BlockLargerThanCapacityIsRefused) {
  auto cache = Open(Options(kFile));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "fits");
  PutNow(*cache, "big", kBlock + 1);
  EXPECT_TRUE(Has(*cache, "fits"));
  EXPECT_FALSE(Has(*cache, "big", kBlock + 1));
  EXPECT_EQ(cache->Stats().rejected, 1u);
  EXPECT_EQ(cache->Stats().evictions, 0u);
}

TEST_F(DiskBlockCacheTest, SurvivesReopen) {
  const uint64_t bytes_before = [&] {
    auto cache = Open(Options(1 << 20));
    for (int i = 0; i < 5; ++i) PutNow(*cache, "vol/k" + std::to_string(i), 1000 * (i + 1));
    return cache->Stats().bytes;
  }();
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->Stats().entries, 5u);
  EXPECT_EQ(cache->Stats().bytes, bytes_before);
  for (int i = 0; i < 5; ++i) {
    std::string key = "vol/k" + std::to_string(i);
    EXPECT_TRUE(Has(*cache, key, 1000 * (i + 1))) << key;
    // Read again after a restart: a re-reference, so it is protected.
    EXPECT_TRUE(cache->IsProtected(key));
  }
}

TEST_F(DiskBlockCacheTest, ReopenWithSmallerCapacityEvicts) {
  {
    auto cache = Open(Options(1 << 20));
    for (int i = 0; i < 6; ++i) {
      PutNow(*cache, "k" + std::to_string(i));
    }
  }
  auto cache = Open(Options(4 * kFile));
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->Stats().entries, 4u);
  EXPECT_LE(FileBytesUnder(cache->dir()), 4 * kFile);
}

TEST_F(DiskBlockCacheTest, CorruptPieceDropsItsBlockOnly) {
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  const size_t size = 100000;  // pieces 0..3
  PutNow(*cache, "a", size);
  PutNow(*cache, "b", size);
  const std::string a = BlockFor("a", size), b = BlockFor("b", size);
  const uint64_t data_start = blockfile::FileSize(size) - size;
  FlipByte(cache->PathFor("a"), data_start + 2 * 32768 + 7);  // in piece 2 of a

  std::string out(100, '?');
  // Only the pieces a read covers are checked: piece 0 of a still reads.
  ASSERT_TRUE(cache->Read("a", 0, 100, out.data()));
  EXPECT_EQ(out, a.substr(0, 100));
  EXPECT_FALSE(cache->Read("a", 2 * 32768, 100, out.data()));
  EXPECT_FALSE(fs::exists(cache->PathFor("a")));
  EXPECT_EQ(cache->Stats().corrupt_dropped, 1u);
  EXPECT_FALSE(cache->Read("a", 0, 100, out.data()));  // gone: the caller refetches
  // The intact block, another piece.
  ASSERT_TRUE(cache->Read("b", 32768 + 50, 100, out.data()));
  EXPECT_EQ(out, b.substr(32768 + 50, 100));
  EXPECT_EQ(cache->Stats().entries, 1u);
  EXPECT_EQ(cache->Stats().bytes, blockfile::FileSize(size));
  // And a can be cached again.
  PutNow(*cache, "a", size);
  EXPECT_TRUE(Has(*cache, "a", size));
}

TEST_F(DiskBlockCacheTest, TruncatedFileIsDropped) {
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "t", 100000);
  std::string path = cache->PathFor("t");
  std::string data = ReadWholeFile(path);
  WriteWholeFile(path, data.substr(0, data.size() - 1000));
  std::string whole;
  EXPECT_FALSE(cache->ReadBlock("t", &whole));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(cache->Stats().corrupt_dropped, 1u);
  EXPECT_EQ(cache->Stats().entries, 0u);
}

TEST_F(DiskBlockCacheTest, VanishedFileIsAMissAndForgotten) {
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "v");
  fs::remove(cache->PathFor("v"));
  EXPECT_FALSE(Has(*cache, "v"));
  EXPECT_EQ(cache->Stats().entries, 0u);
}

TEST_F(DiskBlockCacheTest, BadFilesAreDeletedAtStartup) {
  std::string x_path, y_path, z_path;
  {
    auto cache = Open(Options(1 << 20));
    PutNow(*cache, "x");
    PutNow(*cache, "y");
    x_path = cache->PathFor("x");
    y_path = cache->PathFor("y");
    z_path = cache->PathFor("z");
  }
  FlipByte(x_path, 0);  // bad magic
  const std::string sub = fs::path(y_path).parent_path();
  const std::string dir = fs::path(sub).parent_path();
  WriteWholeFile(sub + "/.tmp.0123456789abcdef", "half a write");
  WriteWholeFile(sub + "/stray.txt", "not a cache file");
  WriteWholeFile(dir + "/README", "left alone: not in a cache subdirectory");
  WriteWholeFile(z_path, std::string(100, 'g'));  // a well-named file of garbage

  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->Stats().entries, 1u);
  EXPECT_EQ(cache->Stats().corrupt_dropped, 2u);  // x and z
  EXPECT_FALSE(fs::exists(x_path));
  EXPECT_FALSE(fs::exists(z_path));
  EXPECT_FALSE(fs::exists(sub + "/.tmp.0123456789abcdef"));
  EXPECT_FALSE(fs::exists(sub + "/stray.txt"));
  EXPECT_TRUE(fs::exists(dir + "/README"));
  EXPECT_TRUE(Has(*cache, "y"));
  EXPECT_FALSE(Has(*cache, "x"));
}

TEST_F(DiskBlockCacheTest, RemoveForgetsQueuedAndCachedBlocks) {
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "on-disk");
  cache->Put("queued", BlockFor("queued", kBlock));
  cache->Remove("on-disk");
  cache->Remove("queued");
  EXPECT_FALSE(Has(*cache, "on-disk"));
  EXPECT_FALSE(Has(*cache, "queued"));
  cache->Drain();
  EXPECT_FALSE(Has(*cache, "queued"));
  EXPECT_FALSE(fs::exists(cache->PathFor("on-disk")));
  EXPECT_FALSE(fs::exists(cache->PathFor("queued")));
  EXPECT_EQ(cache->Stats().entries, 0u);
  EXPECT_EQ(FileBytesUnder(cache->dir()), 0u);
  PutNow(*cache, "on-disk");
  EXPECT_TRUE(Has(*cache, "on-disk"));
}

TEST_F(DiskBlockCacheTest, SameKeyWithAnotherLengthDropsTheOldBlock) {
  auto cache = Open(Options(1 << 20));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "k", 100);
  PutNow(*cache, "k", 100);  // same length: kept as is
  EXPECT_EQ(cache->Stats().rejected, 0u);
  PutNow(*cache, "k", 200);
  EXPECT_FALSE(Has(*cache, "k", 100));
  EXPECT_FALSE(fs::exists(cache->PathFor("k")));
  PutNow(*cache, "k", 200);
  EXPECT_TRUE(Has(*cache, "k", 200));
}

TEST_F(DiskBlockCacheTest, RefusesWhatItCannotHold) {
  DiskCacheOptions o = Options(1 << 20);
  o.write_queue_bytes = 1000;
  auto cache = Open(std::move(o));
  ASSERT_NE(cache, nullptr);
  cache->Put("", "empty key");
  cache->Put(std::string(200, '/'), "name too long once escaped");
  cache->Put("over-queue", BlockFor("over-queue", 1001));
  cache->Drain();
  EXPECT_EQ(cache->Stats().rejected, 3u);
  EXPECT_EQ(cache->Stats().entries, 0u);
  // Many Puts at once: each is written or refused, none lost in between.
  for (int i = 0; i < 50; ++i) cache->Put("q" + std::to_string(i), BlockFor("q", 600));
  cache->Drain();
  CacheStats s = cache->Stats();
  EXPECT_EQ(s.entries + s.rejected, 53u);
}

TEST_F(DiskBlockCacheTest, ReReferenceProtectsAgainstScans) {
  DiskCacheOptions o = Options(20 * kFile);  // protected: 16 blocks
  auto cache = Open(std::move(o));
  ASSERT_NE(cache, nullptr);
  for (int i = 0; i < 5; ++i) PutNow(*cache, "hot" + std::to_string(i));
  // Reads right after arrival are the same use: no protection yet.
  EXPECT_TRUE(Has(*cache, "hot0"));
  EXPECT_FALSE(cache->IsProtected("hot0"));
  clock_ += 2 * kSecond;
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(Has(*cache, "hot" + std::to_string(i)));
    EXPECT_TRUE(cache->IsProtected("hot" + std::to_string(i)));
  }
  // A one-pass scan 10x the cache, each block read piece by piece as it
  // arrives.
  for (int i = 0; i < 200; ++i) {
    std::string key = "scan" + std::to_string(i);
    PutNow(*cache, key);
    std::string out(4096, '?');
    for (uint64_t off = 0; off < kBlock; off += 4096) cache->Read(key, off, 4096, out.data());
    clock_ += kSecond / 1000;
  }
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(Has(*cache, "hot" + std::to_string(i))) << i;
  EXPECT_TRUE(Has(*cache, "scan199"));
  EXPECT_FALSE(Has(*cache, "scan100"));
  EXPECT_LE(cache->Stats().bytes, 20 * kFile);
}

TEST_F(DiskBlockCacheTest, FreeSpaceRatioIsHonoured) {
  total_ = 1ull << 30;      // 1 GiB file system: keep 102.4 MiB free
  free_ = 200ull << 20;
  auto cache = Open(Options(1 << 30));
  ASSERT_NE(cache, nullptr);
  for (int i = 0; i < 4; ++i) PutNow(*cache, "k" + std::to_string(i));
  EXPECT_EQ(cache->Stats().entries, 4u);

  // Someone else fills the disk: the next Put evicts everything it can and
  // is refused, since even that does not bring free space back up.
  free_ = 50ull << 20;
  PutNow(*cache, "late");
  CacheStats s = cache->Stats();
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.evictions, 4u);
  EXPECT_EQ(s.rejected, 1u);
  EXPECT_EQ(FileBytesUnder(cache->dir()), 0u);

  // Room again, but only just: a block fits, the next one costs a victim.
  free_ = (1ull << 30) / 10 + 1 + kFile + kFile / 2;
  PutNow(*cache, "fits");
  EXPECT_TRUE(Has(*cache, "fits"));
  free_ = free_.load() - kFile;  // as the write above would have
  PutNow(*cache, "next");
  EXPECT_TRUE(Has(*cache, "next"));
  EXPECT_FALSE(Has(*cache, "fits"));
}

TEST_F(DiskBlockCacheTest, IdleCacheGivesSpaceBack) {
  total_ = 1ull << 30;
  free_ = 500ull << 20;
  auto cache = Open(Options(1 << 30));
  ASSERT_NE(cache, nullptr);
  PutNow(*cache, "a");
  PutNow(*cache, "b");
  free_ = 10ull << 20;  // the disk fills while the cache is idle
  for (int i = 0; i < 100 && cache->Stats().entries > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(cache->Stats().entries, 0u);
}

TEST(PlanSpaceTest, CapacityOnly) {
  EXPECT_EQ(PlanSpace(900, 200, 1000, 0.1, std::nullopt).evict_bytes, 100u);
  EXPECT_TRUE(PlanSpace(900, 200, 1000, 0.1, std::nullopt).admit);
  EXPECT_EQ(PlanSpace(0, 1000, 1000, 0.1, std::nullopt).evict_bytes, 0u);
  SpacePlan too_big = PlanSpace(500, 1001, 1000, 0.1, std::nullopt);
  EXPECT_FALSE(too_big.admit);
  EXPECT_EQ(too_big.evict_bytes, 0u);
  // Over capacity already (it shrank): back under it, even with nothing to add.
  EXPECT_EQ(PlanSpace(1500, 0, 1000, 0.1, std::nullopt).evict_bytes, 500u);
}

TEST(PlanSpaceTest, FreeSpaceRatio) {
  const FsSpace fs{1000, 150};  // keep 100 free
  EXPECT_EQ(PlanSpace(500, 40, 10000, 0.1, fs).evict_bytes, 0u);
  SpacePlan p = PlanSpace(500, 100, 10000, 0.1, fs);
  EXPECT_TRUE(p.admit);
  EXPECT_EQ(p.evict_bytes, 50u);
  // Others filled the disk: the cache makes up for them too.
  p = PlanSpace(500, 100, 10000, 0.1, FsSpace{1000, 50});
  EXPECT_TRUE(p.admit);
  EXPECT_EQ(p.evict_bytes, 150u);
  // More than the cache holds: evict it all, refuse the block.
  p = PlanSpace(20, 100, 10000, 0.1, FsSpace{1000, 50});
  EXPECT_FALSE(p.admit);
  EXPECT_EQ(p.evict_bytes, 20u);
  // The tighter of the two limits wins.
  p = PlanSpace(950, 100, 1000, 0.1, FsSpace{1000, 120});
  EXPECT_EQ(p.evict_bytes, 80u);
  p = PlanSpace(950, 100, 1000, 0.1, FsSpace{1000, 300});
  EXPECT_EQ(p.evict_bytes, 50u);
  // Ratio 0 still keeps the write from hitting ENOSPC.
  EXPECT_EQ(PlanSpace(100, 10, 10000, 0.0, FsSpace{1000, 0}).evict_bytes, 10u);
}

TEST_F(DiskBlockCacheTest, ConcurrentPutsAndReadsNeverSeeWrongBytes) {
  const uint64_t capacity = 16 * kFile;
  DiskCacheOptions o = Options(capacity);
  o.now_ns = nullptr;  // the real clock
  o.reuse_window_ns = 1'000'000;
  auto cache = Open(std::move(o));
  ASSERT_NE(cache, nullptr);
  std::atomic<uint64_t> hits{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::string out;
      for (int i = 0; i < 1500; ++i) {
        std::string key = "vol/k" + std::to_string(rng() % 48);
        size_t size = 1 + std::hash<std::string>{}(key) % kBlock;
        int op = static_cast<int>(rng() % 10);
        if (op < 3) {
          cache->Put(key, BlockFor(key, size));
        } else if (op == 3) {
          cache->Remove(key);
        } else {
          uint64_t off = rng() % size, len = rng() % (size - off + 1);
          out.assign(len, '?');
          if (cache->Read(key, off, len, out.data())) {
            ++hits;
            ASSERT_EQ(out, BlockFor(key, size).substr(off, len)) << key;
          }
        }
        ASSERT_LE(cache->Stats().bytes, capacity);
      }
    });
  }
  for (auto& th : threads) th.join();
  cache->Drain();
  EXPECT_GT(hits.load(), 0u);
  EXPECT_EQ(cache->Stats().corrupt_dropped, 0u);
  EXPECT_LE(FileBytesUnder(cache->dir()), capacity);
  EXPECT_EQ(FileBytesUnder(cache->dir()), cache->Stats().bytes);
}

TEST_F(DiskBlockCacheTest, OneCachePerDirectory) {
  auto first = Open(Options(1 << 20));
  ASSERT_NE(first, nullptr);
  auto second = DiskBlockCache::Open(Options(1 << 20));
  EXPECT_TRUE(second.status().Is(StatusCode::kBusy)) << second.status().ToString();
  first.reset();
  EXPECT_TRUE(DiskBlockCache::Open(Options(1 << 20)).ok());
}

TEST_F(DiskBlockCacheTest, OpenChecksOptions) {
  DiskCacheOptions o = Options(0);
  EXPECT_TRUE(DiskBlockCache::Open(o).status().Is(StatusCode::kInvalid));
  o = Options(1 << 20);
  o.free_space_ratio = 1.0;
  EXPECT_TRUE(DiskBlockCache::Open(o).status().Is(StatusCode::kInvalid));
  o = Options(1 << 20);
  o.dir = "";
  EXPECT_TRUE(DiskBlockCache::Open(o).status().Is(StatusCode::kInvalid));
  o = Options(1 << 20);
  o.dir = tmp_.path() + "/file";
  WriteWholeFile(o.dir, "x");
  Status st = DiskBlockCache::Open(o).status();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(o.dir), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace tessera
