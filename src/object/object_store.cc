#include "object/object_store.h"

#include <cstdlib>

#include "object/file_store.h"
#include "object/memory_store.h"

namespace tessera {

Result<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view storage,
                                                     std::string_view bucket) {
  if (storage == "file") {
    std::string dir(bucket);
    if (dir == "~" || dir.starts_with("~/")) {
      const char* home = std::getenv("HOME");
      if (home == nullptr || *home == '\0') {
        return Invalid("cannot expand '~' in bucket '" + dir + "': HOME is not set");
      }
      dir = std::string(home) + dir.substr(1);
    }
    ASSIGN_OR_RETURN(std::unique_ptr<FileStore> store, FileStore::Open(dir));
    return std::unique_ptr<ObjectStore>(std::move(store));
  }
  if (storage == "mem") return std::unique_ptr<ObjectStore>(MemoryStore::Open(bucket));
  return Invalid("unsupported storage '" + std::string(storage) + "' (expected file or mem)");
}

}  // namespace tessera
