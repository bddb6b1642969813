#include "data/upload_queue.h"

#include <chrono>

namespace tessera {

UploadQueue::UploadQueue(size_t max_uploads, uint64_t buffer_bytes)
    : buffer_bytes_(buffer_bytes), pool_(max_uploads) {}

UploadQueue::~UploadQueue() = default;

void UploadQueue::SetPressureHandler(std::function<void()> handler) { pressure_ = std::move(handler); }

void UploadQueue::Reserve(uint64_t bytes) {
  std::unique_lock lock(mu_);
  auto fits = [&] { return buffered_ == 0 || buffered_ + bytes <= buffer_bytes_; };
  while (!fits()) {
    // Uploads in flight free memory by themselves; partial blocks held by
    // idle files do not, so ask for them to be committed if waiting lasts.
    if (space_.wait_for(lock, std::chrono::milliseconds(50), fits)) break;
    if (pressure_) {
      lock.unlock();
      pressure_();
      lock.lock();
    }
  }
  buffered_ += bytes;
}

void UploadQueue::Release(uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    buffered_ -= std::min(bytes, buffered_);
  }
  space_.notify_all();
}

uint64_t UploadQueue::buffered() const {
  std::lock_guard lock(mu_);
  return buffered_;
}

}  // namespace tessera
