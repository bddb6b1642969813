#include "cache/block_cache.h"

#include <utility>

#include "cache/disk_block_cache.h"
#include "cache/memory_block_cache.h"
#include "cache/tiered_block_cache.h"

namespace tessera {

Result<std::unique_ptr<BlockCache>> MakeBlockCache(const CacheOptions& options) {
  if (!(options.free_space_ratio >= 0 && options.free_space_ratio < 1)) {
    return Invalid("cache: free_space_ratio must be in [0, 1), got " +
                   std::to_string(options.free_space_ratio));
  }
  if (options.disk_dir.empty() && options.disk_bytes > 0) {
    return Invalid("cache: disk_bytes is set but disk_dir is empty");
  }
  if (!options.disk_dir.empty() && options.disk_bytes == 0) {
    return Invalid("cache: disk_dir " + options.disk_dir + " is set but disk_bytes is 0");
  }
  if (options.disk_dir.empty()) {
    // Memory only; with memory_bytes 0 a cache that keeps nothing, so that
    // callers need no "no cache" branch.
    return std::unique_ptr<BlockCache>(std::make_unique<MemoryBlockCache>(options.memory_bytes));
  }
  DiskCacheOptions disk_options;
  disk_options.dir = options.disk_dir;
  disk_options.capacity_bytes = options.disk_bytes;
  disk_options.free_space_ratio = options.free_space_ratio;
  Result<std::unique_ptr<DiskBlockCache>> disk = DiskBlockCache::Open(std::move(disk_options));
  if (!disk.ok()) return disk.status();
  if (options.memory_bytes == 0) return std::unique_ptr<BlockCache>(std::move(*disk));
  return std::unique_ptr<BlockCache>(std::make_unique<TieredBlockCache>(
      std::make_unique<MemoryBlockCache>(options.memory_bytes), std::move(*disk)));
}

}  // namespace tessera
