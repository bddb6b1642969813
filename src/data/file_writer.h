// FileWriter buffers the writes to one file and turns them into slices.
//
// Each run of contiguous writes inside a chunk becomes one slice. A slice's
// blocks are uploaded in the background (UploadQueue) as soon as they fill;
// Flush uploads the partial last blocks, waits for every upload of the file,
// and then commits the pending slices to the chunk index in write order (so
// later writes win on read), all in one metadata transaction. Memory is bounded by the UploadQueue's budget:
// Write waits for room before buffering. Thread-safe: writes and flushes of
// one file are serialised.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "data/chunk_meta.h"
#include "data/compactor.h"
#include "data/slice_store.h"
#include "data/upload_queue.h"

namespace tessera {

class FileWriter {
 public:
  // All must outlive the writer. compactor (may be null) hears of chunks
  // whose records grow after each commit.
  FileWriter(InodeId ino, ChunkMeta* index, SliceStore* store, UploadQueue* queue,
             Compactor* compactor = nullptr);
  // Waits for uploads still running; data not flushed is dropped.
  ~FileWriter();

  // Buffers `data` at `offset`. May block while the mount's write buffer is
  // full. Errors: an earlier upload of this file failed (kIo), or a flush it
  // had to make failed; the write is then not applied.
  Status Write(uint64_t offset, std::string_view data);
  // Uploads and commits everything buffered. On error every pending slice is
  // dropped (its uploaded blocks deleted) and the error returned.
  Status Flush();
  // True when written data is not committed yet.
  bool dirty();
  // When the oldest block uploaded but not committed yet went up (0 if
  // none): such blocks look leaked to `tessera gc` until committed.
  int64_t OldestUploadNs();
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
    uint64_t next_block = 0;  // index of the next block to upload
    int64_t mtime_ns = 0;     // when data was last written into it
    int64_t first_upload_ns = 0;  // when its first block was handed to uploads
    std::string tail;         // bytes after the blocks handed to uploads
  };
  // Uploads in flight for this file, shared with the upload tasks.
  struct Uploads {
    std::mutex mu;
    std::condition_variable done;
    int in_flight = 0;  // guarded by mu
    Status error;       // first failure, guarded by mu
  };

  Status WriteInChunk(uint32_t chunk, uint32_t pos, std::string_view data);
  Status UploadFullBlocks(PendingSlice* s);
  // Hands one block to the upload queue; its bytes are released when done.
  void UploadBlock(SliceId id, uint64_t index, std::string data);
  Status WaitForUploads();
  int InFlight();
  void DropPending(size_t first);
  Status FlushLocked();

  const InodeId ino_;
  ChunkMeta* const index_;
  SliceStore* const store_;
  UploadQueue* const queue_;
  Compactor* const compactor_;
  const std::shared_ptr<Uploads> uploads_ = std::make_shared<Uploads>();
  std::mutex mu_;
  std::vector<PendingSlice> pending_;  // guarded by mu_; in write order
};

}  // namespace tessera
