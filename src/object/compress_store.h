// CompressStore wraps an object store and compresses every object with lz4
// or zstd on Put, decompressing on Get. Stored layout:
//
//   [0xC1 format byte][algorithm: 0 none, 1 lz4, 2 zstd][data length, 8 bytes
//   big-endian][CRC32C of the data, 4 bytes big-endian][payload]
//
// The payload is the compressed data, or the data itself (algorithm 0) when
// compressing would not make it smaller (random or already compressed
// data, empty objects): such objects cost kHeaderSize bytes and no
// decompression. Readers decode any algorithm, whatever the store was
// opened with. lz4 and zstd frames carry no checksum of their own, so the
// header does: a damaged payload that still decompresses is caught too. An
// object too short for the header, with an unknown format byte or
// algorithm, whose payload does not decompress to exactly the length in
// the header, or whose data fails the checksum is kCorrupt naming the key
// (EIO for the read that needs it, nothing else).
//
// Get with a range fetches and decompresses the whole object (a compressed
// stream cannot be entered in the middle) and returns the range. Head
// reports the data length from the header: it is a Head of the wrapped
// store (for mtime) plus a ranged Get of the header, which over an
// EncryptStore fetches the whole object. List passes through and reports
// the stored sizes (header and payload), since knowing the data lengths
// would take one Get per object. Thread-safe as the store it wraps.
#pragma once

#include <memory>
#include <string>

#include "object/object_store.h"

namespace tessera {

enum class Compression : uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };

// "none", "lz4" or "zstd".
const char* CompressionName(Compression c);
// The reverse; kInvalid naming the accepted values for anything else.
Result<Compression> ParseCompression(std::string_view name);

class CompressStore : public ObjectStore {
 public:
  static constexpr char kFormat = static_cast<char>(0xC1);
  static constexpr size_t kHeaderSize = 14;

  // Objects are compressed with `algorithm` (kNone stores every object as
  // it is, behind the header).
  CompressStore(std::unique_ptr<ObjectStore> inner, Compression algorithm);

  std::string Describe() const override { return inner_->Describe(); }
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset = 0, int64_t length = -1) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override { return inner_->Delete(key); }
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override {
    return inner_->List(prefix, start_after, limit);
  }

 private:
  Status CorruptObject(std::string_view key, const std::string& why) const;

  const std::unique_ptr<ObjectStore> inner_;
  const Compression algorithm_;
};

}  // namespace tessera
