// TieredBlockCache: a small fast cache in front of a large slow one, in
// practice memory in front of disk.
//
//   Read       memory, then disk. A block the disk serves is copied whole
//              into memory on its second disk hit within the last few
//              thousand disk hits (a "doorkeeper"), not on the first: a
//              random 4 KiB read must not cost a 4 MiB disk read to promote
//              a block that is never read again, while a sequential reader
//              going through a block in small reads promotes it on its
//              second read and is then served from memory.
//   ReadBlock  memory, then disk; a disk hit is put into memory at once
//              (the whole block is in hand already).
//   Put        both tiers (each decides whether to keep it).
//   Remove     both tiers.
//
// Stats: hits and misses count reads of this cache (served by either tier,
// or by neither); entries, bytes, corrupt_dropped, evictions and rejected
// are the sums of the tiers'. memory() and disk() give each tier's own.
//
// Thread-safe, as its tiers are. Owns both tiers.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "cache/block_cache.h"

namespace tessera {

class TieredBlockCache : public BlockCache {
 public:
  TieredBlockCache(std::unique_ptr<BlockCache> memory, std::unique_ptr<BlockCache> disk);

  bool Read(std::string_view key, uint64_t offset, uint64_t length, char* out) override;
  bool ReadBlock(std::string_view key, std::string* block) override;
  void Put(std::string_view key, std::string_view block) override;
  void Remove(std::string_view key) override;
  CacheStats Stats() const override;

  BlockCache& memory() { return *memory_; }
  BlockCache& disk() { return *disk_; }

 private:
  // Records a disk hit on `key`; true when it is the second one recently.
  bool SecondRecentDiskHit(std::string_view key);

  const std::unique_ptr<BlockCache> memory_;
  const std::unique_ptr<BlockCache> disk_;
  std::mutex mu_;
  // Hashes of keys hit once on disk; cleared when full, so "recently" means
  // within the last kDoorkeeperKeys first hits. A hash collision at worst
  // promotes a block early.
  std::unordered_set<uint64_t> seen_once_;  // guarded by mu_
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
};

}  // namespace tessera
