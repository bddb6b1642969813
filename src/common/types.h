// Distinct integer types for the identifiers of the file system, so that an
// inode number cannot be passed where a slice id is expected.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace tessera {

template <typename Tag>
class StrongId {
 public:
  constexpr StrongId() = default;
  constexpr explicit StrongId(uint64_t v) : value_(v) {}
  constexpr uint64_t value() const { return value_; }
  constexpr auto operator<=>(const StrongId&) const = default;

 private:
  uint64_t value_ = 0;
};

using InodeId = StrongId<struct InodeTag>;
using SliceId = StrongId<struct SliceTag>;
using SessionId = StrongId<struct SessionTag>;

inline constexpr InodeId kRootInode{1};
// The trash: a directory ".trash" at the root (not listed there), holding a
// directory per hour whose inode is kTrashInode + 1 + hours since the epoch.
// Inode numbers handed out to files never reach this range.
inline constexpr InodeId kTrashInode{0x7FFF'0000'0000'0000};
inline constexpr const char* kTrashName = ".trash";
inline bool IsTrashDir(InodeId ino) { return ino.value() >= kTrashInode.value(); }
// A chunk covers this many bytes of a file (fixed by the data format).
inline constexpr uint64_t kChunkSize = 64ull << 20;
// Chunk indexes are 32-bit: 2^32 chunks of 64 MiB (256 PiB) per file.
inline constexpr uint64_t kMaxFileSize = kChunkSize << 32;

}  // namespace tessera

template <typename Tag>
struct std::hash<tessera::StrongId<Tag>> {
  size_t operator()(const tessera::StrongId<Tag>& id) const noexcept {
    return std::hash<uint64_t>()(id.value());
  }
};
