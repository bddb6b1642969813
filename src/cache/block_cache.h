// BlockCache: a cache of whole, immutable blocks, keyed by their object key
// (data/slice_store.h names blocks so that a key never changes content).
// It sits between the data layer and the object store: the data layer asks
// the cache first and, on a miss, fetches the block from the object store
// and offers it back with Put. The cache is never the only copy of anything,
// so every failure inside it is reported as a miss, never as an error, and
// it never returns wrong bytes: a block that fails its checksum is dropped
// and reported as a miss.
//
// Implementations: MemoryBlockCache (memory_block_cache.h), DiskBlockCache
// (disk_block_cache.h), TieredBlockCache (tiered_block_cache.h) over both.
// Build one from options with MakeBlockCache below.
//
// Every method is thread-safe. None reports errors: the answer is "hit" or
// "miss". Read and ReadBlock may block on local disk I/O (a disk tier), Put
// and Remove do not wait for the disk.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tessera {

struct CacheStats {
  uint64_t entries = 0;          // blocks cached now
  uint64_t bytes = 0;            // bytes they take (a disk tier counts file sizes)
  uint64_t hits = 0;             // reads served
  uint64_t misses = 0;           // reads not served (absent, out of range, dropped)
  uint64_t corrupt_dropped = 0;  // blocks dropped because they failed verification
  uint64_t evictions = 0;        // blocks evicted to make room
  uint64_t rejected = 0;         // Puts not cached (too big, queue full, disk full, I/O error)
};

class BlockCache {
 public:
  virtual ~BlockCache() = default;

  // Copies bytes [offset, offset + length) of the block `key` into `out`
  // (which must hold `length` bytes) and returns true when the cache holds
  // the block, the block is at least offset + length bytes long and those
  // bytes pass verification. Returns false otherwise: absent, too short, or
  // dropped as corrupt (the caller fetches from the object store instead).
  // On false, `out` may have been overwritten and must not be used. Counts
  // a hit or a miss; a hit makes the block more recently used. May block on
  // disk I/O.
  virtual bool Read(std::string_view key, uint64_t offset, uint64_t length, char* out) = 0;

  // The whole block `key` into `*block`, with the same rules as Read. Used to
  // promote a block between tiers and to serve whole blocks to peers.
  virtual bool ReadBlock(std::string_view key, std::string* block) = 0;

  // Offers the whole content of block `key`. Best effort: the cache may keep
  // it or not (it refuses a block larger than its capacity, and a disk tier
  // refuses when its write queue or the disk is full), and never blocks on
  // disk I/O. Keys name immutable blocks: offering a key already cached with
  // the same length only makes it more recently used; with another length,
  // the new content replaces the old. Copies `block`; the caller keeps it.
  virtual void Put(std::string_view key, std::string_view block) = 0;

  // Forgets block `key` (call it when the block is deleted from the object
  // store). Once Remove returns, Read of the key misses until a new Put.
  // May return before a disk tier has deleted the file.
  virtual void Remove(std::string_view key) = 0;

  // A snapshot of the counters; the counters only grow (but entries, bytes).
  virtual CacheStats Stats() const = 0;
};

struct CacheOptions {
  // Memory tier capacity; 0: no memory tier.
  uint64_t memory_bytes = 0;
  // Directory of the disk tier; "": no disk tier. Created if missing. Owned
  // by one process at a time (a lock file enforces it).
  std::string disk_dir;
  // Disk tier capacity in bytes of files; must be > 0 with a disk_dir.
  uint64_t disk_bytes = 0;
  // The disk tier keeps at least this fraction of its file system free,
  // evicting (and refusing Puts) to do so. In [0, 1).
  double free_space_ratio = 0.1;
};

// Builds the cache the options describe: memory only, disk only, memory in
// front of disk (TieredBlockCache), or, with neither, a cache that keeps
// nothing. kInvalid for inconsistent options (naming the field); errors of
// opening the disk tier (DiskBlockCache::Open) with the directory in the
// message.
Result<std::unique_ptr<BlockCache>> MakeBlockCache(const CacheOptions& options);

}  // namespace tessera
