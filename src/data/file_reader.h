// Reading file data: overlays the slices of each chunk (common/chunk_view.h)
// and reads the bytes through the BlockReader. Thread-safe and stateless;
// the readahead decision (sequential or not) is the caller's.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "common/types.h"
#include "data/block_reader.h"
#include "data/chunk_meta.h"

namespace tessera {

// Reads [offset, offset + size) of a file that is `length` bytes long into
// `out`; returns the bytes read (fewer at the end of the file). Holes read as
// zeros. sequential: whole blocks are fetched and cached. kIo for a missing
// or damaged block: only this read fails.
Result<size_t> ReadFile(ChunkMeta& index, BlockReader& reader, InodeId ino, uint64_t length,
                        uint64_t offset, size_t size, bool sequential, char* out);

// Fetches the blocks behind [offset, offset + size) of the file into the
// cache in the background (readahead).
void PrefetchFile(ChunkMeta& index, BlockReader& reader, InodeId ino, uint64_t length,
                  uint64_t offset, uint64_t size);

}  // namespace tessera
