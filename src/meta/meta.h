// POSIX metadata over a transactional KV store, written once for every
// engine. A Meta object is one client's view of a volume: it owns the KV
// connection, this client's session, and the set of inodes this client holds
// open. Every method is thread-safe and runs in one KV transaction (retried
// on conflict), so each operation is atomic for all clients of the volume.
//
// Errors: the POSIX ones by StatusCode (kNotFound, kExists, kNotEmpty,
// kNotDir, kIsDir, kNameTooLong, kInvalid, kNoSpace...), kIo/kUnavailable when
// the engine fails, kCorrupt for a record that cannot be decoded.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "kv/kv.h"
#include "meta/attr.h"
#include "meta/settings.h"

namespace tessera {

struct EntryInfo {
  InodeId inode;
  Attr attr;
};

struct DirItem {
  std::string name;
  uint64_t cookie = 0;  // position in the directory: pass to ReadDir to continue after it
  InodeId inode;
  uint32_t type = 0;  // S_IFMT bits
  Attr attr;          // filled only by ReadDir with plus = true
};

struct DirPage {
  std::vector<DirItem> items;
  bool more = false;  // entries follow the last one returned
};

// Fields to change in SetAttr; absent ones keep their value.
struct SetAttrRequest {
  std::optional<uint32_t> mode;  // permission bits only (07777)
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<uint64_t> size;  // truncate or extend (files only)
  std::optional<int64_t> atime_ns;
  std::optional<int64_t> mtime_ns;
};

struct FsStats {
  uint64_t total_space = 0;
  uint64_t used_space = 0;
  uint64_t total_inodes = 0;
  uint64_t used_inodes = 0;
};

struct SessionInfo {
  std::string host;
  uint32_t pid = 0;
  std::string mount_point;
  std::string version;
  // Mounts with --writeback: the directory on `host` where written blocks
  // are staged, and how many it holds that are not uploaded yet (only this
  // host has them). A later session with the same host and directory took
  // the directory over: this one ended without cleaning up.
  std::string staging_dir{};
  uint64_t pending_uploads = 0;
  uint64_t pending_upload_bytes = 0;
  // How often the session promised to heartbeat (0: the default, 12 s). It
  // counts as dead after kStaleHeartbeats of them without one.
  uint32_t heartbeat_s = 0;
};

// Missed heartbeats after which any client may clean up a session.
inline constexpr int kStaleHeartbeats = 5;

struct SessionRecord {
  SessionId id;
  int64_t heartbeat_ns = 0;
  SessionInfo info;
};

// A POSIX byte-range lock as GetLk reports it. type is F_RDLCK or F_WRLCK,
// or F_UNLCK when nothing conflicts; end is inclusive (UINT64_MAX: to EOF).
struct PosixLock {
  int type = F_UNLCK;
  uint64_t start = 0;
  uint64_t end = 0;
  uint32_t pid = 0;  // of the holder, as its client saw it
};

// Which inode a name pointed at when this client last saw it: lets an
// operation read the inode's attributes in the same batch as the entry
// instead of after it (one round trip less on a networked engine). Only a
// guess: the entry read in the transaction decides. Bounded (kMaxNames).
class NameHints {
 public:
  std::optional<InodeId> Find(InodeId dir, std::string_view name);
  void Note(InodeId dir, std::string_view name, InodeId ino);
  void Forget(InodeId dir, std::string_view name);

 private:
  static constexpr size_t kMaxNames = 65'536;
  std::mutex mu_;
  std::unordered_map<std::string, InodeId> map_;  // by entry key
};

// Where this client saw each directory: its parent and name, from lookups,
// creates, listings and renames here. Gives the path a deleted entry had
// (the trash records it) without reading every ancestor. Bounded
// (kMaxDirs); a directory not known here is resolved from metadata.
class DirPaths {
 public:
  void Note(InodeId dir, InodeId parent, std::string_view name);
  void Forget(InodeId dir);
  // "/a/b" for a directory known up to the root; nullopt otherwise.
  std::optional<std::string> Path(InodeId dir);

