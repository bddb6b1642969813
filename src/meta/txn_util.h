// Small helpers shared by the metadata operations, all inside one KvTxn.
#pragma once

#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/kv.h"
#include "meta/attr.h"

namespace tessera::meta_internal {

// Loads an inode's attributes; kNotFound when the inode does not exist.
Status LoadAttr(KvTxn& txn, InodeId ino, Attr* out);
void PutAttr(KvTxn& txn, InodeId ino, const Attr& attr);
// Reads a counter (0 when absent).
Result<int64_t> GetCounter(KvTxn& txn, std::string_view name);
// Adds delta to a counter and returns the new value.
Result<int64_t> AddCounter(KvTxn& txn, std::string_view name, int64_t delta);
// Removes every key of a non-directory inode (attributes, chunks, symlink
// target), adjusts the usage counters and appends the slices it referenced
// to *freed.
Status DeleteInode(KvTxn& txn, InodeId ino, const Attr& attr, std::vector<SliceRef>* freed);
// Checks a name for a new entry: kNameTooLong past 255 bytes, kInvalid for
// "", ".", ".." or a name containing '/' or NUL.
Status CheckName(std::string_view name);

}  // namespace tessera::meta_internal
