// Adapts the metadata layer to what the data layer needs from it
// (data/chunk_meta.h); shared by the Vfs and the tools that rewrite data.
#pragma once

#include <utility>
#include <vector>

#include "data/chunk_meta.h"
#include "meta/meta.h"

namespace tessera {

class MetaChunks : public ChunkMeta {
 public:
  explicit MetaChunks(Meta* meta) : meta_(meta) {}
  Result<SliceId> NewSlice() override { return meta_->NewSlice(); }
  Result<std::vector<SliceRecord>> ReadChunk(InodeId ino, uint32_t chunk) override {
    return meta_->ReadChunk(ino, chunk);
  }
  Result<std::vector<std::pair<uint32_t, size_t>>> CommitSlices(
      InodeId ino, const std::vector<ChunkSlice>& slices, int64_t mtime_ns) override {
    std::vector<std::pair<uint32_t, size_t>> records;
    auto attr = meta_->WriteSlices(ino, slices, mtime_ns, &records);
    if (!attr.ok()) return attr.status();
    return records;
  }
  Status ReplaceRecords(InodeId ino, uint32_t chunk, size_t first,
                        const std::vector<SliceRecord>& old, const std::vector<SliceRecord>& merged,
                        int64_t delete_after_ns) override {
    return meta_->CompactChunk(ino, chunk, first, old, merged, delete_after_ns);
  }

 private:
  Meta* meta_;
};

}  // namespace tessera