 private:
  static constexpr size_t kMaxDirs = 100'000;
  std::mutex mu_;
  std::unordered_map<uint64_t, std::pair<InodeId, std::string>> map_;  // by inode
};

// Work a volume's clients do in the background, counted (Meta::CountPending).
struct PendingWork {
  uint64_t trash_entries = 0, trash_files = 0, trash_bytes = 0;
  // Files whose last name went, not deleted yet: waiting for background
  // deletion, or held open by a session.
  uint64_t deleted_files = 0, deleted_file_bytes = 0;
  uint64_t freed_slices = 0;    // last reference gone; blocks being deleted
  uint64_t delayed_slices = 0;  // replaced by compaction; deleted when due
  // With `scan_chunks` only (reads every chunk record): chunks holding more
  // than one slice record, and the records they hold.
  uint64_t fragmented_chunks = 0, fragmented_records = 0;
};

// An entry of the trash (Meta::ListTrash).
struct TrashItem {
  std::string hour;  // YYYY-MM-DD-HH (UTC) of the deletion: the directory it is in
  InodeId hour_dir;
  std::string name;  // <parent>_<inode>_<name> in that directory
  InodeId inode;
  Attr attr;
  std::string origin;  // its path when deleted ("" when unknown)
};

class Meta {
 public:
  // Called after a commit with slices no file references any more; the data
  // layer deletes their blocks. Runs on the calling thread.
  using SliceDeleter = std::function<void(const std::vector<SliceRef>&)>;

  // Writes the settings and the root directory of a new volume. Formatting
  // an existing volume again with the same layout succeeds and updates the
  // non-layout settings (trash days, quotas); with a different layout it
  // fails with kExists explaining the difference. *created tells which.
  static Status Format(KvStore& kv, const VolumeSettings& settings, bool* created);
  // The settings of a formatted volume; kNotFound when it is not formatted.
  static Result<VolumeSettings> LoadSettings(KvStore& kv);
  // Opens a formatted volume (kNotFound with advice when it is not).
  static Result<std::unique_ptr<Meta>> Open(std::unique_ptr<KvStore> kv);

  ~Meta();
  const VolumeSettings& settings() const { return settings_; }
  KvStore& kv() { return *kv_; }
  // Safe while operations run: a deleter being replaced finishes its calls
  // first.
  void SetSliceDeleter(SliceDeleter deleter) {
    std::unique_lock lock(deleter_mu_);
    slice_deleter_ = std::move(deleter);
  }
  // Told after each commit that changed a directory's attributes here: the
  // new attributes when this client computed them (an entry added, removed
  // or renamed), or nullptr when they changed otherwise or the directory is
  // gone. A mount uses it to answer the kernel's next GETATTR of a directory
  // it just changed (the kernel drops its cached attributes after every
  // change) without a round trip. Set before use, not while operations run.
  using DirObserver = std::function<void(InodeId dir, const Attr* attr)>;
  void SetDirObserver(DirObserver observer) { dir_observer_ = std::move(observer); }

  // Sessions: this client registers one at mount, heartbeats it, and removes
  // it at unmount. Sessions of all clients are listed by `tessera status`.
  Status StartSession(const SessionInfo& info);
  Status Heartbeat();
  // A heartbeat that also replaces the session's info (its pending upload
  // counts change while mounted). kNotFound when the session was removed.
  Status UpdateSession(const SessionInfo& info);
  Status EndSession();
  // Cleans up the sessions of other clients that stopped heartbeating (as
  // of `now_ns`): releases their locks, reclaims the files they kept open
  // after unlink, and removes the session. Returns how many were cleaned.
  // A session counts as heartbeaten no earlier than when this client's own
  // heartbeats last started to succeed: after the engine was unreachable
  // for everyone, live clients get a full expiry to heartbeat again before
  // anyone takes their locks and files.
  Result<size_t> CleanupStaleSessions(int64_t now_ns);
  // True when a session's last heartbeat is older than its expiry.
  static bool IsStale(const SessionRecord& r, int64_t now_ns);
  SessionId session() const { return session_; }
  static Result<std::vector<SessionRecord>> ListSessions(KvStore& kv);

