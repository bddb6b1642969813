// Reading file data: overlays the slices of each chunk (chunk_view.h) and
// fetches the bytes from the slice store. Thread-safe and stateless.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "common/types.h"
#include "data/chunk_meta.h"
#include "data/slice_store.h"

namespace tessera {

// Reads [offset, offset + size) of a file that is `length` bytes long into
// `out`; returns the bytes read (fewer at the end of the file). Holes read as
// zeros. kIo for a missing or damaged block: only this read fails.
Result<size_t> ReadFile(ChunkMeta& index, SliceStore& store, InodeId ino, uint64_t length,
                        uint64_t offset, size_t size, char* out);

}  // namespace tessera
