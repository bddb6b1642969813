#include "object/compress_store.h"

#include <lz4.h>
#include <zstd.h>

#include <cstdio>

#include "common/coding.h"
#include "common/crc32c.h"

namespace tessera {
namespace {

// Blocks are compressed on the write path of every mount: zstd's fastest
// level keeps most of its ratio at several times the speed of the default.
constexpr int kZstdLevel = 1;
// lz4 cannot expand data more than ~255 times: a header claiming more is
// damaged, and must not make us allocate what it claims.
constexpr uint64_t kLz4MaxRatio = 256;

// One compression and one decompression context per thread, reused across
// objects (creating them costs more than compressing a small object).
ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> ctx(ZSTD_createCCtx(),
                                                                      ZSTD_freeCCtx);
  return ctx.get();
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(),
                                                                      ZSTD_freeDCtx);
  return ctx.get();
}

// Compresses `data` after the header already in `out`; false when the
// result would not be smaller than the data (then `out` is left as it was).
bool CompressInto(Compression algorithm, std::string_view data, std::string* out) {
  const size_t header = out->size();
  size_t n = 0;
  if (algorithm == Compression::kLz4) {
    if (data.empty() || data.size() > LZ4_MAX_INPUT_SIZE) return false;
    const int bound = LZ4_compressBound(static_cast<int>(data.size()));
    out->resize(header + static_cast<size_t>(bound));
    const int c = LZ4_compress_default(data.data(), out->data() + header,
                                       static_cast<int>(data.size()), bound);
    n = c > 0 ? static_cast<size_t>(c) : data.size();
  } else if (algorithm == Compression::kZstd) {
    if (data.empty() || ThreadCCtx() == nullptr) return false;
    out->resize(header + ZSTD_compressBound(data.size()));
    const size_t c = ZSTD_compressCCtx(ThreadCCtx(), out->data() + header, out->size() - header,
                                       data.data(), data.size(), kZstdLevel);
    n = ZSTD_isError(c) ? data.size() : c;
  } else {
    return false;
  }
  if (n >= data.size()) {
    out->resize(header);
    return false;
  }
  out->resize(header + n);
  return true;
}

}  // namespace

const char* CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone: return "none";
    case Compression::kLz4: return "lz4";
    case Compression::kZstd: return "zstd";
  }
  return "unknown";
}

Result<Compression> ParseCompression(std::string_view name) {
  for (Compression c : {Compression::kNone, Compression::kLz4, Compression::kZstd}) {
    if (name == CompressionName(c)) return c;
  }
  return Invalid("unknown compression '" + std::string(name) + "' (expected lz4, zstd or none)");
}

CompressStore::CompressStore(std::unique_ptr<ObjectStore> inner, Compression algorithm)
    : inner_(std::move(inner)), algorithm_(algorithm) {}

Status CompressStore::CorruptObject(std::string_view key, const std::string& why) const {
  return Corrupt("compressed object " + std::string(key) + " in " + Describe() + ": " + why);
}

Status CompressStore::Put(std::string_view key, std::string_view data) {
  std::string stored;
  stored.push_back(kFormat);
  stored.push_back(static_cast<char>(algorithm_));
  PutBig64(&stored, data.size());
  PutBig32(&stored, crc32c::Value(data));
  if (!CompressInto(algorithm_, data, &stored)) {
    stored[1] = static_cast<char>(Compression::kNone);
    stored.append(data);
  }
  return inner_->Put(key, stored);
}

Result<std::string> CompressStore::Get(std::string_view key, uint64_t offset, int64_t length) {
  ASSIGN_OR_RETURN(std::string stored, inner_->Get(key));
  if (stored.size() < kHeaderSize) {
    return CorruptObject(key, std::to_string(stored.size()) + " bytes is shorter than its header");
  }
  if (stored[0] != kFormat) return CorruptObject(key, "unknown format byte");
  const uint64_t length_in_header = GetBig64(stored.data() + 2);
  const uint32_t crc = GetBig32(stored.data() + kHeaderSize - 4);
  const std::string_view payload = std::string_view(stored).substr(kHeaderSize);
  std::string data;
  switch (static_cast<Compression>(stored[1])) {
    case Compression::kNone:
      if (payload.size() != length_in_header) {
        return CorruptObject(key, "holds " + std::to_string(payload.size()) +
                                      " bytes, its header says " +
                                      std::to_string(length_in_header));
      }
      stored.erase(0, kHeaderSize);  // no copy of what may be megabytes
      data = std::move(stored);
      break;
    case Compression::kLz4: {
      if (length_in_header > LZ4_MAX_INPUT_SIZE ||
          length_in_header > payload.size() * kLz4MaxRatio + 64 || payload.size() > INT32_MAX) {
        return CorruptObject(key, "impossible length " + std::to_string(length_in_header));
      }
      data.resize(length_in_header);
      const int n =
          LZ4_decompress_safe(payload.data(), data.data(), static_cast<int>(payload.size()),
                              static_cast<int>(data.size()));
      if (n < 0 || static_cast<uint64_t>(n) != length_in_header) {
        return CorruptObject(key, "lz4 data does not decompress to its length");
      }
      break;
    }
    case Compression::kZstd: {
      // The frame records its own length: it must agree with the header
      // before anything that large is allocated.
      if (ZSTD_getFrameContentSize(payload.data(), payload.size()) != length_in_header) {
        return CorruptObject(key, "zstd frame does not match its header");
      }
      if (ThreadDCtx() == nullptr) return Internal("cannot create a zstd context");
      data.resize(length_in_header);
      const size_t n = ZSTD_decompressDCtx(ThreadDCtx(), data.data(), data.size(), payload.data(),
                                           payload.size());
      if (ZSTD_isError(n) || n != length_in_header) {
        return CorruptObject(key, "zstd data does not decompress to its length");
      }
      break;
    }
    default:
      return CorruptObject(key,
                           "unknown algorithm " + std::to_string(static_cast<uint8_t>(stored[1])));
  }
  if (crc32c::Value(data) != crc) {
    return CorruptObject(key, "checksum mismatch");
  }
  if (offset >= data.size()) return std::string();
  if (offset == 0 && (length < 0 || static_cast<uint64_t>(length) >= data.size())) return data;
  return data.substr(offset, length < 0 ? std::string::npos : static_cast<size_t>(length));
}

Result<ObjectInfo> CompressStore::Head(std::string_view key) {
  ASSIGN_OR_RETURN(ObjectInfo info, inner_->Head(key));
  ASSIGN_OR_RETURN(std::string header, inner_->Get(key, 0, kHeaderSize));
  if (header.size() < kHeaderSize) {
    return CorruptObject(key, std::to_string(header.size()) + " bytes is shorter than its header");
  }
  if (header[0] != kFormat) return CorruptObject(key, "unknown format byte");
  if (static_cast<uint8_t>(header[1]) > static_cast<uint8_t>(Compression::kZstd)) {
    return CorruptObject(key,
                         "unknown algorithm " + std::to_string(static_cast<uint8_t>(header[1])));
  }
  info.size = GetBig64(header.data() + 2);
  return info;
}

}  // namespace tessera
