// Small helpers shared by the metadata operations, all inside one KvTxn.
#pragma once

#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/kv.h"
#include "meta/attr.h"

namespace tessera::meta_internal {

// Loads an inode's attributes; kNotFound when the inode does not exist.
// Reads `keys` in one batch, so that the Gets which follow are answered from
// the transaction's snapshot (BufferedKvTxn remembers reads): one round trip
// instead of one per key on a networked engine.
// Page size of scans over everything stored under one inode; reading the
// first page ahead (ScanInode) makes DeleteInode's first scan free.
inline constexpr size_t kInodeScanPage = 256;
// Reads the first page of an inode's keys, attributes included, so that the
// LoadAttr and DeleteInode which follow cost no further round trip.
Status ScanInode(KvTxn& txn, InodeId ino);
Status Prefetch(KvTxn& txn, const std::vector<std::string>& keys);
Status LoadAttr(KvTxn& txn, InodeId ino, Attr* out);
void PutAttr(KvTxn& txn, InodeId ino, const Attr& attr);
// Reads a counter (0 when absent).
Result<int64_t> GetCounter(KvTxn& txn, std::string_view name);
// Adds delta to a counter and returns the new value. Reading it makes the
// transaction conflict with every other change to the counter: only for
// checks against a quota.
Result<int64_t> AddCounter(KvTxn& txn, std::string_view name, int64_t delta);
// Adds delta to a counter without reading it, so that mounts creating and
// removing files at once do not conflict over the volume's usage.
void IncrementCounter(KvTxn& txn, std::string_view name, int64_t delta);
// The slices a chunk's records reference, each once (no holes).
std::vector<SliceRef> DistinctSlices(const std::vector<SliceRecord>& records);
// Slice reference counts (key K<id><size>; absent = one reference): a chunk
// that starts referencing a slice adds one, a chunk that is deleted releases
// one; a slice released to zero is appended to *freed and recorded for
// deletion (keys::FreedSlice) in the same transaction.
Status AddSliceRef(KvTxn& txn, const SliceRef& slice);
Status ReleaseSlice(KvTxn& txn, const SliceRef& slice, std::vector<SliceRef>* freed);
// Deletes chunks first_chunk.. of a file, releasing their slices.
Status DeleteChunks(KvTxn& txn, InodeId ino, uint32_t first_chunk, std::vector<SliceRef>* freed);
// Removes every key of a non-directory inode (attributes, chunks, symlink
// target) and appends the slices it referenced to *freed. The inode is out
// of the usage counters already: the unlink of its last name took it out.
Status DeleteInode(KvTxn& txn, InodeId ino, std::vector<SliceRef>* freed);
// One key stored under an inode, as DeleteInode deletes it (a chunk
// releases its slices; the attributes and lock records are left), for a
// caller that read the inode's keys itself.
Status DeleteInodeKey(KvTxn& txn, InodeId ino, const KeyValue& kv, std::vector<SliceRef>* freed);
// Takes an inode out of the volume's usage counters, when its last name goes.
void UncountInode(KvTxn& txn, const Attr& attr);
// Removes every extended attribute of an inode (DeleteInode does it too;
// directories removed by rmdir or rename-over call it directly).
Status DeleteXattrs(KvTxn& txn, InodeId ino);
// Checks a name for a new entry: kNameTooLong past 255 bytes, kInvalid for
// "", ".", ".." or a name containing '/' or NUL.
Status CheckName(std::string_view name);
// kNotPermitted for ".trash" at the root, the trash's name.
Status CheckNotReserved(InodeId parent, std::string_view name);
// kNotPermitted when `dir` (attributes `a`) is the trash, one of its hour
// directories or a directory in one: nothing is created or moved there.
Status CheckNotInTrash(InodeId dir, const Attr& a);

}  // namespace tessera::meta_internal
