// A fixed set of threads running submitted tasks in order. Blocking work
// (uploads, downloads, background jobs) runs on pools like this one, each
// with its own bound, so that no kind of work can starve another.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"

namespace tessera {

// Runs work(0) .. work(n - 1) on n threads at once, waits for all, and
// returns the first error. `on_error` runs when a worker fails (to tell the
// others to stop early, say).
Status RunOnThreads(unsigned n, const std::function<Status(unsigned)>& work,
                    const std::function<void()>& on_error = {});

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);
  // Runs every task already submitted, then joins the threads.
  ~ThreadPool();

  void Submit(std::function<void()> task);
  // Like Submit, but refuses (returns false) when `max_queued` tasks wait
  // already: for optional work such as prefetching.
  bool TrySubmit(std::function<void()> task, size_t max_queued);
  size_t queued() const;

 private:
  void Work();

  mutable std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace tessera
