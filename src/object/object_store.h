// An object store: a flat namespace of immutable byte objects named by
// string keys ('/' has no special meaning to callers). Implementations: a
// local directory ("file"), memory ("mem", for tests) and an S3 bucket
// ("s3"); wrappers (prefix, compress, encrypt, retry, limit) implement the
// same interface.
//
// All methods are thread-safe and block until done. Errors: kNotFound for an
// absent object (Get/Head), kIo for a failed operation, kUnavailable for a
// store that cannot be reached (retryable); messages name the key and store.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tessera {

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

struct ListPage {
  std::vector<ObjectInfo> objects;  // ascending by key
  bool more = false;                // more keys follow the last one returned
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // A description for messages and `tessera status`, e.g. "file:///data/bucket/".
  virtual std::string Describe() const = 0;
  // Stores `data` under `key`, replacing any object there. Readers see the
  // old object or the new one, never a part.
  virtual Status Put(std::string_view key, std::string_view data) = 0;
  // Bytes [offset, offset + length) of the object (length < 0: to its end).
  // Returns fewer bytes only when the object ends first.
  virtual Result<std::string> Get(std::string_view key, uint64_t offset = 0,
                                  int64_t length = -1) = 0;
  virtual Result<ObjectInfo> Head(std::string_view key) = 0;
  // Removes the object. Deleting an absent object succeeds.
  virtual Status Delete(std::string_view key) = 0;
  // Objects whose key starts with `prefix` and sorts after `start_after`,
  // ascending, at most `limit` (limit 0: 1000).
  virtual Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                                size_t limit) = 0;
};

// What a store needs besides its bucket: credentials and TLS settings for
// "s3" (other types ignore them).
struct ObjectStoreOptions {
  std::string access_key = {};
  std::string secret_key = {};
  std::string session_token = {};
  std::string region = {};  // "" = from the bucket URL, else us-east-1
  bool skip_tls_verify = false;
};

// Opens a store by type and bucket: "file" with a directory path (created if
// missing; kPermission if it cannot be written), "mem" with a name (stores
// with the same name are shared within the process), "s3" with a bucket URL
// (s3_store.h; keys from `options`, else from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; no request is sent).
// kInvalid for an unknown type, a bad URL or missing S3 credentials.
Result<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view storage,
                                                     std::string_view bucket,
                                                     const ObjectStoreOptions& options = {});

}  // namespace tessera
