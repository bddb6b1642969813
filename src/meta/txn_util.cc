#include "meta/txn_util.h"

#include <set>

#include "common/coding.h"
#include "meta/keys.h"

namespace tessera::meta_internal {

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

Status DeleteInode(KvTxn& txn, InodeId ino, const Attr& attr, std::vector<SliceRef>* freed) {
  if (attr.IsFile()) {
    std::set<uint64_t> seen;
    std::string from = keys::ChunksBegin(ino);
    const std::string end = keys::ChunksEnd(ino);
    while (true) {
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 256));
      for (const auto& kv : page.items) {
        ASSIGN_OR_RETURN(auto records, DecodeChunk(kv.value));
        for (const auto& r : records) {
          if (r.id.value() != 0 && seen.insert(r.id.value()).second) {
            freed->push_back({r.id, r.size});
          }
        }
        txn.Delete(kv.key);
      }
      if (!page.more || page.items.empty()) break;
      from = page.items.back().key + '\0';
    }
    ASSIGN_OR_RETURN(auto space, AddCounter(txn, keys::kUsedSpace,
                                            -static_cast<int64_t>(SpaceOf(attr.length))));
    (void)space;
  }
  if (S_ISLNK(attr.mode)) txn.Delete(keys::Symlink(ino));
  txn.Delete(keys::Attr(ino));
  ASSIGN_OR_RETURN(auto inodes, AddCounter(txn, keys::kUsedInodes, -1));
  (void)inodes;
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
