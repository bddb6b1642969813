// File data records (chunks of slice records), attribute changes including
// truncate, and the open-file bookkeeping that keeps unlinked files alive.
#include <algorithm>

#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::AddCounter;
using meta_internal::DeleteInode;
using meta_internal::GetCounter;
using meta_internal::LoadAttr;
using meta_internal::PutAttr;

namespace {

// Adjusts the used-space counter for a length change, enforcing the capacity.
Status ChargeSpace(KvTxn& txn, uint64_t capacity, uint64_t old_length, uint64_t new_length) {
  int64_t delta = static_cast<int64_t>(SpaceOf(new_length)) - static_cast<int64_t>(SpaceOf(old_length));
  if (delta == 0) return Status::Ok();
  ASSIGN_OR_RETURN(int64_t used, AddCounter(txn, keys::kUsedSpace, delta));
  if (delta > 0 && capacity > 0 && static_cast<uint64_t>(used) > capacity) {
    return Status(StatusCode::kNoSpace, "capacity quota of the volume reached");
  }
  return Status::Ok();
}

// Shrinks a file's chunks to `length`: chunks wholly past it are removed
// (their slices freed), and the chunk it ends in gets a hole record so the
// cut-off bytes read as zeros if the file grows again.
Status CutChunks(KvTxn& txn, InodeId ino, uint64_t length, std::vector<SliceRef>* freed) {
  const uint32_t first_dead = static_cast<uint32_t>((length + kChunkSize - 1) / kChunkSize);
  std::vector<uint64_t> freed_ids;
  std::string from = keys::Chunk(ino, first_dead);
  const std::string end = keys::ChunksEnd(ino);
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 256));
    for (const auto& kv : page.items) {
      ASSIGN_OR_RETURN(auto records, DecodeChunk(kv.value));
      for (const auto& r : records) {
        if (r.id.value() == 0) continue;
        if (std::find(freed_ids.begin(), freed_ids.end(), r.id.value()) != freed_ids.end()) continue;
        freed_ids.push_back(r.id.value());
        freed->push_back({r.id, r.size});
      }
      txn.Delete(kv.key);
    }
    if (!page.more || page.items.empty()) break;
    from = page.items.back().key + '\0';
  }
  const uint32_t pos = static_cast<uint32_t>(length % kChunkSize);
  if (pos != 0) {
    const std::string key = keys::Chunk(ino, static_cast<uint32_t>(length / kChunkSize));
    ASSIGN_OR_RETURN(auto chunk, txn.Get(key));
    if (chunk) {
      std::string updated = *chunk;
      AppendSliceRecord(&updated, {pos, SliceId(0), 0, 0, static_cast<uint32_t>(kChunkSize - pos)});
      txn.Put(key, updated);
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<SliceRecord>> Meta::ReadChunk(InodeId ino, uint32_t chunk_index) {
  std::vector<SliceRecord> out;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto value, txn.Get(keys::Chunk(ino, chunk_index)));
    if (!value) {
      out.clear();
      return Status::Ok();
    }
    ASSIGN_OR_RETURN(out, DecodeChunk(*value));
    return Status::Ok();
  }));
  return out;
}

Result<Attr> Meta::WriteSlice(InodeId ino, uint32_t chunk_index, const SliceRecord& slice,
                              int64_t mtime_ns) {
  if (static_cast<uint64_t>(slice.pos) + slice.len > kChunkSize) return Invalid("slice beyond its chunk");
  Attr out;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    RETURN_IF_ERROR(LoadAttr(txn, ino, &out));
    if (!out.IsFile()) return Invalid("not a regular file");
    const std::string key = keys::Chunk(ino, chunk_index);
    ASSIGN_OR_RETURN(auto chunk, txn.Get(key));
    std::string updated = chunk.value_or("");
    AppendSliceRecord(&updated, slice);
    txn.Put(key, updated);
    uint64_t end = uint64_t{chunk_index} * kChunkSize + slice.pos + slice.len;
    if (end > out.length) {
      RETURN_IF_ERROR(ChargeSpace(txn, settings_.capacity, out.length, end));
      out.length = end;
    }
    out.mtime_ns = out.ctime_ns = mtime_ns;
    PutAttr(txn, ino, out);
    return Status::Ok();
  }));
  return out;
}

Result<Attr> Meta::SetAttr(const Context&, InodeId ino, const SetAttrRequest& req) {
  Attr out;
  std::vector<SliceRef> freed;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    freed.clear();
    RETURN_IF_ERROR(LoadAttr(txn, ino, &out));
    int64_t now = NowNanos();
    if (req.mode) out.mode = (out.mode & S_IFMT) | (*req.mode & 07777);
    if (req.uid) out.uid = *req.uid;
    if (req.gid) out.gid = *req.gid;
    if (req.atime_ns) out.atime_ns = *req.atime_ns;
    if (req.mtime_ns) out.mtime_ns = *req.mtime_ns;
    if (req.size) {
      if (out.IsDir()) return Status(StatusCode::kIsDir, "cannot truncate a directory");
      if (!out.IsFile()) return Invalid("not a regular file");
      if (*req.size != out.length) {
        if (*req.size < out.length) RETURN_IF_ERROR(CutChunks(txn, ino, *req.size, &freed));
        RETURN_IF_ERROR(ChargeSpace(txn, settings_.capacity, out.length, *req.size));
        out.length = *req.size;
      }
      if (!req.mtime_ns) out.mtime_ns = now;
    }
    out.ctime_ns = now;
    PutAttr(txn, ino, out);
    return Status::Ok();
  }));
  FreeSlices(freed);
  return out;
}

void Meta::OnOpen(InodeId ino) {
  std::lock_guard lock(open_mu_);
  open_counts_[ino]++;
}

bool Meta::IsOpen(InodeId ino) {
  std::lock_guard lock(open_mu_);
  auto it = open_counts_.find(ino);
  return it != open_counts_.end() && it->second > 0;
}

Status Meta::OnClose(InodeId ino) {
  {
    std::lock_guard lock(open_mu_);
    auto it = open_counts_.find(ino);
    if (it != open_counts_.end() && --it->second <= 0) open_counts_.erase(it);
    if (open_counts_.count(ino) > 0) return Status::Ok();
  }
  // Reclaim the file if it was unlinked while open here.
  std::vector<SliceRef> freed;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    freed.clear();
    ASSIGN_OR_RETURN(auto marker, txn.Get(keys::SustainedInode(session_, ino)));
    if (!marker) return Status::Ok();
    Attr a;
    Status st = LoadAttr(txn, ino, &a);
    if (st.ok() && a.nlink == 0 && !IsOpen(ino)) RETURN_IF_ERROR(DeleteInode(txn, ino, a, &freed));
    if (!st.ok() && !st.Is(StatusCode::kNotFound)) return st;
    if (!IsOpen(ino)) txn.Delete(keys::SustainedInode(session_, ino));
    return Status::Ok();
  }));
  FreeSlices(freed);
  return Status::Ok();
}

}  // namespace tessera
