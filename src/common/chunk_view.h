// Overlaying the slices of a chunk: later slices hide earlier ones where they
// overlap. The result is what a read of the chunk returns.
#pragma once

#include <cstdint>
#include <vector>

#include "common/slice.h"

namespace tessera {

// A piece of a chunk served by one slice (id 0: zeros). Segments returned by
// BuildChunkView are sorted by pos and never overlap; gaps between them are
// holes (zeros) too.
using Segment = SliceRecord;

// records: oldest first, as stored.
std::vector<Segment> BuildChunkView(const std::vector<SliceRecord>& records);

}  // namespace tessera
