// WritebackStore wraps an object store and makes Put local: the object is
// written durably to a staging directory on this host's disk (temporary
// file, fsync, rename, fsync of the directory) and Put returns; background
// threads upload staged objects to the wrapped store after `upload_delay`
// and remove each staging file once the store has confirmed it. Mounts use
// it for --writeback, so a close or fsync does not wait for the network.
//
// What callers see:
//  - Get/Head serve a staged object from its staging file, everything else
//    from the wrapped store; List merges both.
//  - Delete removes the staging file, so a queued upload never happens; an
//    upload already running is waited for, then the object is deleted from
//    the wrapped store too: no deleted object survives anywhere.
//  - Staged objects survive a crash of the process. Opening a store over
//    the same directory later queues what it finds (due `upload_delay`
//    after the file was staged).
//  - When staging fails (disk full, directory gone, key too long for a
//    file name), Put uploads directly to the wrapped store instead and logs
//    it once, so a write never fails for the staging disk's sake.
//  - A failed upload keeps the staging file and is retried with growing
//    pauses, for as long as the store lives.
//
// The cost: until uploaded, an object exists only on this host's disk, so
// other hosts cannot read it, and losing the disk loses it.
//
// Layout: <dir>/.lock (flock: one store per directory, across processes),
// <dir>/<escaped key> per staged object, where the escaped key keeps
// [A-Za-z0-9_-] and writes every other byte as %XX, and <dir>/.tmp.<16 hex>
// for Puts in progress (removed at open). The directory is private (0700):
// staged objects are file contents.
//
// Memory stays bounded: the backlog is the directory; memory holds one
// small index entry per staged object, and each upload thread reads one
// staging file at a time.
//
// Thread-safe. Every method blocks on local disk I/O, and on the wrapped
// store where it must (reads of objects not staged, Delete, List, a direct
// Put). Errors are those of the wrapped store (a staged object is never
// NotFound) plus kInvalid for an empty key.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "object/object_store.h"

namespace tessera {

struct WritebackOptions {
  std::string dir;  // staging directory; created (mode 0700) if missing
  // How long a staged object waits before its upload starts (an object
  // deleted meanwhile costs no upload at all).
  std::chrono::milliseconds upload_delay{0};
  size_t max_uploads = 20;  // upload threads
  // Pause before retrying a failed upload; doubles up to max_retry_pause.
  std::chrono::milliseconds first_retry_pause{1000};
  std::chrono::milliseconds max_retry_pause{60000};
  // fsync staged files and the directory before Put returns. Only tests
  // that never check what survives a power cut turn it off.
  bool sync = true;
};

// Objects staged but not yet uploaded.
struct PendingUploads {
  uint64_t objects = 0;
  uint64_t bytes = 0;
};

class WritebackStore : public ObjectStore {
 public:
  // Takes the staging directory (kBusy naming the lock file when another
  // store holds it; the error of mkdir/open otherwise), removes temporary
  // files left by a crash, indexes the staged objects it finds and starts
  // the upload threads, which upload them.
  static Result<std::unique_ptr<WritebackStore>> Open(std::unique_ptr<ObjectStore> backend,
                                                      WritebackOptions options);
  // Stops the upload threads after the uploads they are running; staged
  // objects stay staged (the next Open uploads them). Call Drain first to
  // upload everything.
  ~WritebackStore() override;

  std::string Describe() const override { return backend_->Describe(); }
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset = 0,
                          int64_t length = -1) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override;
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override;

  // From now on uploads start without waiting for upload_delay; waits until
  // nothing is staged, logging progress every few seconds. kUnavailable,
  // saying how much stays staged, when no upload succeeded for
  // `stall_limit` (the store is down): the objects stay staged for the
  // next Open.
  Status Drain(std::chrono::milliseconds stall_limit);

  PendingUploads Pending() const;
  const std::string& dir() const { return options_.dir; }

  // The staging file name of a key, or "" when the key cannot be one (too
  // long for a file name). Exposed for tests.
  static std::string FileNameOf(std::string_view key);

 private:
  bool IsStaged(std::string_view key);
  using Clock = std::chrono::steady_clock;

  // One staged object. `gen` changes on every Put of the key, so an upload
  // that read an older staging file knows it must not remove the new one.
  struct Entry {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t gen = 0;
    bool uploading = false;
    int failures = 0;  // consecutive failed uploads
  };
  // A scheduled upload. Items for keys deleted or staged again since are
  // stale (gen differs) and skipped.
  struct Item {
    Clock::time_point due;
    std::string key;
    uint64_t gen = 0;
    bool retry = false;  // a failed upload's next attempt (keeps its pause in Drain)
    bool operator>(const Item& o) const { return due > o.due; }
  };

  WritebackStore(std::unique_ptr<ObjectStore> backend, WritebackOptions options, int lock_fd);

  Status Scan();
  void UploadLoop();
  // Uploads one staged object; called without mu_ held, with the entry
  // marked uploading.
  void Upload(const std::string& key, uint64_t gen);
  // Stages `data`; false (and logs once) when the staging disk failed.
  bool Stage(std::string_view key, const std::string& name, std::string_view data);
  // Logs the first staging failure after a success (mu_ held).
  void StagingFailedLocked(const std::string& what, int err);
  void Schedule(std::string key, uint64_t gen, Clock::time_point due, bool retry);
  // Forgets a staged key (mu_ held): removes its file and entry.
  void DropLocked(std::map<std::string, Entry, std::less<>>::iterator it);
  std::string PathOf(const std::string& name) const { return options_.dir + "/" + name; }

  const std::unique_ptr<ObjectStore> backend_;
  const WritebackOptions options_;
  const int lock_fd_;

  mutable std::mutex mu_;
  std::condition_variable work_;  // an item was scheduled, or stopping
  std::condition_variable done_;  // an upload ended
  std::map<std::string, Entry, std::less<>> staged_;  // guarded by mu_
  std::priority_queue<Item, std::vector<Item>, std::greater<>> queue_;  // guarded by mu_
  PendingUploads pending_;             // guarded by mu_
  uint64_t next_gen_ = 1;              // guarded by mu_
  uint64_t uploaded_ = 0;              // guarded by mu_; uploads that succeeded
  bool draining_ = false;              // guarded by mu_
  bool stopping_ = false;              // guarded by mu_
  bool staging_failed_ = false;        // guarded by mu_; for logging changes only
  std::vector<std::thread> threads_;
};

}  // namespace tessera
