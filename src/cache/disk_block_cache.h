// DiskBlockCache: blocks kept as files in a local directory, so that they
// survive a restart and the cache can be much larger than memory.
//
// Layout: block `key` is the file <dir>/<xx>/<escaped key>, where xx is the
// low byte of CRC32C(key) in hex (256 subdirectories keep directories
// small) and the file format is described in block_file.h (a header, a
// CRC32C per 32 KiB piece, the block). <dir>/.lock is flock()ed while the
// cache is open. Directories are 0700 and files 0600: cached blocks are
// file contents that skipped the file system's permission checks.
//
// Reads verify the pieces they return. A file that fails (bad checksum, bad
// header, short, vanished, unreadable) is deleted, counted in
// corrupt_dropped, and the read misses; the caller refetches from the
// object store. Wrong bytes are never returned.
//
// Writes are asynchronous: Put copies the block into a bounded queue
// (write_queue_bytes) and returns; one writer thread makes room, writes the
// file (temporary file, then rename) and indexes it. Until then Read serves
// the queued copy. A full queue, a failed write or a full disk drops the
// Put (counted in `rejected`), never the caller's time. Remove queues the
// unlink the same way. Drain() waits for the queue, for tests and shutdown.
//
// Space: the index (key -> length, recency) lives in memory and is rebuilt
// at Open by scanning the directory. The files' total size stays within
// capacity_bytes, and the file system keeps at least free_space_ratio of its
// size free; free space is measured with statvfs at most every
// space_check_interval_ns (by the writer thread, also when idle) and
// adjusted for the cache's own writes and deletes in between. When others
// fill the disk, the cache evicts down to nothing if it must.
//
// Eviction is a segmented LRU (segmented_lru.h) by bytes: new blocks enter
// probation; a hit at least reuse_window_ns after the block was cached
// moves it to the protected segment (protected_ratio of capacity). Probation
// is evicted first, so a one-pass scan of a huge file cycles through
// probation and leaves the re-read working set alone. cache/README.md says
// why this policy and not another.
//
// Thread-safe. Index lookups and updates hold one mutex, never across disk
// I/O. Read blocks on the disk; Put and Remove do not.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/block_cache.h"
#include "cache/segmented_lru.h"
#include "common/status.h"

namespace tessera {

// Size and free space of a file system, in bytes (free: available to
// unprivileged users, statvfs f_bavail).
struct FsSpace {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

struct DiskCacheOptions {
  std::string dir;              // created if missing
  uint64_t capacity_bytes = 0;  // > 0; bytes of cache files (headers included)
  double free_space_ratio = 0.1;  // in [0, 1)

  // Bytes of Puts waiting for the writer; a Put past it is refused.
  uint64_t write_queue_bytes = 64ull << 20;
  // Share of capacity the protected segment may hold, in [0, 1].
  double protected_ratio = 0.8;
  // Hits closer than this to the block's arrival are the same use (the
  // pieces of one block read in a row) and do not protect it.
  int64_t reuse_window_ns = 1'000'000'000;
  // Free space is measured at most this often.
  int64_t space_check_interval_ns = 500'000'000;

  // Test seams. probe_space measures the file system holding the directory
  // (default: statvfs); now_ns is a monotonic clock (default: MonoNanos).
  // Both are called without the cache's lock held, probe_space only from
  // the writer thread and Open.
  std::function<Result<FsSpace>(const std::string& dir)> probe_space;
  std::function<int64_t()> now_ns;
};

// What to do before writing a file of `incoming` bytes (0: only restore
// the limits), given the bytes the cache holds (`used`, all evictable), its
// capacity, and the file system's space (nullopt: unknown, only capacity
// applies). Pure; exposed for tests.
struct SpacePlan {
  uint64_t evict_bytes = 0;  // free at least this much by evicting
  bool admit = false;        // then write the incoming file
};
SpacePlan PlanSpace(uint64_t used, uint64_t incoming, uint64_t capacity,
                    double free_space_ratio, const std::optional<FsSpace>& fs);

class DiskBlockCache : public BlockCache {
 public:
  // Opens (creating if needed) the cache in options.dir, rebuilds the index
  // from the files there (deleting temporary files, stray names and files
  // with a bad header or size), evicts down to the limits, and starts the
  // writer thread. Scanning costs one open and one small read per file.
  // Errors: kInvalid for bad options (naming the field); kBusy when another
  // cache has the directory open; errors creating or listing the directory
  // (kPermission, kNotDir, kIo...) naming it.
  static Result<std::unique_ptr<DiskBlockCache>> Open(DiskCacheOptions options);

