// The memory engine (mem://NAME): an in-process, multi-version ordered map
// with optimistic transactions, used by tests of the layers above. It keeps
// the same contract as the durable engines, including conflicts, so code
// tested on it behaves the same on SQLite.
//
// A transaction reads the snapshot current when it began (old versions are
// kept while a snapshot may need them). Commit fails with kConflict when a
// key it read, or any key in a range it scanned (up to where the scan
// stopped), has a newer version than that snapshot; deletes leave versioned
// tombstones so they are detected too.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

// Opens the store called `name`. All stores opened with one non-empty name
// share their data for the life of the process (like a named in-memory
// database); an empty name gives a fresh, private store. Never fails, and
// always creates: there is nothing to "format" in memory.
Result<std::unique_ptr<KvStore>> OpenMemoryKv(std::string_view name);

}  // namespace tessera
