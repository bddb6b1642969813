// What the data layer needs from the metadata layer, as a small interface so
// that data/ does not depend on meta/ (vfs/ adapts Meta to it). Thread-safe;
// every call may block on the metadata engine.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/slice.h"
#include "common/status.h"
#include "common/types.h"

namespace tessera {

class ChunkMeta {
 public:
  virtual ~ChunkMeta() = default;
  // A new slice id, never handed out before.
  virtual Result<SliceId> NewSlice() = 0;
  // The slice records of one chunk of a file, oldest first (empty if none).
  virtual Result<std::vector<SliceRecord>> ReadChunk(InodeId ino, uint32_t chunk) = 0;
  // Appends slices to chunks of a file, in order, in one step; extends the
  // file to cover them and sets its mtime and ctime to `mtime_ns` (when the
  // data was written). kNoSpace when a quota forbids it; nothing is changed
  // then. Returns, per chunk written, how many records it holds now.
  virtual Result<std::vector<std::pair<uint32_t, size_t>>> CommitSlices(
      InodeId ino, const std::vector<ChunkSlice>& slices, int64_t mtime_ns) = 0;
  // Replaces records [first, first + old.size()) of a chunk, still exactly
  // `old`, with `merged`; kBusy when the chunk changed meanwhile. Slices
  // left unreferenced are deleted at `delete_after_ns`, not before.
  virtual Status ReplaceRecords(InodeId ino, uint32_t chunk, size_t first,
                                const std::vector<SliceRecord>& old,
                                const std::vector<SliceRecord>& merged,
                                int64_t delete_after_ns) = 0;
};

}  // namespace tessera
