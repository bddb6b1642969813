// File data records (chunks of slice records), attribute changes including
// truncate, and the open-file bookkeeping that keeps unlinked files alive.
#include <linux/falloc.h>

#include <algorithm>
#include <map>

#include "common/chunk_view.h"

#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::AddCounter;
using meta_internal::AddSliceRef;
using meta_internal::DeleteChunks;
using meta_internal::DistinctSlices;
using meta_internal::DeleteInode;
using meta_internal::GetCounter;
using meta_internal::LoadAttr;
using meta_internal::PutAttr;

namespace {

// Adjusts the used-space counter for a length change, enforcing the capacity.
// A file with no name left is out of the counters (its unlink took it out),
// so writes to it while it is still open are not counted either.
Status ChargeSpace(KvTxn& txn, uint64_t capacity, const Attr& file, uint64_t new_length) {
  if (file.nlink == 0) return Status::Ok();
  int64_t delta = static_cast<int64_t>(SpaceOf(new_length)) - static_cast<int64_t>(SpaceOf(file.length));
  if (delta == 0) return Status::Ok();
  if (delta < 0 || capacity == 0) {
    meta_internal::IncrementCounter(txn, keys::kUsedSpace, delta);
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(int64_t used, AddCounter(txn, keys::kUsedSpace, delta));
  if (static_cast<uint64_t>(used) > capacity) {
    return Status(StatusCode::kNoSpace, "capacity quota of the volume reached");
  }
  return Status::Ok();
}

// Shrinks a file's chunks to `length`: chunks wholly past it are removed
// (their slices freed), and the chunk it ends in gets a hole record so the
// cut-off bytes read as zeros if the file grows again.
Status CutChunks(KvTxn& txn, InodeId ino, uint64_t length, std::vector<SliceRef>* freed) {
  const uint32_t first_dead = static_cast<uint32_t>((length + kChunkSize - 1) / kChunkSize);
  RETURN_IF_ERROR(DeleteChunks(txn, ino, first_dead, freed));
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

// Makes [off, off + len) of a file read as zeros by appending hole records
// to the chunks that hold data there.
Status AppendHoles(KvTxn& txn, InodeId ino, uint64_t off, uint64_t len) {
  while (len > 0) {
    const uint32_t chunk = static_cast<uint32_t>(off / kChunkSize);
    const uint32_t pos = static_cast<uint32_t>(off % kChunkSize);
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(len, kChunkSize - pos));
    const std::string key = keys::Chunk(ino, chunk);
    ASSIGN_OR_RETURN(auto value, txn.Get(key));
    if (value) {
      std::string updated = *value;
      AppendSliceRecord(&updated, {pos, SliceId(0), 0, 0, n});
      txn.Put(key, updated);
    }
    off += n;
    len -= n;
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<SliceRecord>> Meta::ReadChunk(InodeId ino, uint32_t chunk_index) {
  std::vector<SliceRecord> out;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
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

Result<Attr> Meta::WriteSlices(InodeId ino, const std::vector<ChunkSlice>& slices,
                               int64_t mtime_ns, std::vector<std::pair<uint32_t, size_t>>* records) {
  for (const ChunkSlice& s : slices) {
    if (uint64_t{s.record.pos} + s.record.len > kChunkSize) return Invalid("slice beyond its chunk");
  }
  Attr out;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    if (records) records->clear();
    RETURN_IF_ERROR(LoadAttr(txn, ino, &out));
    if (!out.IsFile()) return Invalid("not a regular file");
    // Each chunk is read and written once, however many slices it gets.
    std::map<uint32_t, std::string> chunks;
    uint64_t end = out.length;
    for (const ChunkSlice& s : slices) {
      auto it = chunks.find(s.chunk);
      if (it == chunks.end()) {
        ASSIGN_OR_RETURN(auto value, txn.Get(keys::Chunk(ino, s.chunk)));
        it = chunks.emplace(s.chunk, value.value_or("")).first;
      }
      AppendSliceRecord(&it->second, s.record);
      end = std::max(end, uint64_t{s.chunk} * kChunkSize + s.record.pos + s.record.len);
    }
    for (const auto& [chunk, value] : chunks) {
      txn.Put(keys::Chunk(ino, chunk), value);
      if (records) records->emplace_back(chunk, value.size() / kSliceRecordSize);
    }
    if (end > out.length) {
      RETURN_IF_ERROR(ChargeSpace(txn, settings_.capacity, out, end));
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
        RETURN_IF_ERROR(ChargeSpace(txn, settings_.capacity, out, *req.size));
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

Status Meta::TouchAtime(InodeId ino, int64_t atime_ns) {
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, ino, &a));
    if (a.atime_ns >= atime_ns) return Status::Ok();
    a.atime_ns = atime_ns;
    PutAttr(txn, ino, a);
    return Status::Ok();
  });
}

Result<Attr> Meta::Fallocate(InodeId ino, int mode, uint64_t off, uint64_t len) {
  constexpr int kKnown = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if ((mode & ~kKnown) != 0) return Status(StatusCode::kNotSupported, "fallocate mode not supported");
  if (len == 0 || off + len < off) return Invalid("bad fallocate range");
  if (off + len > kMaxFileSize) return Status(StatusCode::kTooBig, "file too large");
  Attr out;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    RETURN_IF_ERROR(LoadAttr(txn, ino, &out));
    if (out.IsDir()) return Status(StatusCode::kIsDir, "is a directory");
    if (!out.IsFile()) return Status(StatusCode::kNotSupported, "not a regular file");
    const int64_t now = NowNanos();
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
      // Only bytes inside the file hold data to clear.
      const uint64_t end = std::min(off + len, out.length);
      if (end > off) RETURN_IF_ERROR(AppendHoles(txn, ino, off, end - off));
      out.mtime_ns = out.ctime_ns = now;
    }
    if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > out.length) {
      RETURN_IF_ERROR(ChargeSpace(txn, settings_.capacity, out, off + len));
      out.length = off + len;
      out.mtime_ns = out.ctime_ns = now;
    }
    PutAttr(txn, ino, out);
    return Status::Ok();
  }));
  return out;
}