  // Namespace.
  Result<EntryInfo> Lookup(const Context& ctx, InodeId parent, std::string_view name);
  Result<Attr> GetAttr(InodeId ino);
  Result<Attr> SetAttr(const Context& ctx, InodeId ino, const SetAttrRequest& req);
  // Creates a file, directory, FIFO, socket or device node (type in mode).
  Result<EntryInfo> Mknod(const Context& ctx, InodeId parent, std::string_view name,
                          uint32_t mode, uint32_t rdev);
  Result<EntryInfo> Mkdir(const Context& ctx, InodeId parent, std::string_view name,
                          uint32_t mode);
  // A symbolic link to `target` (1..4095 bytes).
  Result<EntryInfo> Symlink(const Context& ctx, InodeId parent, std::string_view name,
                            std::string_view target);
  Result<std::string> ReadLink(InodeId ino);
  // A hard link: a new entry for an existing non-directory inode.
  Result<EntryInfo> Link(const Context& ctx, InodeId ino, InodeId new_parent,
                         std::string_view new_name);
  Status Unlink(const Context& ctx, InodeId parent, std::string_view name);
  Status Rmdir(const Context& ctx, InodeId parent, std::string_view name);
  // flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE (both names must exist;
  // they swap atomically).
  Status Rename(const Context& ctx, InodeId parent, std::string_view name, InodeId new_parent,
                std::string_view new_name, uint32_t flags);
  // Up to `limit` entries of a directory positioned after `after_cookie`
  // (0 = from the start), in cookie order. The cost does not depend on how
  // far into the directory the cookie is.
  Result<DirPage> ReadDir(InodeId dir, uint64_t after_cookie, size_t limit, bool plus);
  Result<FsStats> StatFs();

  // Extended attributes (meta_xattr.cc), one key per name. Names are 1..255
  // bytes (kRange otherwise), values at most 65536 bytes (kValueTooLarge).
  // "system." names (POSIX ACLs) are not stored: SetXattr gives
  // kNotSupported, GetXattr kNoData. kNotFound when the inode is gone.
  // flags: 0, XATTR_CREATE (kExists if present), XATTR_REPLACE (kNoData if
  // absent). Set and remove update ctime.
  Status SetXattr(const Context& ctx, InodeId ino, std::string_view name, std::string_view value,
                  int flags);
  // kNoData when the inode has no attribute of that name.
  Result<std::string> GetXattr(InodeId ino, std::string_view name);
  // Every name the inode has, in byte order.
  Result<std::vector<std::string>> ListXattr(InodeId ino);
  // kNoData when absent.
  Status RemoveXattr(const Context& ctx, InodeId ino, std::string_view name);

  // File data.
  Result<SliceId> NewSlice();
  Result<std::vector<SliceRecord>> ReadChunk(InodeId ino, uint32_t chunk_index);
  // Appends slices to chunks of a file in one transaction, in order (later
  // ones hide earlier ones), extends the length to cover them and sets
  // mtime/ctime. kNoSpace when the capacity quota would be exceeded; nothing
  // changes then. *records gets, per chunk written, how many records it
  // holds now (what compaction is decided on).
  Result<Attr> WriteSlices(InodeId ino, const std::vector<ChunkSlice>& slices, int64_t mtime_ns,
                           std::vector<std::pair<uint32_t, size_t>>* records = nullptr);
  Result<Attr> WriteSlice(InodeId ino, uint32_t chunk_index, const SliceRecord& slice,
                          int64_t mtime_ns) {
    return WriteSlices(ino, {ChunkSlice{chunk_index, slice}}, mtime_ns);
  }

