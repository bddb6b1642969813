// Readahead decides, per open file handle, whether a reader is sequential
// and what to fetch ahead of it.
//
// A read is sequential when it starts near where the handle's previous read
// ended: within max(256 KiB, twice the request), because the kernel sends a
// sequential reader's requests concurrently and they arrive out of order by
// a request or two, while small random reads must not pass for sequential
// ones just because they land close together. A sequential reader fetches
// whole blocks and gets a window ahead of it that doubles from one block to
// `max_window` bytes while it stays sequential; a random read resets it.
// Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>

namespace tessera {

class Readahead {
 public:
  Readahead(uint64_t block_size, uint64_t max_window)
      : block_size_(block_size), max_window_(max_window) {}

  // Before a read of `size` bytes at `offset`: true when it is sequential.
  bool Begin(uint64_t offset, uint64_t size);

  struct Range {
    uint64_t from = 0, to = 0;  // empty when from >= to
  };
  // After that read returned `n` bytes: the bytes to fetch in the
  // background now (never the same range twice).
  Range End(uint64_t offset, uint64_t n, bool sequential);

  uint64_t window() {
    std::lock_guard lock(mu_);
    return window_;
  }

 private:
  const uint64_t block_size_;
  const uint64_t max_window_;
  std::mutex mu_;
  uint64_t next_offset_ = 0;    // guarded by mu_: where a sequential read would start
  uint64_t window_ = 0;         // guarded by mu_; 0 = random reader
  uint64_t prefetched_to_ = 0;  // guarded by mu_
};

}  // namespace tessera
