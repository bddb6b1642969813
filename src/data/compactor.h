// Compactor merges the slice records of a chunk into one new slice.
//
// Every flush of a file appends records to the chunks it wrote; overwrites
// and random writes leave many records whose later ones hide parts of
// earlier ones. Reads then overlay them all and each commit rewrites the
// longer list, so a chunk that reaches `threshold` records is merged in the
// background: the bytes the records show are read and written as one new
// slice, whose record replaces them in one metadata transaction (kept only
// if the chunk did not change meanwhile). Replaced slices are deleted after
// `grace`, so readers that fetched the old records still find their blocks.
//
// Background merges leave the oldest records alone while they are still
// wholly visible and large (an appended log keeps its big early slices, and
// only the small recent ones are rewritten); a full merge (CompactChunk with
// full = true, as `tessera compact` asks) rewrites the whole chunk.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "common/types.h"
#include "data/block_reader.h"
#include "data/chunk_meta.h"

namespace tessera {

struct CompactOptions {
  size_t threshold = 100;                      // records that start a background merge
  int64_t grace_ns = 60'000'000'000;           // replaced slices live this long
  uint64_t keep_slice_bytes = 1 << 20;         // oldest records this big are kept when visible
  size_t threads = 1;                          // background merges at once
};

struct CompactResult {
  bool merged = false;       // false: nothing to gain, or the chunk changed meanwhile
  size_t records_before = 0;
  size_t records_after = 0;
  uint64_t bytes_written = 0;
};

class Compactor {
 public:
  // index and reader must outlive the compactor.
  Compactor(ChunkMeta* index, BlockReader* reader, CompactOptions options);
  // Waits for the merges in progress; queued ones are dropped.
  ~Compactor();

  // Merges one chunk now. full: every record, else the background policy.
  Result<CompactResult> CompactChunk(InodeId ino, uint32_t chunk, bool full);
  // After a commit: queues the chunks that hold `threshold` records or more.
  void OnCommitted(InodeId ino, const std::vector<std::pair<uint32_t, size_t>>& records);
  // Waits until no background merge is queued or running.
  void WaitIdle();
  // Ends background merging: the queued merges are dropped, the running
  // ones finish first (at unmount, before the last uploads).
  void Stop();

 private:
  void Schedule(InodeId ino, uint32_t chunk);

  ChunkMeta* const index_;
  BlockReader* const reader_;
  const CompactOptions options_;
  std::mutex mu_;
  std::condition_variable idle_;
  std::set<std::pair<uint64_t, uint32_t>> queued_;  // guarded by mu_
  size_t running_ = 0;                               // guarded by mu_
  bool stopping_ = false;                            // guarded by mu_
  ThreadPool pool_;  // last: drained before the members above go
};

}  // namespace tessera