Result<uint64_t> Meta::CopyFileRange(InodeId in, uint64_t off_in, InodeId out, uint64_t off_out,
                                     uint64_t len) {
  if (off_in + len < off_in || off_out + len < off_out) return Invalid("bad copy range");
  uint64_t copied = 0;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    Attr src, dst;
    RETURN_IF_ERROR(LoadAttr(txn, in, &src));
    RETURN_IF_ERROR(LoadAttr(txn, out, &dst));
    if (src.IsDir() || dst.IsDir()) return Status(StatusCode::kIsDir, "is a directory");
    if (!src.IsFile() || !dst.IsFile()) return Invalid("not a regular file");
    copied = off_in >= src.length ? 0 : std::min(len, src.length - off_in);
    if (copied == 0) return Status::Ok();
    if (off_out + copied > kMaxFileSize) return Status(StatusCode::kTooBig, "file too large");
    if (in == out && off_in < off_out + copied && off_out < off_in + copied) {
      return Invalid("source and destination ranges overlap");
    }
    // The destination references the source's slices: no byte is copied.
    std::map<uint32_t, std::vector<Segment>> views;  // source chunk -> its view
    std::map<uint32_t, std::string> dst_chunks;      // destination chunk -> new value
    for (uint64_t done = 0; done < copied;) {
      const uint64_t s = off_in + done, d = off_out + done;
      const uint32_t s_chunk = static_cast<uint32_t>(s / kChunkSize);
      const uint32_t d_chunk = static_cast<uint32_t>(d / kChunkSize);
      const uint64_t s_pos = s % kChunkSize, d_pos = d % kChunkSize;
      const uint64_t n = std::min({copied - done, kChunkSize - s_pos, kChunkSize - d_pos});
      if (!views.count(s_chunk)) {
        ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Chunk(in, s_chunk)));
        std::vector<SliceRecord> records;
        if (raw) {
          ASSIGN_OR_RETURN(records, DecodeChunk(*raw));
        }
        views[s_chunk] = BuildChunkView(records);
      }
      if (!dst_chunks.count(d_chunk)) {
        ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Chunk(out, d_chunk)));
        dst_chunks[d_chunk] = raw.value_or("");
      }
      std::string& value = dst_chunks[d_chunk];
      // Clear the range first: gaps in the source are zeros in the copy.
      AppendSliceRecord(&value, {static_cast<uint32_t>(d_pos), SliceId(0), 0, 0,
                                 static_cast<uint32_t>(n)});
      for (const Segment& seg : views[s_chunk]) {
        const uint64_t a = std::max<uint64_t>(seg.pos, s_pos);
        const uint64_t b = std::min<uint64_t>(uint64_t{seg.pos} + seg.len, s_pos + n);
        if (a >= b || seg.id.value() == 0) continue;
        AppendSliceRecord(&value, {static_cast<uint32_t>(d_pos + (a - s_pos)), seg.id, seg.size,
                                   static_cast<uint32_t>(seg.off + (a - seg.pos)),
                                   static_cast<uint32_t>(b - a)});
      }
      done += n;
    }
    for (auto& [chunk, value] : dst_chunks) {
      // One more reference for each slice this chunk did not hold before.
      const std::string key = keys::Chunk(out, chunk);
      ASSIGN_OR_RETURN(auto before_raw, txn.Get(key));
      std::vector<SliceRecord> before;
      if (before_raw) {
        ASSIGN_OR_RETURN(before, DecodeChunk(*before_raw));
      }
      ASSIGN_OR_RETURN(auto after, DecodeChunk(value));
      const auto held = DistinctSlices(before);
      for (const SliceRef& slice : DistinctSlices(after)) {
        if (std::find(held.begin(), held.end(), slice) == held.end()) {
          RETURN_IF_ERROR(AddSliceRef(txn, slice));
        }
      }
      txn.Put(key, value);
    }
    const int64_t now = NowNanos();
    if (off_out + copied > dst.length) {
      RETURN_IF_ERROR(ChargeSpace(txn, settings_.capacity, dst, off_out + copied));
      dst.length = off_out + copied;
    }
    dst.mtime_ns = dst.ctime_ns = now;
    PutAttr(txn, out, dst);
    return Status::Ok();
  }));
  return copied;
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

