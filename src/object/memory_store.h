// MemoryStore: an object store in process memory, for tests and for
// throw-away volumes ("mem" storage). Objects are kept as immutable shared
// strings in an ordered map, so Get copies outside the lock and List is a
// range scan.
//
// Stores opened with the same non-empty name share one set of objects for
// the life of the process (a volume formatted by one component can be
// mounted by another in the same test); an empty name gives a private store.
//
// All methods are thread-safe. Errors: kNotFound for an absent object
// (Get/Head), kInvalid for an empty key; nothing else fails.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "object/object_store.h"

namespace tessera {

class MemoryStore : public ObjectStore {
 public:
  // A private, empty store.
  MemoryStore();
  // The store named `name`, shared with every other store opened with that
  // name in this process; a fresh private store if `name` is empty.
  static std::unique_ptr<MemoryStore> Open(std::string_view name);

  std::string Describe() const override;
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset = 0, int64_t length = -1) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override;
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override;

 private:
  struct Shared;
  MemoryStore(std::string name, std::shared_ptr<Shared> shared);

  Status NotFoundError(std::string_view key) const;

  const std::string name_;
  const std::shared_ptr<Shared> shared_;
};

}  // namespace tessera
