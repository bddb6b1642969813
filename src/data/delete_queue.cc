#include "data/delete_queue.h"

#include <chrono>
#include <utility>

namespace tessera {
namespace {

// Finished slices reported in one go (one metadata transaction).
constexpr size_t kReportBatch = 256;

}  // namespace

DeleteQueue::DeleteQueue(SliceStore* slices, size_t max_deletes, size_t max_pending, DoneFn done)
    : slices_(slices), max_pending_(max_pending), done_(std::move(done)) {
  if (max_deletes == 0) max_deletes = 1;
  for (size_t i = 0; i < max_deletes; ++i) threads_.emplace_back([this] { Work(); });
}

DeleteQueue::~DeleteQueue() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  std::vector<SliceRef> rest;
  {
    std::lock_guard lock(mu_);
    rest = std::move(finished_);
    finished_.clear();
  }
  if (!rest.empty()) Report(std::move(rest));
}

size_t DeleteQueue::Add(const std::vector<SliceRef>& slices) {
  size_t taken = 0;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return 0;
    for (const SliceRef& s : slices) {
      if (known_.count(s.id.value()) != 0) continue;
      if (queue_.size() + running_ >= max_pending_) {
        stats_.dropped++;
        continue;
      }
      known_.insert(s.id.value());
      queue_.push_back(s);
      taken++;
    }
  }
  if (taken > 0) work_cv_.notify_all();
  return taken;
}

bool DeleteQueue::Drain(int64_t timeout_ms) {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return queue_.empty() && running_ == 0 && finished_.empty() && reporting_ == 0;
  });
}

size_t DeleteQueue::pending() const {
  std::lock_guard lock(mu_);
  return queue_.size() + running_;
}

DeleteQueue::Stats DeleteQueue::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void DeleteQueue::Work() {
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;  // what waits keeps its record
    SliceRef s = queue_.front();
    queue_.pop_front();
    running_++;
    lock.unlock();
    Status st = slices_->Delete(s);
    lock.lock();
    running_--;
    known_.erase(s.id.value());
    if (st.ok()) {
      stats_.deleted++;
      finished_.push_back(s);
    } else {
      stats_.failed++;
    }
    // A full batch, or the last of a burst: report it (outside the lock,
    // as it is a metadata transaction).
    if (finished_.size() >= kReportBatch || (queue_.empty() && running_ == 0)) {
      std::vector<SliceRef> batch = std::move(finished_);
      finished_.clear();
      if (!batch.empty()) {
        reporting_++;
        lock.unlock();
        Report(std::move(batch));
        lock.lock();
        reporting_--;
      }
    }
    if (queue_.empty() && running_ == 0 && finished_.empty() && reporting_ == 0) {
      idle_cv_.notify_all();
    }
  }
}

void DeleteQueue::Report(std::vector<SliceRef> batch) { done_(batch); }

}  // namespace tessera
