#include "object/object_store.h"

#include <cstdlib>

#include "object/file_store.h"
#include "object/memory_store.h"
#include "object/s3_store.h"

namespace tessera {

Result<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view storage,
                                                     std::string_view bucket,
                                                     const ObjectStoreOptions& options) {
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
  if (storage == "s3") {
    auto env = [](const char* name) {
      const char* v = std::getenv(name);
      return std::string(v != nullptr ? v : "");
    };
    S3Options o;
    // Keys given together come from the options; otherwise all from the
    // environment, so that an access key never pairs with another's secret.
    const bool given = !options.access_key.empty() || !options.secret_key.empty();
    o.access_key = given ? options.access_key : env("AWS_ACCESS_KEY_ID");
    o.secret_key = given ? options.secret_key : env("AWS_SECRET_ACCESS_KEY");
    o.session_token = given ? options.session_token : env("AWS_SESSION_TOKEN");
    o.region = options.region;
    o.skip_tls_verify = options.skip_tls_verify;
    ASSIGN_OR_RETURN(std::unique_ptr<S3Store> store, S3Store::Open(bucket, std::move(o)));
    return std::unique_ptr<ObjectStore>(std::move(store));
  }
  return Invalid("unsupported storage '" + std::string(storage) + "' (expected file, mem or s3)");
}

}  // namespace tessera
