#include "data/block_reader.h"

#include <algorithm>
#include <cstring>

namespace tessera {

struct BlockReader::Flight {
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  Result<std::shared_ptr<const std::string>> result = Status(StatusCode::kInternal, "pending");
};

BlockReader::BlockReader(SliceStore* store, BlockCache* cache, size_t max_downloads)
    : store_(store), cache_(cache), max_downloads_(std::max<size_t>(max_downloads, 1)),
      downloads_(max_downloads_) {}

BlockReader::~BlockReader() = default;

Result<std::shared_ptr<const std::string>> BlockReader::FetchBlock(SliceId id, uint32_t size,
                                                                   uint64_t index) {
  const uint64_t bs = store_->block_size();
  const uint64_t this_size = std::min<uint64_t>(bs, size - index * bs);
  const std::string key = store_->BlockKey(id, index, this_size);
  if (cache_ != nullptr) {
    auto block = std::make_shared<std::string>();
    if (cache_->ReadBlock(key, block.get()) && block->size() == this_size) {
      return std::shared_ptr<const std::string>(block);
    }
  }
  std::shared_ptr<Flight> flight;
  bool leader = false;
  {
    std::lock_guard lock(mu_);
    auto& slot = flights_[key];
    if (!slot) {
      slot = std::make_shared<Flight>();
      leader = true;
    }
    flight = slot;
  }
  if (!leader) {
    std::unique_lock lock(flight->mu);
    flight->done_cv.wait(lock, [&] { return flight->done; });
    return flight->result;
  }
  Result<std::shared_ptr<const std::string>> result = Status(StatusCode::kInternal, "unset");
  auto data = store_->objects().Get(key);
  if (!data.ok()) {
    result = IoError("cannot read block " + key + " from " + store_->objects().Describe() + ": " +
                     data.status().ToString());
  } else if (data->size() != this_size) {
    result = IoError("block " + key + " in " + store_->objects().Describe() + " has " +
                     std::to_string(data->size()) + " bytes, not " + std::to_string(this_size));
  } else {
    if (cache_ != nullptr) cache_->Put(key, *data);
    result = std::shared_ptr<const std::string>(std::make_shared<std::string>(std::move(*data)));
  }
  {
    std::lock_guard lock(mu_);
    flights_.erase(key);
  }
  {
    std::lock_guard lock(flight->mu);
    flight->result = result;
    flight->done = true;
  }
  flight->done_cv.notify_all();
  return result;
}

Status BlockReader::Read(SliceId id, uint32_t size, uint64_t off, uint64_t len, bool whole_blocks,
                         char* out) {
  if (off + len > size) return Internal("read past the end of slice " + std::to_string(id.value()));
  const uint64_t bs = store_->block_size();
  while (len > 0) {
    const uint64_t index = off / bs;
    const uint64_t in_block = off % bs;
    const uint64_t this_size = std::min<uint64_t>(bs, size - index * bs);
    const uint64_t n = std::min(len, this_size - in_block);
    const std::string key = store_->BlockKey(id, index, this_size);
    if (cache_ == nullptr || !cache_->Read(key, in_block, n, out)) {
      if (whole_blocks) {
        ASSIGN_OR_RETURN(auto block, FetchBlock(id, size, index));
        std::memcpy(out, block->data() + in_block, n);
      } else {
        RETURN_IF_ERROR(store_->Read(id, size, off, n, out));
      }
    }
    out += n;
    off += n;
    len -= n;
  }
  return Status::Ok();
}

void BlockReader::Prefetch(SliceId id, uint32_t size, uint64_t off, uint64_t len) {
  const uint64_t bs = store_->block_size();
  if (len == 0 || off >= size) return;
  const uint64_t last = (std::min<uint64_t>(off + len, size) - 1) / bs;
  for (uint64_t index = off / bs; index <= last; ++index) {
    Background([this, id, size, index] { (void)FetchBlock(id, size, index); });
  }
}

void BlockReader::Background(std::function<void()> task) {
  // Prefetching is optional: when downloads lag far behind, skip it rather
  // than queue work nobody may need by the time it runs.
  (void)downloads_.TrySubmit(std::move(task), 4 * max_downloads_);
}

}  // namespace tessera
