// The file system as programs see it, independent of how requests arrive
// (FUSE today, the S3 gateway and tools later). Vfs owns open handles and
// per-file write buffers, makes reads see this client's own writes, and
// turns POSIX calls into metadata operations and data reads/writes. It never
// includes libfuse headers. Every method is thread-safe.
//
// Handles: Open/Create/OpenDir return a handle id; every Read/Write/Flush/
// Release names it. Data written through any handle is committed on
// Flush/Fsync/Release (close-to-open consistency).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "cache/block_cache.h"
#include "data/delete_queue.h"
#include "data/block_reader.h"
#include "data/chunk_meta.h"
#include "data/compactor.h"
#include "data/file_writer.h"
#include "data/slice_store.h"
#include "data/upload_queue.h"
#include "meta/meta.h"

namespace tessera {

// When reads update the access time, as the mount options of Linux say.
enum class AtimeMode {
  kNoAtime,      // never
  kRelAtime,     // when atime is older than mtime or ctime, or than a day
  kStrictAtime,  // on every read
};

struct VfsOptions {
  double attr_timeout_s = 1.0;       // how long the kernel may cache attributes
  double entry_timeout_s = 1.0;      // ... a name -> inode entry
  double dir_entry_timeout_s = 1.0;  // ... entries of directories
  AtimeMode atime_mode = AtimeMode::kRelAtime;
  size_t max_uploads = 20;                // block uploads running at once
  size_t max_downloads = 16;              // block downloads (readahead) at once
  size_t max_deletes = 10;                // slices whose blocks are deleted at once
  uint64_t prefetch_blocks = 8;           // how far a sequential reader reads ahead, in blocks
  uint64_t buffer_bytes = 300ull << 20;   // written data held in memory before upload
  CompactOptions compact;                 // when chunks are merged in the background
  bool whole_block_reads = false;         // random readers too fetch (and cache) whole blocks
};

// One directory entry returned by ReadDir, with the offset to resume after it.
struct DirListing {
  std::string name;
  InodeId inode;
  uint32_t type = 0;
  Attr attr;        // with plus
  uint64_t next_offset = 0;
};

class Vfs {
 public:
  // meta and slices must outlive the Vfs.
  // `cache` may be null (no block cache); it must outlive the Vfs too.
  Vfs(Meta* meta, SliceStore* slices, VfsOptions options, BlockCache* cache = nullptr);
  ~Vfs();

  const VfsOptions& options() const { return options_; }

  Result<EntryInfo> Lookup(const Context& ctx, InodeId parent, std::string_view name);
  Result<Attr> GetAttr(const Context& ctx, InodeId ino);
  Result<Attr> SetAttr(const Context& ctx, InodeId ino, const SetAttrRequest& req);
  Result<EntryInfo> Mknod(const Context& ctx, InodeId parent, std::string_view name,
                          uint32_t mode, uint32_t rdev);
  Result<EntryInfo> Mkdir(const Context& ctx, InodeId parent, std::string_view name,
                          uint32_t mode);
  Result<EntryInfo> Symlink(const Context& ctx, InodeId parent, std::string_view name,
                            std::string_view target);
  Result<std::string> ReadLink(const Context& ctx, InodeId ino);
  Result<EntryInfo> Link(const Context& ctx, InodeId ino, InodeId new_parent,
                         std::string_view new_name);
  Status Unlink(const Context& ctx, InodeId parent, std::string_view name);
  Status Rmdir(const Context& ctx, InodeId parent, std::string_view name);
  Status Rename(const Context& ctx, InodeId parent, std::string_view name, InodeId new_parent,
                std::string_view new_name, uint32_t flags);

  // Creates and opens a regular file. *handle receives the handle id.
  Result<EntryInfo> Create(const Context& ctx, InodeId parent, std::string_view name,
                           uint32_t mode, int flags, uint64_t* handle);
  Result<uint64_t> Open(const Context& ctx, InodeId ino, int flags);
  // True when the kernel may keep the pages it cached of the file opened as
  // `handle`: the file has the same mtime and length as when this mount
  // last opened it, and this mount has not written it since.
  bool KeepCache(uint64_t handle);
  Result<size_t> Read(const Context& ctx, InodeId ino, uint64_t handle, uint64_t offset,
                      size_t size, char* out);
  Result<size_t> Write(const Context& ctx, InodeId ino, uint64_t handle, uint64_t offset,
                       std::string_view data);
  // fallocate(2) on an open file; pending writes are committed first.
  Status Fallocate(const Context& ctx, InodeId ino, uint64_t handle, int mode, uint64_t offset,
                   uint64_t length);
  // copy_file_range(2): shares the source's slices instead of copying bytes.
  Result<size_t> CopyFileRange(const Context& ctx, InodeId in, uint64_t in_handle,
                               uint64_t off_in, InodeId out, uint64_t out_handle,
                               uint64_t off_out, size_t length);
  // close(2) of one descriptor. With a lock_owner, also drops that owner's
  // POSIX locks on the file (POSIX: any close by a process releases them).
  Status Flush(const Context& ctx, InodeId ino, uint64_t handle,
               std::optional<uint64_t> lock_owner = std::nullopt);
  Status Fsync(const Context& ctx, InodeId ino, uint64_t handle);
  // Last close of an open file description; with flock_owner, also drops
  // the flock that description holds.
  Status Release(InodeId ino, uint64_t handle, std::optional<uint64_t> flock_owner = std::nullopt);

