#include "data/file_writer.h"

#include <algorithm>

#include "common/units.h"

namespace tessera {
namespace {
// Flush once this many slices are pending: bounds memory and the length of
// the chunk records that random small writes produce.
constexpr size_t kMaxPendingSlices = 64;
}  // namespace

FileWriter::FileWriter(InodeId ino, ChunkMeta* index, SliceStore* store)
    : ino_(ino), index_(index), store_(store) {}

FileWriter::~FileWriter() = default;

Status FileWriter::Write(uint64_t offset, std::string_view data) {
  std::lock_guard lock(mu_);
  while (!data.empty()) {
    const uint32_t chunk = static_cast<uint32_t>(offset / kChunkSize);
    const uint32_t pos = static_cast<uint32_t>(offset % kChunkSize);
    const size_t n = std::min<uint64_t>(data.size(), kChunkSize - pos);
    RETURN_IF_ERROR(WriteInChunk(chunk, pos, data.substr(0, n)));
    data.remove_prefix(n);
    offset += n;
  }
  return Status::Ok();
}

Status FileWriter::WriteInChunk(uint32_t chunk, uint32_t pos, std::string_view data) {
  // Only the newest pending slice of a chunk may grow: growing an older one
  // would let it hide data written after it.
  PendingSlice* target = nullptr;
  for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
    if (it->chunk != chunk) continue;
    if (it->pos + it->len == pos) target = &*it;
    break;
  }
  if (target == nullptr) {
    if (pending_.size() >= kMaxPendingSlices) RETURN_IF_ERROR(FlushLocked());
    pending_.push_back(PendingSlice{chunk, pos, 0, SliceId(), 0, 0, {}});
    target = &pending_.back();
  }
  target->mtime_ns = NowNanos();
  target->tail.append(data);
  target->len += static_cast<uint32_t>(data.size());
  return UploadFullBlocks(target);
}

Status FileWriter::UploadFullBlocks(PendingSlice* s) {
  const uint64_t bs = store_->block_size();
  if (s->tail.size() < bs) return Status::Ok();
  if (s->id.value() == 0) {
    ASSIGN_OR_RETURN(s->id, index_->NewSlice());
  }
  size_t done = 0;
  while (s->tail.size() - done >= bs) {
    RETURN_IF_ERROR(store_->PutBlock(s->id, s->uploaded_blocks,
                                     std::string_view(s->tail).substr(done, bs)));
    s->uploaded_blocks++;
    done += bs;
  }
  s->tail.erase(0, done);
  return Status::Ok();
}

Status FileWriter::Flush() {
  std::lock_guard lock(mu_);
  return FlushLocked();
}

Status FileWriter::FlushLocked() {
  Status result;
  size_t committed = 0;
  for (PendingSlice& s : pending_) {
    if (!result.ok()) break;
    if (s.id.value() == 0) {
      auto id = index_->NewSlice();
      if (!id.ok()) {
        result = id.status();
        break;
      }
      s.id = *id;
    }
    if (!s.tail.empty()) {
      result = store_->PutBlock(s.id, s.uploaded_blocks, s.tail);
      if (!result.ok()) break;
    }
    result = index_->CommitSlice(ino_, s.chunk, SliceRecord{s.pos, s.id, s.len, 0, s.len},
                                 s.mtime_ns);
    if (result.ok()) committed++;
  }
  // Slices that were not committed are dropped: their blocks go too, so a
  // refused write (a full volume) leaves nothing behind in the store.
  for (size_t i = committed; i < pending_.size(); ++i) {
    const PendingSlice& s = pending_[i];
    if (s.id.value() != 0) (void)store_->Delete({s.id, s.len});
  }
  pending_.clear();
  return result;
}

bool FileWriter::dirty() {
  std::lock_guard lock(mu_);
  return !pending_.empty();
}

int64_t FileWriter::PendingMtime() {
  std::lock_guard lock(mu_);
  int64_t t = 0;
  for (const auto& s : pending_) t = std::max(t, s.mtime_ns);
  return t;
}

uint64_t FileWriter::PendingEnd() {
  std::lock_guard lock(mu_);
  uint64_t end = 0;
  for (const auto& s : pending_) end = std::max(end, uint64_t{s.chunk} * kChunkSize + s.pos + s.len);
  return end;
}

}  // namespace tessera
