// EncryptStore wraps an object store and encrypts every object with
// AES-256-GCM under the volume's data key, a fresh random 96-bit nonce per
// Put, and the object key as additional authenticated data. Stored layout:
//
//   [0xE1 format byte][nonce, 12 bytes][ciphertext, as long as the data][tag, 16 bytes]
//
// so a stored object is kOverhead (29) bytes longer than its data. An
// object that fails authentication (another data key, any changed, added or
// removed byte, or bytes moved from another key) is kCorrupt naming the key:
// wrong bytes are never returned.
//
// Get with a range fetches and decrypts the whole object (GCM authenticates
// the whole object only) and returns the range. Head and List report the
// size of the data (stored size minus kOverhead) without fetching anything;
// Head of a stored object shorter than kOverhead is kCorrupt. Other errors
// are the wrapped store's. Thread-safe as the store it wraps.
#pragma once

#include <memory>
#include <string>

#include "object/object_store.h"

namespace tessera {

class EncryptStore : public ObjectStore {
 public:
  static constexpr char kFormat = static_cast<char>(0xE1);
  static constexpr size_t kOverhead = 1 + 12 + 16;

  // `data_key` must be kDataKeySize (32) random bytes (kInvalid otherwise).
  static Result<std::unique_ptr<EncryptStore>> Open(std::unique_ptr<ObjectStore> inner,
                                                    std::string data_key);

  std::string Describe() const override { return inner_->Describe(); }
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset = 0, int64_t length = -1) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override { return inner_->Delete(key); }
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override;

 private:
  EncryptStore(std::unique_ptr<ObjectStore> inner, std::string data_key);
  // The data in `stored`, or kCorrupt naming `key`.
  Result<std::string> Decrypt(std::string_view key, std::string_view stored) const;

  const std::unique_ptr<ObjectStore> inner_;
  const std::string data_key_;
};

}  // namespace tessera