  // Compaction (meta_compact.cc). Replaces the records [first, first +
  // old.size()) of a chunk, which must still be exactly `old`, with `merged`
  // (records holding what readers saw there); records before stay below and
  // records appended since stay on top. kBusy when the chunk changed
  // otherwise (truncated, deleted, compacted elsewhere): the caller then
  // deletes its new slices. Slices no chunk references any more are not
  // deleted at once, since readers that fetched the old records may still
  // be reading them: they are queued for deletion at `delete_after_ns`.
  Status CompactChunk(InodeId ino, uint32_t chunk, size_t first,
                      const std::vector<SliceRecord>& old,
                      const std::vector<SliceRecord>& merged, int64_t delete_after_ns);
  // Slices queued for deletion whose time has come (at most `limit`).
  struct DelayedSlice {
    int64_t due_ns = 0;
    SliceRef slice;
  };
  Result<std::vector<DelayedSlice>> DueSlices(int64_t now_ns, size_t limit);
  // Forgets a queued slice once its blocks are deleted.
  Status DropDueSlice(const DelayedSlice& slice);
  // How many slices wait for delayed deletion.
  Result<uint64_t> CountDelayedSlices();

  // Slices whose last reference went (keys::FreedSlice records), to have
  // their blocks deleted: the slice deleter gets them right after the
  // commit; what it did not finish (a crash, an error, a full queue) any
  // client finds here. At most `limit`, in id order, after `after`.
  Result<std::vector<SliceRef>> FreedSlices(size_t limit, SliceId after = SliceId(0));
  // Forgets freed slices whose blocks are deleted, in one transaction.
  Status DropFreedSlices(const std::vector<SliceRef>& slices);
  Result<uint64_t> CountFreedSlices();

  // Sets the access time only (reads do not change ctime).
  Status TouchAtime(InodeId ino, int64_t atime_ns);
  // fallocate(2): mode 0 (extend), FALLOC_FL_KEEP_SIZE, PUNCH_HOLE and
  // ZERO_RANGE; other modes kNotSupported. Space is not reserved.
  Result<Attr> Fallocate(InodeId ino, int mode, uint64_t off, uint64_t len);
  // copy_file_range(2) by reference: the destination's chunks point at the
  // source's slices (their reference counts grow); no data moves. Returns
  // the bytes copied (fewer at the end of the source).
  Result<uint64_t> CopyFileRange(InodeId in, uint64_t off_in, InodeId out, uint64_t off_out,
                                 uint64_t len);

  // Files whose last link goes (unlink, rename over them) while nobody holds
  // them open here are reclaimed in the background (meta_reclaim.cc): the
  // unlink commits at once, and a thread of this client deletes the file's
  // keys and data soon after (the unlink took it out of the volume's usage
  // at once). A record per file (R<ino>) makes this survive a crash:
  // ReclaimUnlinked finishes what any client left (up to `limit` records;
  // returns how many files it deleted). DrainReclaims waits up to
  // `timeout_ms` for this client's queue to empty (unmount calls it).
  Result<size_t> ReclaimUnlinked(size_t limit);
  void DrainReclaims(int64_t timeout_ms);

