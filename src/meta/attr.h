// The records the metadata layer stores: inode attributes, directory entries,
// slice records of a chunk, and their binary encodings. Encodings start with
// a version byte where a record may grow, so newer code can read old volumes.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/slice.h"
#include "common/status.h"
#include "common/types.h"

namespace tessera {

// Who makes a call: the caller's credentials as the kernel reports them.
struct Context {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t pid = 0;
};

struct Attr {
  uint32_t mode = 0;  // file type bits (S_IFMT) and permission bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint32_t nlink = 0;
  uint64_t length = 0;  // bytes for files, target length for symlinks
  uint32_t rdev = 0;
  InodeId parent;  // for directories: the parent directory ('..')

  bool IsDir() const { return S_ISDIR(mode); }
  bool IsFile() const { return S_ISREG(mode); }
  bool operator==(const Attr&) const = default;
};

std::string EncodeAttr(const Attr& a);
Result<Attr> DecodeAttr(std::string_view data);

// A directory entry's value: the child's type bits and inode.
struct DirEntryValue {
  uint32_t type = 0;  // S_IFMT bits of the child
  InodeId inode;
};
std::string EncodeEntry(const DirEntryValue& e);
Result<DirEntryValue> DecodeEntry(std::string_view data);

inline constexpr size_t kSliceRecordSize = 24;

// A chunk value is the records appended in write order, oldest first.
void AppendSliceRecord(std::string* chunk, const SliceRecord& s);
Result<std::vector<SliceRecord>> DecodeChunk(std::string_view data);

// Bytes a file of `length` counts against the volume's used space.
inline uint64_t SpaceOf(uint64_t length) { return (length + 4095) & ~uint64_t{4095}; }

}  // namespace tessera
