// UploadQueue bounds two things for every file of a mount at once: how many
// block uploads run concurrently (max_uploads threads) and how many bytes of
// written-but-not-yet-uploaded data are held in memory (buffer_bytes).
// Writers Reserve() memory before buffering and wait while the budget is
// spent; uploads Release() it when done. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "common/thread_pool.h"

namespace tessera {

class UploadQueue {
 public:
  UploadQueue(size_t max_uploads, uint64_t buffer_bytes);
  // Waits for the queued and running uploads to finish.
  ~UploadQueue();

  // Called (from a waiting writer, without locks held) when writers wait for
  // memory: it should commit the partial blocks that open files still hold,
  // which frees their share of the budget.
  void SetPressureHandler(std::function<void()> handler);

  // Blocks until `bytes` more may be buffered. Admits anything while nothing
  // is buffered, so one write larger than the budget cannot wait forever.
  // Must not be called while holding a lock that the pressure handler takes.
  void Reserve(uint64_t bytes);
  void Release(uint64_t bytes);
  uint64_t buffered() const;
  uint64_t buffer_bytes() const { return buffer_bytes_; }

  // Runs `task` on an upload thread, in submission order.
  void Submit(std::function<void()> task) { pool_.Submit(std::move(task)); }

 private:
  const uint64_t buffer_bytes_;
  mutable std::mutex mu_;
  std::condition_variable space_;   // signalled when buffered_ drops
  uint64_t buffered_ = 0;           // guarded by mu_
  std::function<void()> pressure_;  // set before use
  ThreadPool pool_;                 // last: its tasks finish before the rest goes
};

}  // namespace tessera
