#include "data/file_reader.h"

#include <algorithm>
#include <cstring>

#include "common/chunk_view.h"

namespace tessera {

Result<size_t> ReadFile(ChunkMeta& index, SliceStore& store, InodeId ino, uint64_t length,
                        uint64_t offset, size_t size, char* out) {
  if (offset >= length) return size_t{0};
  const size_t total = static_cast<size_t>(std::min<uint64_t>(size, length - offset));
  size_t done = 0;
  while (done < total) {
    const uint64_t at = offset + done;
    const uint32_t chunk = static_cast<uint32_t>(at / kChunkSize);
    const uint64_t begin = at % kChunkSize;
    const uint64_t end = std::min<uint64_t>(kChunkSize, begin + (total - done));
    ASSIGN_OR_RETURN(auto records, index.ReadChunk(ino, chunk));
    char* dst = out + done;
    std::memset(dst, 0, end - begin);
    for (const Segment& seg : BuildChunkView(records)) {
      const uint64_t s_begin = std::max<uint64_t>(seg.pos, begin);
      const uint64_t s_end = std::min<uint64_t>(uint64_t{seg.pos} + seg.len, end);
      if (s_begin >= s_end || seg.id.value() == 0) continue;
      RETURN_IF_ERROR(store.Read(seg.id, seg.size, seg.off + (s_begin - seg.pos), s_end - s_begin,
                                 dst + (s_begin - begin)));
    }
    done += end - begin;
  }
  return total;
}

}  // namespace tessera
