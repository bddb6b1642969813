// The file format of one block in the disk cache, and how a key becomes a
// file name. Used only by DiskBlockCache; kept apart so that the format can
// be tested (and read by tools) without the cache's index and threads.
//
// File layout (integers big-endian, as everywhere in Tessera):
//
//   offset  size  field
//   0       4     magic "TCBF" (Tessera cache block file)
//   4       4     format version, 1
//   8       8     block length L
//   16      4     CRC32C of bytes [0, 16): a torn or flipped header is caught
//   20      4     reserved, 0
//   24      4*P   CRC32C of each 32 KiB piece of the block, P = ceil(L / 32 KiB)
//                 (the last piece may be shorter)
//   24+4P   L     the block
//
// Per-piece checksums let a 128 KiB read of a 4 MiB block verify 128 KiB,
// not 4 MiB. The data follows the checksums rather than interleaving with
// them so that the block is one contiguous range of the file (for sendfile
// to cache-group peers).
//
// All functions are thread-safe (they share no state) and block on the
// local file system.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tessera::blockfile {

inline constexpr uint64_t kPieceSize = 32 * 1024;
inline constexpr uint64_t kHeaderSize = 24;
inline constexpr uint32_t kVersion = 1;
// Temporary files start with this; escaped keys never do (no '.').
inline constexpr std::string_view kTempPrefix = ".tmp.";
// Longest file name most local file systems accept.
inline constexpr size_t kMaxNameLength = 255;

inline uint64_t PieceCount(uint64_t block_len) {
  return (block_len + kPieceSize - 1) / kPieceSize;
}
// Size of the cache file of a block of `block_len` bytes.
inline uint64_t FileSize(uint64_t block_len) {
  return kHeaderSize + 4 * PieceCount(block_len) + block_len;
}

// A file name for `key`: [A-Za-z0-9_-] kept, every other byte as %XX
// (upper-case hex). Reversible, never "." or "..", never starts with
// kTempPrefix. Empty for an empty key. May exceed kMaxNameLength.
std::string EscapeKey(std::string_view key);
// The key whose EscapeKey is `name`; nullopt when `name` is not exactly what
// EscapeKey produces (so a stray file is never mistaken for a block).
std::optional<std::string> UnescapeKey(std::string_view name);

// Writes `block` as a complete cache file at `path`: into a temporary file
// in the same directory, then rename()d over `path`, so the path holds the
// old file or the new one, never a part. No fsync: after a power cut a file
// may hold garbage, which its checksums catch. Errors come from FromErrno
// (kNotFound when the directory is missing, kNoSpace, kIo...) naming the
// path; the temporary file is removed on failure.
Status Write(const std::string& path, std::string_view block);

// Checks the header of an open cache file and that the file's size matches
// it; returns the block length. kCorrupt for a bad magic, version or header
// checksum or a wrong size; kIo when it cannot be read.
Result<uint64_t> ReadHeader(int fd);

// Reads bytes [offset, offset + length) of the block in open cache file
// `fd`, which the caller believes holds `block_len` bytes, into `out`. Reads
// and verifies only the 32 KiB pieces covering the range (and the header).
// kCorrupt when the header is bad or names another length, a piece fails
// its checksum, or the file is too short; kInvalid when the range is not
// inside block_len; kIo for a read error. On error `out` holds garbage.
Status ReadRange(int fd, uint64_t block_len, uint64_t offset, uint64_t length, char* out);

}  // namespace tessera::blockfile
