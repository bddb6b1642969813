#include "cache/memory_block_cache.h"

#include <cstring>
#include <utility>
#include <vector>

namespace tessera {

MemoryBlockCache::MemoryBlockCache(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}

MemoryBlockCache::Block MemoryBlockCache::Lookup(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  Block* b = lru_.Find(key);
  if (b == nullptr) {
    ++stats_.misses;
    return nullptr;
  }
  lru_.Touch(key);
  return *b;
}

bool MemoryBlockCache::Read(std::string_view key, uint64_t offset, uint64_t length, char* out) {
  Block b = Lookup(key);
  if (b == nullptr) return false;
  if (offset > b->size() || length > b->size() - offset) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.misses;
    return false;
  }
  // Copy outside the lock: a 4 MiB copy must not stall other readers.
  if (length > 0) std::memcpy(out, b->data() + offset, length);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.hits;
  return true;
}

bool MemoryBlockCache::ReadBlock(std::string_view key, std::string* block) {
  Block b = Lookup(key);
  if (b == nullptr) return false;
  block->assign(*b);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.hits;
  return true;
}

void MemoryBlockCache::Put(std::string_view key, std::string_view block) {
  if (block.size() > capacity_) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.rejected;
    return;
  }
  {
    // The common repeat (two readers missed the same block and both offer
    // it) must not pay for a copy.
    std::lock_guard<std::mutex> lock(mu_);
    Block* b = lru_.Find(key);
    if (b != nullptr && (*b)->size() == block.size()) {
      lru_.Touch(key);
      return;
    }
  }
  auto copy = std::make_shared<const std::string>(block);
  // Evicted blocks are freed after unlocking: freeing megabytes takes time.
  std::vector<Block> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  if (Block* b = lru_.Find(key)) {
    if ((*b)->size() == block.size()) {  // another Put won the race
      lru_.Touch(key);
      return;
    }
    dropped.push_back(std::move(*b));
    lru_.Erase(key);
  }
  while (lru_.bytes() + block.size() > capacity_) {
    const std::string* victim = lru_.Victim();
    dropped.push_back(std::move(*lru_.Find(*victim)));
    lru_.Erase(*victim);
    ++stats_.evictions;
  }
  lru_.Insert(std::string(key), block.size(), std::move(copy));
  // `dropped` dies after `lock` is released (reverse declaration order).
}

void MemoryBlockCache::Remove(std::string_view key) {
  Block dropped;
  std::lock_guard<std::mutex> lock(mu_);
  if (Block* b = lru_.Find(key)) {
    dropped = std::move(*b);
    lru_.Erase(key);
  }
}

CacheStats MemoryBlockCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  CacheStats s = stats_;
  s.entries = lru_.size();
  s.bytes = lru_.bytes();
  return s;
}

}  // namespace tessera
