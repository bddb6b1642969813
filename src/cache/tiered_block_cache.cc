#include "cache/tiered_block_cache.h"

#include <functional>
#include <utility>

namespace tessera {
namespace {

constexpr size_t kDoorkeeperKeys = 4096;

}  // namespace

TieredBlockCache::TieredBlockCache(std::unique_ptr<BlockCache> memory,
                                   std::unique_ptr<BlockCache> disk)
    : memory_(std::move(memory)), disk_(std::move(disk)) {}

bool TieredBlockCache::SecondRecentDiskHit(std::string_view key) {
  uint64_t h = std::hash<std::string_view>{}(key);
  std::lock_guard<std::mutex> lock(mu_);
  if (seen_once_.erase(h) > 0) return true;
  if (seen_once_.size() >= kDoorkeeperKeys) seen_once_.clear();
  seen_once_.insert(h);
  return false;
}

bool TieredBlockCache::Read(std::string_view key, uint64_t offset, uint64_t length, char* out) {
  if (memory_->Read(key, offset, length, out)) {
    ++hits_;
    return true;
  }
  if (!disk_->Read(key, offset, length, out)) {
    ++misses_;
    return false;
  }
  ++hits_;
  if (SecondRecentDiskHit(key)) {
    std::string block;
    if (disk_->ReadBlock(key, &block)) memory_->Put(key, block);
  }
  return true;
}

bool TieredBlockCache::ReadBlock(std::string_view key, std::string* block) {
  if (memory_->ReadBlock(key, block)) {
    ++hits_;
    return true;
  }
  if (!disk_->ReadBlock(key, block)) {
    ++misses_;
    return false;
  }
  ++hits_;
  memory_->Put(key, *block);
  return true;
}

void TieredBlockCache::Put(std::string_view key, std::string_view block) {
  memory_->Put(key, block);
  disk_->Put(key, block);
}

void TieredBlockCache::Remove(std::string_view key) {
  memory_->Remove(key);
  disk_->Remove(key);
}

CacheStats TieredBlockCache::Stats() const {
  CacheStats m = memory_->Stats(), d = disk_->Stats();
  CacheStats s;
  s.entries = m.entries + d.entries;
  s.bytes = m.bytes + d.bytes;
  s.hits = hits_.load();
  s.misses = misses_.load();
  s.corrupt_dropped = m.corrupt_dropped + d.corrupt_dropped;
  s.evictions = m.evictions + d.evictions;
  s.rejected = m.rejected + d.rejected;
  return s;
}

}  // namespace tessera
