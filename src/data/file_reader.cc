#include "data/file_reader.h"

#include <algorithm>
#include <cstring>

#include "common/chunk_view.h"

namespace tessera {
namespace {

// Calls fn(chunk, begin, end) for each chunk piece of [offset, offset + size).
template <typename Fn>
Status ForEachChunk(uint64_t offset, uint64_t size, Fn fn) {
  uint64_t done = 0;
  while (done < size) {
    const uint64_t at = offset + done;
    const uint32_t chunk = static_cast<uint32_t>(at / kChunkSize);
    const uint64_t begin = at % kChunkSize;
    const uint64_t end = std::min<uint64_t>(kChunkSize, begin + (size - done));
    RETURN_IF_ERROR(fn(chunk, begin, end, done));
    done += end - begin;
  }
  return Status::Ok();
}

// Reads [begin, end) of a chunk with these records into dst.
Status ReadChunkRange(BlockReader& reader, const std::vector<SliceRecord>& records,
                      uint64_t begin, uint64_t end, bool sequential, char* dst) {
  std::memset(dst, 0, end - begin);
  for (const Segment& seg : BuildChunkView(records)) {
    const uint64_t s_begin = std::max<uint64_t>(seg.pos, begin);
    const uint64_t s_end = std::min<uint64_t>(uint64_t{seg.pos} + seg.len, end);
    if (s_begin >= s_end || seg.id.value() == 0) continue;
    RETURN_IF_ERROR(reader.Read(seg.id, seg.size, seg.off + (s_begin - seg.pos), s_end - s_begin,
                                sequential, dst + (s_begin - begin)));
  }
  return Status::Ok();
}

}  // namespace

Result<size_t> ReadFile(ChunkMeta& index, BlockReader& reader, InodeId ino, uint64_t length,
                        uint64_t offset, size_t size, bool sequential, char* out) {
  if (offset >= length) return size_t{0};
  const size_t total = static_cast<size_t>(std::min<uint64_t>(size, length - offset));
  RETURN_IF_ERROR(ForEachChunk(offset, total, [&](uint32_t chunk, uint64_t begin, uint64_t end,
                                                  uint64_t done) -> Status {
    ASSIGN_OR_RETURN(auto records, index.ReadChunk(ino, chunk));
    for (int attempt = 0;; ++attempt) {
      Status st = ReadChunkRange(reader, records, begin, end, sequential, out + done);
      if (st.ok() || attempt == 2) return st;
      // A compaction elsewhere may have replaced the records read and their
      // slices may be gone: with new records the read is tried again.
      ASSIGN_OR_RETURN(auto now, index.ReadChunk(ino, chunk));
      if (now == records) return st;
      records = std::move(now);
    }
  }));
  return total;
}

void PrefetchFile(ChunkMeta& index, BlockReader& reader, InodeId ino, uint64_t length,
                  uint64_t offset, uint64_t size) {
  if (offset >= length) return;
  size = std::min(size, length - offset);
  reader.Background([&index, &reader, ino, offset, size] {
    (void)ForEachChunk(offset, size, [&](uint32_t chunk, uint64_t begin, uint64_t end,
                                         uint64_t) -> Status {
      ASSIGN_OR_RETURN(auto records, index.ReadChunk(ino, chunk));
      for (const Segment& seg : BuildChunkView(records)) {
        const uint64_t s_begin = std::max<uint64_t>(seg.pos, begin);
        const uint64_t s_end = std::min<uint64_t>(uint64_t{seg.pos} + seg.len, end);
        if (s_begin >= s_end || seg.id.value() == 0) continue;
        reader.Prefetch(seg.id, seg.size, seg.off + (s_begin - seg.pos), s_end - s_begin);
      }
      return Status::Ok();
    });
  });
}

}  // namespace tessera
