// Compaction of a chunk's records and the queue of slices deleted later.
#include <algorithm>

#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::DistinctSlices;
using meta_internal::ReleaseSlice;

Status Meta::CompactChunk(InodeId ino, uint32_t chunk, size_t first,
                          const std::vector<SliceRecord>& old,
                          const std::vector<SliceRecord>& merged, int64_t delete_after_ns) {
  if (old.empty()) return Invalid("nothing to compact");
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    const std::string key = keys::Chunk(ino, chunk);
    ASSIGN_OR_RETURN(auto value, txn.Get(key));
    if (!value) return Status(StatusCode::kBusy, "the chunk was removed while it was compacted");
    ASSIGN_OR_RETURN(auto records, DecodeChunk(*value));
    // Records are only ever appended to a chunk (or the chunk replaced as a
    // whole), so unchanged records at the same place mean `merged` still
    // holds what they showed.
    if (records.size() < first + old.size()) {
      return Status(StatusCode::kBusy, "the chunk changed while it was compacted");
    }
    const auto at = records.begin() + static_cast<std::ptrdiff_t>(first);
    if (!std::equal(old.begin(), old.end(), at)) {
      return Status(StatusCode::kBusy, "the chunk changed while it was compacted");
    }
    std::vector<SliceRecord> after(records.begin(), at);
    after.insert(after.end(), merged.begin(), merged.end());
    after.insert(after.end(), at + static_cast<std::ptrdiff_t>(old.size()), records.end());
    std::string encoded;
    for (const SliceRecord& r : after) AppendSliceRecord(&encoded, r);
    if (encoded.empty()) {
      txn.Delete(key);
    } else {
      txn.Put(key, encoded);
    }
    // The chunk gives up its reference to each slice it no longer holds; the
    // new slices start with the one reference they are born with.
    const auto kept = DistinctSlices(after);
    std::vector<SliceRef> freed;
    for (const SliceRef& slice : DistinctSlices(old)) {
      if (std::find(kept.begin(), kept.end(), slice) != kept.end()) continue;
      RETURN_IF_ERROR(ReleaseSlice(txn, slice, &freed));
    }
    // Deleted later rather than at once (ReleaseSlice queued them).
    for (const SliceRef& slice : freed) {
      txn.Delete(keys::FreedSlice(slice.id, slice.size));
      txn.Put(keys::DelayedSlice(delete_after_ns, slice.id, slice.size), "");
    }
    return Status::Ok();
  });
}

namespace {

Result<Meta::DelayedSlice> DecodeDelayedSlice(std::string_view key) {
  if (key.size() != 1 + 8 + 8 + 4) return Corrupt("malformed delayed slice key");
  Meta::DelayedSlice out;
  out.due_ns = static_cast<int64_t>(GetBig64(key.data() + 1));
  out.slice.id = SliceId(GetBig64(key.data() + 9));
  out.slice.size = GetBig32(key.data() + 17);
  return out;
}

}  // namespace

Result<std::vector<Meta::DelayedSlice>> Meta::DueSlices(int64_t now_ns, size_t limit) {
  std::vector<DelayedSlice> out;
  // Keys sort by due time: everything before the first key due after now.
  const std::string end = keys::DelayedSlice(now_ns + 1, SliceId(0), 0);
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    out.clear();
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(keys::DelayedSlicesBegin(), end, limit));
    for (const auto& item : page.items) {
      ASSIGN_OR_RETURN(DelayedSlice d, DecodeDelayedSlice(item.key));
      out.push_back(d);
    }
    return Status::Ok();
  }));
  return out;
}

Status Meta::DropDueSlice(const DelayedSlice& slice) {
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    txn.Delete(keys::DelayedSlice(slice.due_ns, slice.slice.id, slice.slice.size));
    return Status::Ok();
  });
}

namespace {

Result<uint64_t> CountKeys(KvStore& kv, const std::string& begin, const std::string& end) {
  uint64_t count = 0;
  RETURN_IF_ERROR(WithReadTransaction(kv, [&](KvTxn& txn) -> Status {
    count = 0;
    std::string from = begin;
    while (true) {
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 1024));
      count += page.items.size();
      if (!page.more || page.items.empty()) break;
      from = page.items.back().key + '\0';
    }
    return Status::Ok();
  }));
  return count;
}

}  // namespace

Result<uint64_t> Meta::CountDelayedSlices() {
  return CountKeys(*kv_, keys::DelayedSlicesBegin(), keys::DelayedSlicesEnd());
}

Result<uint64_t> Meta::CountFreedSlices() {
  return CountKeys(*kv_, keys::FreedSlicesBegin(), keys::FreedSlicesEnd());
}

Result<std::vector<SliceRef>> Meta::FreedSlices(size_t limit, SliceId after) {
  std::vector<SliceRef> out;
  const std::string from = after.value() == 0 ? keys::FreedSlicesBegin()
                                              : keys::FreedSlice(after, UINT32_MAX) + '\0';
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    out.clear();
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, keys::FreedSlicesEnd(), limit));
    for (const auto& item : page.items) {
      if (item.key.size() != 1 + 8 + 4) return Corrupt("malformed freed slice key");
      out.push_back(SliceRef{SliceId(GetBig64(item.key.data() + 1)), GetBig32(item.key.data() + 9)});
    }
    return Status::Ok();
  }));
  return out;
}

Status Meta::DropFreedSlices(const std::vector<SliceRef>& slices) {
  if (slices.empty()) return Status::Ok();
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    for (const SliceRef& s : slices) txn.Delete(keys::FreedSlice(s.id, s.size));
    return Status::Ok();
  });
}

}  // namespace tessera
