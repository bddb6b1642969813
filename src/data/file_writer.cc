#include "data/file_writer.h"

#include <algorithm>

#include "common/units.h"

namespace tessera {
namespace {
// Flush once this many slices are pending: bounds the length of the chunk
// records that random small writes produce.
constexpr size_t kMaxPendingSlices = 64;
}  // namespace

FileWriter::FileWriter(InodeId ino, ChunkMeta* index, SliceStore* store, UploadQueue* queue,
                       Compactor* compactor)
    : ino_(ino), index_(index), store_(store), queue_(queue), compactor_(compactor) {}

FileWriter::~FileWriter() {
  std::lock_guard lock(mu_);
  (void)WaitForUploads();
  for (const auto& s : pending_) queue_->Release(s.tail.size());
}

Status FileWriter::Write(uint64_t offset, std::string_view data) {
  // Wait for room before taking the file's lock: whoever frees memory (a
  // flush of this or another file) may need it.
  queue_->Reserve(data.size());
  std::lock_guard lock(mu_);
  uint64_t buffered = 0;
  Status st;
  {
    std::lock_guard up(uploads_->mu);
    st = uploads_->error;
  }
  while (st.ok() && buffered < data.size()) {
    const uint64_t at = offset + buffered;
    const uint32_t chunk = static_cast<uint32_t>(at / kChunkSize);
    const uint32_t pos = static_cast<uint32_t>(at % kChunkSize);
    const size_t n = std::min<uint64_t>(data.size() - buffered, kChunkSize - pos);
    st = WriteInChunk(chunk, pos, data.substr(buffered, n));
    if (st.ok()) buffered += n;
  }
  queue_->Release(data.size() - buffered);  // what never reached a buffer
  return st;
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
    pending_.push_back(PendingSlice{chunk, pos, 0, SliceId(), 0, 0, 0, {}});
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
    s->first_upload_ns = NowNanos();
  }
  size_t done = 0;
  while (s->tail.size() - done >= bs) {
    UploadBlock(s->id, s->next_block++, s->tail.substr(done, bs));
    done += bs;
  }
  s->tail.erase(0, done);
  return Status::Ok();
}

void FileWriter::UploadBlock(SliceId id, uint64_t index, std::string data) {
  {
    std::lock_guard lock(uploads_->mu);
    uploads_->in_flight++;
  }
  queue_->Submit([uploads = uploads_, store = store_, queue = queue_, id, index,
                  data = std::move(data)] {
    Status st = store->PutBlock(id, index, data);
    queue->Release(data.size());
    std::lock_guard lock(uploads->mu);
    if (!st.ok() && uploads->error.ok()) uploads->error = st;
    if (--uploads->in_flight == 0) uploads->done.notify_all();
  });
}

int FileWriter::InFlight() {
  std::lock_guard lock(uploads_->mu);
  return uploads_->in_flight;
}

Status FileWriter::WaitForUploads() {
  std::unique_lock lock(uploads_->mu);
  uploads_->done.wait(lock, [&] { return uploads_->in_flight == 0; });
  Status st = uploads_->error;
  uploads_->error = Status::Ok();
  return st;
}

Status FileWriter::Flush() {
  std::lock_guard lock(mu_);
  return FlushLocked();
}

void FileWriter::DropPending(size_t first) {
  // Dropped slices take their blocks with them, so a refused write (a full
  // volume, a failed upload) leaves nothing behind in the store.
  for (size_t i = first; i < pending_.size(); ++i) {
    const PendingSlice& s = pending_[i];
    queue_->Release(s.tail.size());
    if (s.id.value() != 0) (void)store_->Delete({s.id, s.len});
  }
  pending_.clear();
}

Status FileWriter::FlushLocked() {
  // Upload every partial last block, all at once.
  Status st;
  for (PendingSlice& s : pending_) {
    if (s.id.value() == 0) {
      auto id = index_->NewSlice();
      if (!id.ok()) {
        st = id.status();
        break;
      }
      s.id = *id;
    }
    if (!s.tail.empty()) {
      if (pending_.size() == 1 && InFlight() == 0) {
        // The common small file: one block, nothing else to wait for. Put
        // it from this thread rather than hand it to an upload thread and
        // wait: two thread switches less on every close.
        st = store_->PutBlock(s.id, s.next_block++, s.tail);
        queue_->Release(s.tail.size());
        s.tail.clear();
        break;
      }
      UploadBlock(s.id, s.next_block++, std::move(s.tail));
      s.tail.clear();
    }
  }
  Status uploaded = WaitForUploads();
  if (st.ok()) st = uploaded;
  if (!st.ok()) {
    DropPending(0);
    return st;
  }
  // One metadata transaction for everything pending: a file of many small
  // writes costs one commit per flush, not one per slice.
  std::vector<ChunkSlice> slices;
  slices.reserve(pending_.size());
  int64_t mtime_ns = 0;
  for (const PendingSlice& s : pending_) {
    slices.push_back({s.chunk, SliceRecord{s.pos, s.id, s.len, 0, s.len}});
    mtime_ns = std::max(mtime_ns, s.mtime_ns);
  }
  if (slices.empty()) return Status::Ok();
  auto records = index_->CommitSlices(ino_, slices, mtime_ns);
  if (!records.ok()) {
    DropPending(0);
    return records.status();
  }
  pending_.clear();
  if (compactor_ != nullptr) compactor_->OnCommitted(ino_, *records);
  return Status::Ok();
}

bool FileWriter::dirty() {
  std::lock_guard lock(mu_);
  return !pending_.empty();
}

int64_t FileWriter::OldestUploadNs() {
  std::lock_guard lock(mu_);
  int64_t oldest = 0;
  for (const PendingSlice& s : pending_) {
    if (s.first_upload_ns != 0 && (oldest == 0 || s.first_upload_ns < oldest)) oldest = s.first_upload_ns;
  }
  return oldest;
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
