// The background deletion of freed slices' blocks: at most `max_deletes`
// slices are deleted at once, at most `max_pending` wait, and slices whose
// blocks are all gone are reported in batches so that their records
// (keys::FreedSlice) can be removed. A slice that fails, or does not fit in
// the queue, keeps its record: the next pass over the records (any client,
// or `tessera gc`) deletes it then. Deleting a slice twice is harmless:
// slice ids are never reused.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/slice.h"
#include "data/slice_store.h"

namespace tessera {

class DeleteQueue {
 public:
  using DoneFn = std::function<void(const std::vector<SliceRef>&)>;

  DeleteQueue(SliceStore* slices, size_t max_deletes, size_t max_pending, DoneFn done);
  // Stops taking work, waits for the deletes running, reports what they
  // finished, and leaves the rest to the records.
  ~DeleteQueue();
  DeleteQueue(const DeleteQueue&) = delete;
  DeleteQueue& operator=(const DeleteQueue&) = delete;

  // Queues slices, skipping those queued or being deleted; never blocks.
  // Returns how many were taken.
  size_t Add(const std::vector<SliceRef>& slices);
  // Waits up to `timeout_ms` for the queue to empty and its batch of done
  // slices to be reported; true when it did.
  bool Drain(int64_t timeout_ms);
  // Slices waiting or being deleted.
  size_t pending() const;

  struct Stats {
    uint64_t deleted = 0;  // slices whose blocks are gone
    uint64_t failed = 0;   // slices left to a later pass after an error
    uint64_t dropped = 0;  // slices not queued because the queue was full
  };
  Stats stats() const;

 private:
  void Work();
  // Reports the finished batch; called without mu_ held.
  void Report(std::vector<SliceRef> batch);

  SliceStore* const slices_;
  const size_t max_pending_;
  const DoneFn done_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<SliceRef> queue_;              // guarded by mu_
  std::unordered_set<uint64_t> known_;      // slice ids queued or in flight, guarded by mu_
  std::vector<SliceRef> finished_;          // not reported yet, guarded by mu_
  size_t running_ = 0;                      // guarded by mu_
  size_t reporting_ = 0;                    // batches being reported, guarded by mu_
  bool stopping_ = false;                   // guarded by mu_
  Stats stats_;                             // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace tessera