  // Finishes the queued writes and unlinks, then stops the writer.
  ~DiskBlockCache() override;

  bool Read(std::string_view key, uint64_t offset, uint64_t length, char* out) override;
  bool ReadBlock(std::string_view key, std::string* block) override;
  void Put(std::string_view key, std::string_view block) override;
  void Remove(std::string_view key) override;
  // bytes includes the file being written.
  CacheStats Stats() const override;

  // Blocks until every Put and Remove accepted so far is on disk (or
  // dropped).
  void Drain();

  // The file that holds (or would hold) `key`; for tests and tools.
  std::string PathFor(std::string_view key) const;
  // Whether `key` is cached in the protected segment; for tests.
  bool IsProtected(std::string_view key) const;
  const std::string& dir() const { return options_.dir; }

 private:
  struct Entry {
    uint64_t block_len = 0;
    uint64_t gen = 0;         // tells a file apart from a later one of the same key
    int64_t cached_at_ns = 0;  // for the reuse window
  };
  // A queued Put, or (data == nullptr) a queued unlink of `charge` bytes.
  struct Job {
    std::string key;
    std::shared_ptr<const std::string> data;
    uint64_t charge = 0;
    bool replaces_old = false;  // an older file of the key may be at the path
    bool cancelled = false;     // guarded by mu_: Removed before it was indexed
  };
  // What a reader found under the lock.
  struct Found {
    bool present = false;
    std::shared_ptr<const std::string> queued;  // served from the write queue
    uint64_t block_len = 0;
    uint64_t gen = 0;
  };

  DiskBlockCache(DiskCacheOptions options, int lock_fd);

  Status Rebuild();
  Found Lookup(std::string_view key);
  bool ReadFile(std::string_view key, const Found& found, uint64_t offset, uint64_t length,
                char* out);
  void WriterLoop();
  void RunJob(const std::shared_ptr<Job>& job);
  void WriteBlock(const std::shared_ptr<Job>& job);
  void MeasureSpaceIfDue(bool force);
  // Evicts to make room for `incoming` bytes; returns whether to write them.
  bool MakeRoom(uint64_t incoming);
  // Moves `bytes` worth of victims from the index to unlinking_ (LRU end
  // first) and returns their keys and sizes. Requires mu_.
  std::vector<std::pair<std::string, uint64_t>> TakeVictimsLocked(uint64_t bytes);
  // Unlinks files whose keys are in unlinking_, then releases them.
  void UnlinkAll(const std::vector<std::pair<std::string, uint64_t>>& files);
  int64_t Now() const { return options_.now_ns(); }

  const DiskCacheOptions options_;
  const int lock_fd_;
  const uint64_t protected_capacity_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // a job was queued, or stop_
  std::condition_variable idle_cv_;  // the writer finished a job
  SegmentedLru<Entry> index_;                                     // guarded by mu_
  std::unordered_map<std::string, std::shared_ptr<Job>, StringHash, std::equal_to<>>
      queued_;                                                    // guarded by mu_: Puts not yet indexed
  std::unordered_set<std::string, StringHash, std::equal_to<>> unlinking_;  // guarded by mu_
  std::deque<std::shared_ptr<Job>> jobs_;                         // guarded by mu_
  uint64_t queued_bytes_ = 0;                                     // guarded by mu_
  uint64_t writing_bytes_ = 0;  // guarded by mu_: the file being written now
  bool busy_ = false;           // guarded by mu_: the writer is running a job
  bool stop_ = false;           // guarded by mu_
  uint64_t next_gen_ = 1;       // guarded by mu_
  std::optional<FsSpace> fs_;   // guarded by mu_: last measurement, adjusted since
  int64_t last_measured_ns_ = 0;  // writer thread only
  bool measured_ = false;         // writer thread only
  bool probe_failed_ = false;      // writer thread only: log a failure once, not each time
  bool last_write_failed_ = false;  // writer thread only: same
  CacheStats stats_;              // guarded by mu_: all but hits, misses, entries, bytes
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};

  std::thread writer_;
};

}  // namespace tessera
