// FileWriter buffers the writes to one file and turns them into slices.
//
// Each run of contiguous writes inside a chunk becomes one slice. A slice's
// blocks are uploaded as soon as they fill; the partial last block is
// uploaded on Flush, which then commits every pending slice to the chunk
// index in write order (so later writes win on read). Thread-safe: writes
// and flushes of one file are serialised. Memory per file is bounded: when
// too many slices are pending, Write flushes them first.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "data/chunk_meta.h"
#include "data/slice_store.h"

namespace tessera {

class FileWriter {
 public:
  FileWriter(InodeId ino, ChunkMeta* index, SliceStore* store);
  ~FileWriter();

  // Buffers `data` at `offset`. Errors come from uploads or from a flush it
  // had to make; the write is then not (fully) applied.
  Status Write(uint64_t offset, std::string_view data);
  // Uploads and commits everything buffered. After an error, the failed
  // slices are dropped and the error is returned once more by later flushes
  // only if new data fails too.
  Status Flush();
  // True when written data is not committed yet.
  bool dirty();
  // The end of the furthest byte buffered but not yet committed (0 if none),
  // so that stat shows a writer's own writes at once.
  uint64_t PendingEnd();
  // When the newest pending data was written (0 if none): stat shows it as
  // mtime before the data is committed.
  int64_t PendingMtime();

 private:
  struct PendingSlice {
    uint32_t chunk = 0;
    uint32_t pos = 0;  // in the chunk
    uint32_t len = 0;  // bytes written so far
    SliceId id;        // allocated at the first upload
    uint64_t uploaded_blocks = 0;
    int64_t mtime_ns = 0;  // when data was last written into it
    std::string tail;  // bytes after the uploaded blocks
  };

  Status WriteInChunk(uint32_t chunk, uint32_t pos, std::string_view data);
  Status UploadFullBlocks(PendingSlice* s);
  Status FlushLocked();

  const InodeId ino_;
  ChunkMeta* const index_;
  SliceStore* const store_;
  std::mutex mu_;
  std::vector<PendingSlice> pending_;  // guarded by mu_; in write order
};

}  // namespace tessera
