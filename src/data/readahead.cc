#include "data/readahead.h"

#include <algorithm>

namespace tessera {

bool Readahead::Begin(uint64_t offset, uint64_t size) {
  const uint64_t slack = std::max<uint64_t>(256u << 10, 2 * size);
  std::lock_guard lock(mu_);
  const bool sequential = offset <= next_offset_ + slack && offset + slack >= next_offset_;
  if (sequential) {
    window_ = std::min(std::max(window_ * 2, block_size_), max_window_);
  } else {
    window_ = 0;
    prefetched_to_ = 0;
  }
  return sequential;
}

Readahead::Range Readahead::End(uint64_t offset, uint64_t n, bool sequential) {
  std::lock_guard lock(mu_);
  next_offset_ = sequential ? std::max(next_offset_, offset + n) : offset + n;
  Range r;
  if (sequential && window_ > 0) {
    r.from = std::max(prefetched_to_, offset + n);
    r.to = offset + n + window_;
    if (r.to > r.from) prefetched_to_ = r.to;
  }
  return r;
}

}  // namespace tessera