  // The trash (meta_trash.cc). With trash days > 0 in the settings, the
  // unlink of a file's last name, rmdir, and a rename over a file's last
  // name move the entry into .trash/<hour>/<parent>_<inode>_<name> (the
  // hour of the deletion, UTC) and record the path it had; the file keeps
  // its data and its usage until the trash is emptied. The trash and its
  // hour directories are read-only (nothing can be created or moved into
  // them); an unlink or rmdir inside them deletes for good.
  //
  // Every entry of the trash, hour by hour.
  Status ListTrash(const std::function<Status(const TrashItem&)>& fn);
  // Moves an entry of the trash back to the path it was deleted from,
  // creating missing parent directories (mode 0755); *restored_to gets the
  // path. kExists when something has that name now; kNotFound when the
  // entry left the trash meanwhile; kInvalid when its path is unknown.
  Status RestoreFromTrash(const Context& ctx, const TrashItem& item, std::string* restored_to);
  // Deletes the entries of hour directories older than the trash days (all
  // of them when the trash is off), at most `budget` entries per call;
  // returns how many went. One client at a time does it (a lease renewed
  // with each call); others return 0 at once.
  Result<uint64_t> EmptyTrash(int64_t now_ns, uint64_t budget);
  // Counts what waits for background work (for `tessera status`).
  Result<PendingWork> CountPending(bool scan_chunks);
  // Removes `name` in `parent` with everything below it, deepest first, in
  // batches of entries (one transaction each): into the trash entry by
  // entry when it is on (as unlink and rmdir would), else for good.
  // `progress` is told the entries removed so far. Returns how many went.
  Result<uint64_t> RemoveTree(const Context& ctx, InodeId parent, std::string_view name,
                              const std::function<void(uint64_t)>& progress = {});

  // Copies `src` (a file, symlink, or a directory with everything below it)
  // to a new entry `name` in `parent` by metadata alone (meta_clone.cc):
  // the copy's chunks name the source's slices, whose reference counts
  // grow, so no block moves and the two diverge on write; deleting either
  // never affects the other. A tree is copied in batches of entries (one
  // transaction each) into a directory that only the last transaction
  // names, so the name never shows a partial copy, and a failure removes
  // what was copied. Hard links inside a tree become separate files. The
  // copies belong to the caller unless it is root (who keeps the owners).
  // `progress` is told the entries copied so far; returns their number.
  Result<uint64_t> Clone(const Context& ctx, InodeId src, InodeId parent, std::string_view name,
                         const std::function<void(uint64_t)>& progress = {});

  // Open files: an inode unlinked while open here keeps its data until the
  // last Close.
  void OnOpen(InodeId ino);
  Status OnClose(InodeId ino);

  // Advisory locks (meta_lock.cc), shared by all clients of the volume. An
  // owner is (this session, `owner`); type is F_RDLCK, F_WRLCK or F_UNLCK.
  // Never blocks: kWouldBlock when another owner holds an incompatible lock.
  // flock(2): whole file; an owner may convert its own lock when no other
  // owner's lock is in the way (on kWouldBlock it keeps what it had).
  Status Flock(InodeId ino, uint64_t owner, int type);
  // fcntl(2) locks on [start, end] (inclusive, UINT64_MAX = to EOF): an
  // owner's ranges replace, split and merge as POSIX specifies.
  Status SetLk(InodeId ino, uint64_t owner, uint32_t pid, int type, uint64_t start,
               uint64_t end);
  // The lock of another owner that conflicts with `type` on the range (the
  // lowest-starting one), or type F_UNLCK when none does.
  Result<PosixLock> GetLk(InodeId ino, uint64_t owner, int type, uint64_t start, uint64_t end);
  // Drops every POSIX lock of `owner` on the inode (close of any of its fds).
  Status ReleasePosixLocks(InodeId ino, uint64_t owner);
  // Drops every lock of a session (unmount, or cleanup after a dead client).
  Status ReleaseSessionLocks(SessionId sid);

