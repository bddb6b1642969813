// What the data layer needs from the metadata layer, as a small interface so
// that data/ does not depend on meta/ (vfs/ adapts Meta to it). Thread-safe;
// every call may block on the metadata engine.
#pragma once

#include <cstdint>
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
  // Appends a slice to a chunk, extends the file to cover it and sets its
  // mtime and ctime to `mtime_ns` (when the data was written). kNoSpace when
  // a quota forbids it; nothing is changed then.
  virtual Status CommitSlice(InodeId ino, uint32_t chunk, const SliceRecord& slice,
                             int64_t mtime_ns) = 0;
};

}  // namespace tessera
