// Slices: the unit in which file data is written. Shared by the metadata
// layer (which stores slice records per chunk) and the data layer (which
// stores a slice's bytes as block objects and overlays slices on read).
#pragma once

#include <cstdint>

#include "common/types.h"

namespace tessera {

// One slice as a chunk references it: bytes [off, off + len) of slice `id`
// (whose total size is `size`) appear at position `pos` of the chunk.
// id 0 is a hole: those bytes read as zeros (left by truncate).
struct SliceRecord {
  uint32_t pos = 0;
  SliceId id;
  uint32_t size = 0;
  uint32_t off = 0;
  uint32_t len = 0;
  bool operator==(const SliceRecord&) const = default;
};

// A slice record and the chunk of a file it goes into.
struct ChunkSlice {
  uint32_t chunk = 0;
  SliceRecord record;
};

// A slice whose blocks may be deleted: its id and total size.
struct SliceRef {
  SliceId id;
  uint32_t size = 0;
  bool operator==(const SliceRef&) const = default;
};

}  // namespace tessera