Status Meta::KeepUntilClosed(InodeId ino) {
  if (ino.value() == 0) return Status::Ok();
  {
    std::lock_guard lock(open_mu_);
    sustained_.insert(ino);
    if (open_counts_.count(ino) > 0) return Status::Ok();
  }
  // The last handle closed while the transaction ran.
  return OnClose(ino);
}

Status Meta::OnClose(InodeId ino) {
  {
    std::lock_guard lock(open_mu_);
    auto it = open_counts_.find(ino);
    if (it != open_counts_.end() && --it->second <= 0) open_counts_.erase(it);
    if (open_counts_.count(ino) > 0) return Status::Ok();
    // Only files unlinked while open here have anything to reclaim: the
    // common close costs no transaction.
    if (sustained_.count(ino) == 0) return Status::Ok();
  }
  // Reclaim the file if it was unlinked while open here.
  std::vector<SliceRef> freed;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    freed.clear();
    ASSIGN_OR_RETURN(auto marker, txn.Get(keys::SustainedInode(session_, ino)));
    if (!marker) return Status::Ok();
    Attr a;
    Status st = LoadAttr(txn, ino, &a);
    if (st.ok() && a.nlink == 0 && !IsOpen(ino)) RETURN_IF_ERROR(DeleteInode(txn, ino, &freed));
    if (!st.ok() && !st.Is(StatusCode::kNotFound)) return st;
    if (!IsOpen(ino)) txn.Delete(keys::SustainedInode(session_, ino));
    return Status::Ok();
  }));
  {
    std::lock_guard lock(open_mu_);
    if (open_counts_.count(ino) == 0) sustained_.erase(ino);
  }
  FreeSlices(freed);
  return Status::Ok();
}

}  // namespace tessera
