#include "meta/txn_util.h"

#include <algorithm>

#include "common/coding.h"
#include "meta/keys.h"

namespace tessera::meta_internal {

Status Prefetch(KvTxn& txn, const std::vector<std::string>& keys) {
  return txn.BatchGet(keys).status();
}

Status ScanInode(KvTxn& txn, InodeId ino) {
  return txn.Scan(keys::InodeBegin(ino), keys::InodeEnd(ino), kInodeScanPage).status();
}

Status LoadAttr(KvTxn& txn, InodeId ino, Attr* out) {
  ASSIGN_OR_RETURN(auto value, txn.Get(keys::Attr(ino)));
  if (!value) return NotFound("inode " + std::to_string(ino.value()) + " does not exist");
  ASSIGN_OR_RETURN(*out, DecodeAttr(*value));
  return Status::Ok();
}

void PutAttr(KvTxn& txn, InodeId ino, const Attr& attr) {
  txn.Put(keys::Attr(ino), EncodeAttr(attr));
}

Result<int64_t> GetCounter(KvTxn& txn, std::string_view name) {
  ASSIGN_OR_RETURN(auto value, txn.Get(keys::Counter(name)));
  if (!value) return int64_t{0};
  if (value->size() != 8) return Corrupt("counter '" + std::string(name) + "' is malformed");
  return static_cast<int64_t>(GetBig64(value->data()));
}

Result<int64_t> AddCounter(KvTxn& txn, std::string_view name, int64_t delta) {
  ASSIGN_OR_RETURN(int64_t v, GetCounter(txn, name));
  v += delta;
  std::string encoded;
  PutBig64(&encoded, static_cast<uint64_t>(v));
  txn.Put(keys::Counter(name), encoded);
  return v;
}

void IncrementCounter(KvTxn& txn, std::string_view name, int64_t delta) {
  txn.Increment(keys::Counter(name), delta);
}

std::vector<SliceRef> DistinctSlices(const std::vector<SliceRecord>& records) {
  std::vector<SliceRef> out;
  for (const auto& r : records) {
    if (r.id.value() == 0) continue;
    SliceRef ref{r.id, r.size};
    if (std::find(out.begin(), out.end(), ref) == out.end()) out.push_back(ref);
  }
  return out;
}

Status AddSliceRef(KvTxn& txn, const SliceRef& slice) {
  const std::string key = keys::SliceRefs(slice.id, slice.size);
  ASSIGN_OR_RETURN(auto value, txn.Get(key));
  uint64_t refs = value && value->size() == 8 ? GetBig64(value->data()) : 1;
  std::string encoded;
  PutBig64(&encoded, refs + 1);
  txn.Put(key, encoded);
  return Status::Ok();
}

Status ReleaseSlice(KvTxn& txn, const SliceRef& slice, std::vector<SliceRef>* freed) {
  const std::string key = keys::SliceRefs(slice.id, slice.size);
  ASSIGN_OR_RETURN(auto value, txn.Get(key));
  uint64_t refs = value && value->size() == 8 ? GetBig64(value->data()) : 1;
  if (refs <= 1) {
    if (value) txn.Delete(key);
    txn.Put(keys::FreedSlice(slice.id, slice.size), "");
    freed->push_back(slice);
  } else if (refs == 2) {
    txn.Delete(key);  // back to the implicit single reference
  } else {
    std::string encoded;
    PutBig64(&encoded, refs - 1);
    txn.Put(key, encoded);
  }
  return Status::Ok();
}

Status DeleteChunks(KvTxn& txn, InodeId ino, uint32_t first_chunk, std::vector<SliceRef>* freed) {
  std::string from = keys::Chunk(ino, first_chunk);
  const std::string end = keys::ChunksEnd(ino);
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 256));
    for (const auto& kv : page.items) {
      ASSIGN_OR_RETURN(auto records, DecodeChunk(kv.value));
      for (const SliceRef& slice : DistinctSlices(records)) {
        RETURN_IF_ERROR(ReleaseSlice(txn, slice, freed));
      }
      txn.Delete(kv.key);
    }
    if (!page.more || page.items.empty()) break;
    from = page.items.back().key + '\0';
  }
  return Status::Ok();
}

Status DeleteInodeKey(KvTxn& txn, InodeId ino, const KeyValue& kv, std::vector<SliceRef>* freed) {
  // Lock records (F, P) stay, as their holders own them; the attributes go
  // last (DeleteInodeAttr).
  const size_t kind_at = keys::InodePrefix(ino).size();
  const char kind = kv.key.size() > kind_at ? kv.key[kind_at] : 0;
  if (kind == 'C') {
    ASSIGN_OR_RETURN(auto records, DecodeChunk(kv.value));
    for (const SliceRef& slice : DistinctSlices(records)) {
      RETURN_IF_ERROR(ReleaseSlice(txn, slice, freed));
    }
  } else if (kind != 'S' && kind != 'X' && kind != 'T') {
    return Status::Ok();
  }
  txn.Delete(kv.key);
  return Status::Ok();
}

void UncountInode(KvTxn& txn, const Attr& attr) {
  if (attr.IsFile()) {
    IncrementCounter(txn, keys::kUsedSpace, -static_cast<int64_t>(SpaceOf(attr.length)));
  }
  IncrementCounter(txn, keys::kUsedInodes, -1);
}

Status DeleteInode(KvTxn& txn, InodeId ino, std::vector<SliceRef>* freed) {
  // One range scan over everything stored under the inode (chunks, symlink
  // target, xattrs) instead of one per kind: a round trip each on a
  // networked engine.
  std::string from = keys::InodeBegin(ino);
  const std::string end = keys::InodeEnd(ino);
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, kInodeScanPage));
    for (const auto& kv : page.items) RETURN_IF_ERROR(DeleteInodeKey(txn, ino, kv, freed));
    if (!page.more || page.items.empty()) break;
    from = page.items.back().key + '\0';
  }
  txn.Delete(keys::Attr(ino));
  return Status::Ok();
}

Status DeleteXattrs(KvTxn& txn, InodeId ino) {
  std::string from = keys::XattrsBegin(ino);
  const std::string end = keys::XattrsEnd(ino);
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 256));
    for (const auto& kv : page.items) txn.Delete(kv.key);
    if (!page.more || page.items.empty()) break;
    from = page.items.back().key + '\0';
  }
  return Status::Ok();
}

Status CheckNotReserved(InodeId parent, std::string_view name) {
  if (parent == kRootInode && name == kTrashName) {
    return Status(StatusCode::kNotPermitted, "'.trash' at the root is the trash's name");
  }
  return Status::Ok();
}

Status CheckNotInTrash(InodeId dir, const Attr& a) {
  if (IsTrashDir(dir) || IsTrashDir(a.parent)) {
    return Status(StatusCode::kNotPermitted, "the trash is read-only");
  }
  return Status::Ok();
}

Status CheckName(std::string_view name) {
  if (name.size() > 255) return Status(StatusCode::kNameTooLong, "name longer than 255 bytes");
  if (name.empty() || name == "." || name == ".." ||
      name.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos) {
    return Invalid("invalid file name");
  }
  return Status::Ok();
}

}  // namespace tessera::meta_internal
