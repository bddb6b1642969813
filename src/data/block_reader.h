// BlockReader serves reads of slices from the block cache and the object
// store. Sequential readers fetch whole blocks (cached, shared by every
// reader that wants the same block at the same time: one fetch per block)
// and prefetch the blocks ahead of them in the background; random readers
// fetch only the bytes they ask for and never more than a block at once.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cache/block_cache.h"
#include "common/slice.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "data/slice_store.h"

namespace tessera {

class BlockReader {
 public:
  // `store` and `cache` (which may be null: no caching) must outlive this.
  BlockReader(SliceStore* store, BlockCache* cache, size_t max_downloads);
  // Waits for prefetches in progress.
  ~BlockReader();

  // Reads [off, off + len) of slice `id` (total `size` bytes) into out.
  // whole_blocks: fetch every block touched in full and cache it. kIo
  // naming the object when a block is missing or damaged.
  Status Read(SliceId id, uint32_t size, uint64_t off, uint64_t len, bool whole_blocks, char* out);
  // Fetches the blocks holding [off, off + len) of a slice into the cache,
  // in the background; dropped when the downloads are far behind.
  void Prefetch(SliceId id, uint32_t size, uint64_t off, uint64_t len);
  // Runs a task on the download threads (dropped when they are far behind).
  void Background(std::function<void()> task);

  SliceStore& store() { return *store_; }

 private:
  struct Flight;
  // The whole block, from the cache or fetched once for all who ask now.
  Result<std::shared_ptr<const std::string>> FetchBlock(SliceId id, uint32_t size, uint64_t index);

  SliceStore* const store_;
  BlockCache* const cache_;
  const size_t max_downloads_;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;  // guarded by mu_
  ThreadPool downloads_;  // last: drained before the members above go
};

}  // namespace tessera