  // Advisory locks, held in metadata so that every client sees them (see
  // Meta::Flock/SetLk). owner: the kernel's lock owner. op: LOCK_SH, LOCK_EX
  // or LOCK_UN. Without block, a conflict is kWouldBlock; with it, the call
  // retries (1 ms sleep doubling to 100 ms) until the lock is granted, or
  // returns kUnavailable once `interrupted` returns true. Blocking calls
  // hold their thread while they wait; there is no deadlock detection.
  Status Flock(const Context& ctx, InodeId ino, uint64_t handle, uint64_t owner, int op,
               bool block, const std::function<bool()>& interrupted = {});
  // fcntl F_GETLK: the first conflicting lock of another owner, or F_UNLCK.
  Result<PosixLock> GetLk(const Context& ctx, InodeId ino, uint64_t handle, uint64_t owner,
                          const PosixLock& probe);
  // fcntl F_SETLK (block: F_SETLKW); lock.pid is the caller's pid.
  Status SetLk(const Context& ctx, InodeId ino, uint64_t handle, uint64_t owner,
               const PosixLock& lock, bool block, const std::function<bool()>& interrupted = {});

  Result<uint64_t> OpenDir(const Context& ctx, InodeId ino);
  // Entries starting at `offset` (0 = the beginning, else a next_offset
  // returned before), at most `limit`. Includes "." and "..". An empty
  // result means the end.
  Result<std::vector<DirListing>> ReadDir(const Context& ctx, InodeId ino, uint64_t handle,
                                          uint64_t offset, size_t limit, bool plus);
  Status ReleaseDir(uint64_t handle);

  Result<FsStats> StatFs(const Context& ctx);

  // Extended attributes: see Meta::SetXattr and friends for limits and errors.
  Status SetXattr(const Context& ctx, InodeId ino, std::string_view name, std::string_view value,
                  int flags);
  Result<std::string> GetXattr(const Context& ctx, InodeId ino, std::string_view name);
  Result<std::vector<std::string>> ListXattr(const Context& ctx, InodeId ino);
  Status RemoveXattr(const Context& ctx, InodeId ino, std::string_view name);

  // Commits every buffered write (used at unmount).
  Status FlushAll();
  // Commits the writes of files with blocks uploaded more than `age_ns`
  // ago and not committed yet (called periodically): a writer that never
  // flushes must not leave blocks that look leaked to `tessera gc`, which
  // spares only objects younger than an hour.
  Status FlushUploadedBefore(int64_t age_ns);
  // Deletes the blocks of slices replaced by compaction whose grace period
  // is over (called periodically); returns how many slices went.
  Result<size_t> DeleteDueSlices();
  // Queues for deletion the freed slices that no client deleted yet (a
  // crash, an error, a full queue; called periodically); returns how many
  // it queued.
  Result<size_t> QueueFreedSlices();
  // Waits up to `timeout_ms` for the slices queued for deletion.
  bool DrainDeletes(int64_t timeout_ms) { return deletes_->Drain(timeout_ms); }
  Compactor& compactor() { return *compactor_; }

 private:
  struct OpenFile;
  struct FileHandle;
  struct DirHandle;

  std::shared_ptr<OpenFile> AcquireFile(InodeId ino);
  std::shared_ptr<OpenFile> FindFile(InodeId ino);
  std::shared_ptr<FileHandle> FindHandle(uint64_t handle);
  uint64_t AddHandle(InodeId ino, int flags);
  Status FlushFile(InodeId ino);
  // Shows this client's uncommitted writes in attributes: length and mtime.
  void AddPendingWrites(InodeId ino, Attr* attr);
  // Updates the access time after a read or listing, as atime_mode asks.
  void TouchAtime(InodeId ino, const Attr& attr);
  // kNoSpace when growing a file to `end` would pass the capacity quota.
  Status CheckCapacity(InodeId ino, uint64_t end);
  // Attributes of directories this mount just changed (Meta::DirObserver):
  // the kernel drops its cached attributes of a directory after every
  // create, unlink or rename in it and asks again at the next path walk;
  // within the attribute-cache time they are answered from here.
  void NoteDir(InodeId dir, const Attr* attr);
  std::optional<Attr> RecentDirAttr(InodeId dir);

  Meta* const meta_;
  SliceStore* const slices_;
  const VfsOptions options_;

  struct RecentDir {
    Attr attr;
    std::chrono::steady_clock::time_point at;
  };
  static constexpr size_t kMaxRecentDirs = 4096;
  std::mutex recent_dirs_mu_;
  std::unordered_map<uint64_t, RecentDir> recent_dirs_;  // guarded by recent_dirs_mu_
  std::unique_ptr<ChunkMeta> chunks_;
  std::unique_ptr<BlockReader> reader_;
  std::unique_ptr<Compactor> compactor_;
  // Declared before the open files so that it outlives their writers.
  std::unique_ptr<UploadQueue> uploads_;
  std::unique_ptr<DeleteQueue> deletes_;

  std::mutex mu_;
  uint64_t next_handle_ = 1;                                             // guarded by mu_
  std::unordered_map<InodeId, std::shared_ptr<OpenFile>> files_;         // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<FileHandle>> handles_;    // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dirs_;        // guarded by mu_
  // (mtime, length) of files when last opened here, for KeepCache.
  std::unordered_map<InodeId, std::pair<int64_t, uint64_t>> seen_versions_;  // guarded by mu_
};

}  // namespace tessera