 private:
  Meta(std::unique_ptr<KvStore> kv, VolumeSettings settings);
  Result<InodeId> NextInode();
  Result<uint64_t> Allocate(std::string_view counter, uint64_t batch, uint64_t* next,
                            uint64_t* end);
  bool IsOpen(InodeId ino);
  Status CreateNode(const Context& ctx, InodeId parent, std::string_view name, uint32_t mode,
                    uint32_t rdev, std::string_view symlink_target, EntryInfo* out);
  Status RemoveEntry(const Context& ctx, InodeId parent, std::string_view name, bool dir);
  Status CopyInodeKeys(KvTxn& txn, InodeId src, InodeId dst);
  Status ChargeNew(KvTxn& txn, int64_t inodes, int64_t space);
  // The path `name` in `parent` has, and the path of a directory, as this
  // client knows them ("" when they cannot be found).
  std::string OriginPath(InodeId parent, std::string_view name);
  std::string DirPath(InodeId dir);
  // Keys a move into the trash at `now_ns` reads (to fetch with the rest).
  static std::vector<std::string> TrashReads(int64_t now_ns);
  // Within a transaction: puts the entry `name` of `parent` (inode e, whose
  // attributes are *a) into the trash hour of `now_ns`, creating the trash
  // and the hour directory when missing. The caller removes the entry from
  // the parent.
  Status MoveToTrash(KvTxn& txn, InodeId parent, std::string_view name, const DirEntryValue& e,
                     Attr* a, int64_t now_ns, const std::string& origin);
  // Removes everything below directory `top`, deepest first, in batches:
  // into the trash when `to_trash`, else for good. Stops after about
  // `budget` entries (0: no limit). *empty tells whether top has no entries
  // left.
  Result<uint64_t> RemoveBelow(InodeId top, bool to_trash, uint64_t budget, bool* empty,
                               const std::function<void(uint64_t)>& progress);
  std::vector<std::string> EntryReads(InodeId dir, std::string_view name);
  Status RenameExchange(InodeId parent, std::string_view name, InodeId new_parent,
                        std::string_view new_name);
  void FreeSlices(const std::vector<SliceRef>& slices);
  // Queues files whose R records this client just committed.
  void ScheduleReclaim(InodeId ino);
  void ReclaimLoop();
  // Deletes the given files if their R record is still there; returns how
  // many it deleted.
  Result<size_t> ReclaimFiles(const std::vector<InodeId>& inodes);
  // After a commit that kept an unlinked open inode (0: none): remembers it,
  // and reclaims it at once if its last handle closed meanwhile.
  Status KeepUntilClosed(InodeId ino);

  std::unique_ptr<KvStore> kv_;
  const VolumeSettings settings_;
  std::shared_mutex deleter_mu_;
  SliceDeleter slice_deleter_;  // guarded by deleter_mu_
  DirObserver dir_observer_;
  void NoteDir(InodeId dir, const Attr* attr) const {
    if (dir_observer_) dir_observer_(dir, attr);
  }
  SessionId session_;
  // When this client's heartbeats last started to succeed (see
  // CleanupStaleSessions); 0 while the last one failed.
  std::atomic<int64_t> reachable_since_ns_{0};

  std::mutex alloc_mu_;
  uint64_t next_inode_ = 0, inode_end_ = 0;  // guarded by alloc_mu_
  uint64_t next_slice_ = 0, slice_end_ = 0;  // guarded by alloc_mu_

  std::mutex open_mu_;
  std::unordered_map<InodeId, int> open_counts_;  // guarded by open_mu_
  // Inodes this client keeps after their last link went (SS keys), to
  // reclaim at their last close.
  std::unordered_set<InodeId> sustained_;  // guarded by open_mu_

  NameHints hints_;
  DirPaths paths_;

  std::mutex reclaim_mu_;
  std::condition_variable reclaim_cv_;
  std::deque<InodeId> reclaim_queue_;  // guarded by reclaim_mu_
  bool reclaim_busy_ = false;          // guarded by reclaim_mu_: a batch is being deleted
  int reclaim_drains_ = 0;             // guarded by reclaim_mu_: callers of DrainReclaims waiting
  bool reclaim_stop_ = false;          // guarded by reclaim_mu_
  std::thread reclaimer_;              // started with the first queued file
};

}  // namespace tessera
