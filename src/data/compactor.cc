#include "data/compactor.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/chunk_view.h"
#include "common/log.h"
#include "common/units.h"

namespace tessera {
namespace {

// True when the whole record shows through the view (nothing later hides
// any of its bytes).
bool WhollyVisible(const std::vector<Segment>& view, const SliceRecord& r) {
  auto it = std::lower_bound(view.begin(), view.end(), r.pos,
                             [](const Segment& s, uint32_t pos) { return s.pos < pos; });
  return it != view.end() && *it == r;
}

// Reads what the view shows at [begin, end) of the chunk into out.
Status ReadView(BlockReader& reader, const std::vector<Segment>& view, uint64_t begin,
                uint64_t end, char* out) {
  std::memset(out, 0, end - begin);
  auto it = std::upper_bound(view.begin(), view.end(), begin,
                             [](uint64_t pos, const Segment& s) { return pos < s.pos; });
  if (it != view.begin()) --it;
  for (; it != view.end() && it->pos < end; ++it) {
    const Segment& seg = *it;
    const uint64_t a = std::max<uint64_t>(seg.pos, begin);
    const uint64_t b = std::min<uint64_t>(uint64_t{seg.pos} + seg.len, end);
    if (a >= b || seg.id.value() == 0) continue;
    // Whole blocks: merging reads many small pieces of the same blocks.
    RETURN_IF_ERROR(reader.Read(seg.id, seg.size, seg.off + (a - seg.pos), b - a, true,
                                out + (a - begin)));
  }
  return Status::Ok();
}

}  // namespace

Compactor::Compactor(ChunkMeta* index, BlockReader* reader, CompactOptions options)
    : index_(index), reader_(reader), options_(options), pool_(std::max<size_t>(1, options.threads)) {}

Compactor::~Compactor() { Stop(); }

void Compactor::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  WaitIdle();
}

Result<CompactResult> Compactor::CompactChunk(InodeId ino, uint32_t chunk, bool full) {
  CompactResult result;
  ASSIGN_OR_RETURN(auto records, index_->ReadChunk(ino, chunk));
  result.records_before = result.records_after = records.size();
  if (records.size() < 2) return result;
  const auto view = BuildChunkView(records);
  size_t first = 0;
  if (!full) {
    while (first + 2 < records.size()) {
      const SliceRecord& r = records[first];
      if (r.id.value() == 0 || r.len < options_.keep_slice_bytes || !WhollyVisible(view, r)) break;
      first++;
    }
  }
  const std::vector<SliceRecord> old(records.begin() + static_cast<std::ptrdiff_t>(first),
                                     records.end());
  uint64_t lo = kChunkSize, hi = 0;
  for (const SliceRecord& r : old) {
    lo = std::min<uint64_t>(lo, r.pos);
    hi = std::max<uint64_t>(hi, uint64_t{r.pos} + r.len);
  }
  // What lies in [lo, hi) with data; with nothing below the merged records,
  // zeros at either end need not be stored.
  uint64_t data_lo = hi, data_hi = lo;
  for (const Segment& s : view) {
    const uint64_t a = std::max<uint64_t>(s.pos, lo), b = std::min<uint64_t>(uint64_t{s.pos} + s.len, hi);
    if (a >= b || s.id.value() == 0) continue;
    data_lo = std::min(data_lo, a);
    data_hi = std::max(data_hi, b);
  }
  if (first == 0) {
    lo = data_lo;
    hi = std::max(data_lo, data_hi);
  }

  std::vector<SliceRecord> merged;
  SliceRef written;
  if (data_lo < data_hi) {
    ASSIGN_OR_RETURN(SliceId id, index_->NewSlice());
    const uint64_t size = hi - lo, bs = reader_->store().block_size();
    written = {id, static_cast<uint32_t>(size)};
    std::string block;
    Status st;
    for (uint64_t index = 0; st.ok() && index * bs < size; ++index) {
      const uint64_t n = std::min(bs, size - index * bs);
      block.resize(n);
      st = ReadView(*reader_, view, lo + index * bs, lo + index * bs + n, block.data());
      if (st.ok()) st = reader_->store().PutBlock(id, index, block);
    }
    if (!st.ok()) {
      (void)reader_->store().Delete(written);
      return st;
    }
    merged.push_back({static_cast<uint32_t>(lo), id, static_cast<uint32_t>(size), 0,
                      static_cast<uint32_t>(size)});
    result.bytes_written = size;
  } else if (lo < hi) {
    // Only zeros: a hole keeps hiding what lies below.
    merged.push_back({static_cast<uint32_t>(lo), SliceId(0), 0, 0, static_cast<uint32_t>(hi - lo)});
  }
  Status st = index_->ReplaceRecords(ino, chunk, first, old, merged, NowNanos() + options_.grace_ns);
  if (!st.ok()) {
    if (written.id.value() != 0) (void)reader_->store().Delete(written);
    if (st.Is(StatusCode::kBusy) || st.Is(StatusCode::kNotFound)) return result;
    return st;
  }
  result.merged = true;
  result.records_after = records.size() - old.size() + merged.size();
  return result;
}

void Compactor::OnCommitted(InodeId ino,
                            const std::vector<std::pair<uint32_t, size_t>>& records) {
  for (const auto& [chunk, count] : records) {
    if (count >= options_.threshold) Schedule(ino, chunk);
  }
}

void Compactor::Schedule(InodeId ino, uint32_t chunk) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !queued_.insert({ino.value(), chunk}).second) return;
  }
  pool_.Submit([this, ino, chunk] {
    {
      std::lock_guard lock(mu_);
      // Commits from now on may queue the chunk again.
      queued_.erase({ino.value(), chunk});
      if (stopping_) {
        idle_.notify_all();
        return;
      }
      running_++;
    }
    auto result = CompactChunk(ino, chunk, false);
    if (!result.ok()) {
      LogWarn("compacting chunk " + std::to_string(chunk) + " of inode " +
              std::to_string(ino.value()) + ": " + result.status().ToString());
    }
    std::lock_guard lock(mu_);
    running_--;
    idle_.notify_all();
  });
}

void Compactor::WaitIdle() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return queued_.empty() && running_ == 0; });
}

}  // namespace tessera
