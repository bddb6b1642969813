// MemoryBlockCache: blocks held in process memory, least recently used
// evicted first, bounded by the sum of block lengths.
//
// Why plain LRU here while the disk tier resists scans: the memory tier is
// small next to the disk tier and mostly serves the reads that follow a
// fetch closely (the rest of a block a sequential reader is in the middle
// of), for which recency is the right signal; a scan pushing out memory only
// costs a disk-tier hit.
//
// Blocks are shared, reference-counted buffers: Read copies outside the
// lock, and an evicted block a reader is still copying from stays alive
// until the reader is done. Thread-safe; never blocks on I/O.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "cache/block_cache.h"
#include "cache/segmented_lru.h"

namespace tessera {

class MemoryBlockCache : public BlockCache {
 public:
  // Holds at most `capacity_bytes` of block data (0: holds nothing).
  explicit MemoryBlockCache(uint64_t capacity_bytes);

  bool Read(std::string_view key, uint64_t offset, uint64_t length, char* out) override;
  bool ReadBlock(std::string_view key, std::string* block) override;
  void Put(std::string_view key, std::string_view block) override;
  void Remove(std::string_view key) override;
  CacheStats Stats() const override;

  uint64_t capacity_bytes() const { return capacity_; }

 private:
  using Block = std::shared_ptr<const std::string>;

  // The block under `key`, made most recently used, or nullptr (counting a
  // miss).
  Block Lookup(std::string_view key);

  const uint64_t capacity_;
  mutable std::mutex mu_;
  SegmentedLru<Block> lru_;  // guarded by mu_; plain LRU (nothing is promoted)
  CacheStats stats_;         // guarded by mu_; entries and bytes come from lru_
};

}  // namespace tessera
