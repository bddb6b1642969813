#include "vfs/vfs.h"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "common/log.h"
#include "common/units.h"
#include "data/file_reader.h"
#include "data/readahead.h"
#include "vfs/meta_chunks.h"

namespace tessera {

namespace {

// Freed slices held in memory for deletion at most; more wait in metadata.
constexpr size_t kMaxQueuedDeletes = 100'000;

// Directory entries fetched from metadata per ReadDir call.
constexpr size_t kDirPage = 1024;
// ReadDir offsets: 1 and 2 stand after "." and ".."; an entry's offset is
// its cookie (>= 3), so any offset handed out can be resumed from directly.
constexpr uint64_t kAfterDot = 1;
constexpr uint64_t kAfterDotDot = 2;

}  // namespace

// Per open inode: the write buffer shared by all its handles.
struct Vfs::OpenFile {
  OpenFile(InodeId ino, ChunkMeta* chunks, SliceStore* slices, UploadQueue* uploads,
           Compactor* compactor)
      : writer(ino, chunks, slices, uploads, compactor) {}
  FileWriter writer;
  int handles = 0;  // guarded by Vfs::mu_
  // The kernel asks for security.capability before every write(2) to decide
  // whether to clear it; once known to be absent, it is answered from here.
  std::atomic<bool> no_capability{false};
  // Set once a POSIX lock was taken here: only then does a close cost a
  // metadata call to drop the closing process's locks.
  std::atomic<bool> posix_locked{false};
};

struct Vfs::FileHandle {
  InodeId ino;
  int flags = 0;
  std::shared_ptr<OpenFile> file;
  std::unique_ptr<Readahead> readahead;
  bool keep_cache = false;     // set once at open
};

// A directory stream: keeps the last page fetched, because the kernel often
// takes only part of it and asks for the rest at the next offset.
struct Vfs::DirHandle {
  std::mutex mu;
  InodeId ino;
  uint64_t page_after = ~0ull;  // the cookie the page follows (~0: no page)
  std::vector<DirItem> page;    // guarded by mu
  bool more = false;            // entries follow the page
};

Vfs::Vfs(Meta* meta, SliceStore* slices, VfsOptions options, BlockCache* cache)
    : meta_(meta), slices_(slices), options_(options),
      chunks_(std::make_unique<MetaChunks>(meta)),
      reader_(std::make_unique<BlockReader>(slices, cache, options.max_downloads)),
      compactor_(std::make_unique<Compactor>(chunks_.get(), reader_.get(), options.compact)),
      uploads_(std::make_unique<UploadQueue>(options.max_uploads, options.buffer_bytes)),
      deletes_(std::make_unique<DeleteQueue>(
          slices, options.max_deletes, kMaxQueuedDeletes, [this](const std::vector<SliceRef>& done) {
            Status st = meta_->DropFreedSlices(done);
            if (!st.ok()) LogWarn("forgetting deleted slices: " + st.ToString());
          })) {
  // Freed slices are recorded in the commit that freed them; their blocks
  // go in the background.
  meta_->SetSliceDeleter([this](const std::vector<SliceRef>& freed) { deletes_->Add(freed); });
  if (options_.attr_timeout_s > 0) {
    meta_->SetDirObserver([this](InodeId dir, const Attr* attr) { NoteDir(dir, attr); });
  }
  // Writers waiting for buffer memory get it back from the partial blocks
  // that open files hold.
  uploads_->SetPressureHandler([this] { (void)FlushAll(); });
}

Vfs::~Vfs() {
  // Files unlinked here give their blocks back while the store is open.
  meta_->DrainReclaims(10'000);
  meta_->SetSliceDeleter(nullptr);
  deletes_->Drain(10'000);
  meta_->SetDirObserver(nullptr);
}

void Vfs::NoteDir(InodeId dir, const Attr* attr) {
  std::lock_guard lock(recent_dirs_mu_);
  if (attr == nullptr) {
    recent_dirs_.erase(dir.value());
    return;
  }
  if (recent_dirs_.size() >= kMaxRecentDirs) recent_dirs_.clear();
  auto [it, inserted] = recent_dirs_.try_emplace(dir.value());
  // Two commits may report in the other order: keep the later change.
  if (!inserted && it->second.attr.ctime_ns > attr->ctime_ns) return;
  it->second = RecentDir{*attr, std::chrono::steady_clock::now()};
}

std::optional<Attr> Vfs::RecentDirAttr(InodeId dir) {
  std::lock_guard lock(recent_dirs_mu_);
  auto it = recent_dirs_.find(dir.value());
  if (it == recent_dirs_.end()) return std::nullopt;
  const auto age = std::chrono::steady_clock::now() - it->second.at;
  if (age >= std::chrono::duration<double>(options_.attr_timeout_s)) {
    recent_dirs_.erase(it);
    return std::nullopt;
  }
  return it->second.attr;
}

std::shared_ptr<Vfs::OpenFile> Vfs::FindFile(InodeId ino) {
  std::lock_guard lock(mu_);
  auto it = files_.find(ino);
  return it == files_.end() ? nullptr : it->second;
}

std::shared_ptr<Vfs::FileHandle> Vfs::FindHandle(uint64_t handle) {
  std::lock_guard lock(mu_);
  auto it = handles_.find(handle);
  return it == handles_.end() ? nullptr : it->second;
}

uint64_t Vfs::AddHandle(InodeId ino, int flags) {
  std::shared_ptr<OpenFile> file;
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    auto& slot = files_[ino];
    if (!slot) {
      slot = std::make_shared<OpenFile>(ino, chunks_.get(), slices_, uploads_.get(),
                                        compactor_.get());
    }
    slot->handles++;
    id = next_handle_++;
    auto handle = std::make_shared<FileHandle>();
    handle->ino = ino;
    handle->flags = flags;
    handle->readahead = std::make_unique<Readahead>(
        slices_->block_size(), options_.prefetch_blocks * slices_->block_size());
    handle->file = slot;
    handles_[id] = std::move(handle);
  }
  meta_->OnOpen(ino);
  return id;
}

Status Vfs::FlushFile(InodeId ino) {
  auto file = FindFile(ino);
  return file ? file->writer.Flush() : Status::Ok();
}

void Vfs::AddPendingWrites(InodeId ino, Attr* a) {
  auto file = FindFile(ino);
  if (!file) return;
  a->length = std::max(a->length, file->writer.PendingEnd());
  const int64_t written = file->writer.PendingMtime();
  a->mtime_ns = std::max(a->mtime_ns, written);
  a->ctime_ns = std::max(a->ctime_ns, written);
}

Result<EntryInfo> Vfs::Lookup(const Context& ctx, InodeId parent, std::string_view name) {
  ASSIGN_OR_RETURN(EntryInfo e, meta_->Lookup(ctx, parent, name));
  AddPendingWrites(e.inode, &e.attr);
  return e;
}

Result<Attr> Vfs::GetAttr(const Context&, InodeId ino) {
  if (std::optional<Attr> recent = RecentDirAttr(ino)) return *recent;
  ASSIGN_OR_RETURN(Attr a, meta_->GetAttr(ino));
  AddPendingWrites(ino, &a);
  return a;
}

Result<Attr> Vfs::SetAttr(const Context& ctx, InodeId ino, const SetAttrRequest& req) {
  // Buffered writes must land before the length changes under them, and
  // before an explicit mtime (cp -p) that their commit would overwrite.
  if (req.size || req.mtime_ns) RETURN_IF_ERROR(FlushFile(ino));
  NoteDir(ino, nullptr);
  Result<Attr> a = meta_->SetAttr(ctx, ino, req);
  if (a.ok() && a->IsDir()) NoteDir(ino, &*a);
  return a;
}

Result<EntryInfo> Vfs::Mknod(const Context& ctx, InodeId parent, std::string_view name,
                             uint32_t mode, uint32_t rdev) {
  return meta_->Mknod(ctx, parent, name, mode, rdev);
}

Result<EntryInfo> Vfs::Mkdir(const Context& ctx, InodeId parent, std::string_view name,
                             uint32_t mode) {
  return meta_->Mkdir(ctx, parent, name, mode);
}

Result<EntryInfo> Vfs::Symlink(const Context& ctx, InodeId parent, std::string_view name,
                               std::string_view target) {
  return meta_->Symlink(ctx, parent, name, target);
}

Result<std::string> Vfs::ReadLink(const Context&, InodeId ino) { return meta_->ReadLink(ino); }

Result<EntryInfo> Vfs::Link(const Context& ctx, InodeId ino, InodeId new_parent,
                            std::string_view new_name) {
  return meta_->Link(ctx, ino, new_parent, new_name);
}

Status Vfs::Unlink(const Context& ctx, InodeId parent, std::string_view name) {
  return meta_->Unlink(ctx, parent, name);
}

Status Vfs::Rmdir(const Context& ctx, InodeId parent, std::string_view name) {
  return meta_->Rmdir(ctx, parent, name);
}

Status Vfs::Rename(const Context& ctx, InodeId parent, std::string_view name, InodeId new_parent,
                   std::string_view new_name, uint32_t flags) {
  return meta_->Rename(ctx, parent, name, new_parent, new_name, flags);
}

Result<EntryInfo> Vfs::Create(const Context& ctx, InodeId parent, std::string_view name,
                              uint32_t mode, int flags, uint64_t* handle) {
  ASSIGN_OR_RETURN(EntryInfo e, meta_->Mknod(ctx, parent, name, S_IFREG | (mode & 07777), 0));
  *handle = AddHandle(e.inode, flags);
  // A new file has no attributes: its first write need not ask metadata.
  if (auto file = FindFile(e.inode)) file->no_capability = true;
  return e;
}

Result<uint64_t> Vfs::Open(const Context& ctx, InodeId ino, int flags) {
  ASSIGN_OR_RETURN(Attr a, meta_->GetAttr(ino));
  if (a.IsDir()) return Status(StatusCode::kIsDir, "is a directory");
  // The kernel passes O_TRUNC here instead of a separate truncate.
  const bool truncate = (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && a.IsFile();
  if (truncate) {
    SetAttrRequest req;
    req.size = 0;
    ASSIGN_OR_RETURN(a, SetAttr(ctx, ino, req));
  }
  const uint64_t id = AddHandle(ino, flags);
  // Close-to-open: cached pages stay only if the file is as it was.
  constexpr size_t kMaxSeen = 1 << 20;  // bounds the memory of the table
  std::lock_guard lock(mu_);
  const std::pair<int64_t, uint64_t> version{a.mtime_ns, a.length};
  auto seen = seen_versions_.find(ino);
  const bool unchanged = !truncate && seen != seen_versions_.end() && seen->second == version;
  if (seen_versions_.size() >= kMaxSeen) seen_versions_.clear();
  seen_versions_[ino] = version;
  if (auto h = handles_.find(id); h != handles_.end()) h->second->keep_cache = unchanged;
  return id;
}

bool Vfs::KeepCache(uint64_t handle) {
  auto h = FindHandle(handle);
  return h && h->keep_cache;
}

Result<size_t> Vfs::Read(const Context&, InodeId ino, uint64_t handle, uint64_t offset,
                         size_t size, char* out) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  // A reader must see this client's writes: commit them first.
  if (h->file->writer.dirty()) RETURN_IF_ERROR(h->file->writer.Flush());
  ASSIGN_OR_RETURN(Attr a, meta_->GetAttr(ino));
  const bool sequential = h->readahead->Begin(offset, size);
  ASSIGN_OR_RETURN(size_t n, ReadFile(*chunks_, *reader_, ino, a.length, offset, size,
                                      sequential || options_.whole_block_reads, out));
  const Readahead::Range ahead = h->readahead->End(offset, n, sequential);
  if (ahead.to > ahead.from) PrefetchFile(*chunks_, *reader_, ino, a.length, ahead.from, ahead.to - ahead.from);
  TouchAtime(ino, a);
  return n;
}

void Vfs::TouchAtime(InodeId ino, const Attr& a) {
  constexpr int64_t kDay = 86400ll * 1'000'000'000;
  const int64_t now = NowNanos();
  bool touch = false;
  switch (options_.atime_mode) {
    case AtimeMode::kNoAtime: break;
    case AtimeMode::kRelAtime:
      touch = a.atime_ns <= a.mtime_ns || a.atime_ns <= a.ctime_ns || now - a.atime_ns >= kDay;
      break;
    case AtimeMode::kStrictAtime: touch = true; break;
  }
  // A failed atime update must not fail the read that caused it.
  if (touch) (void)meta_->TouchAtime(ino, now);
}

Status Vfs::CheckCapacity(InodeId ino, uint64_t end) {
  const uint64_t capacity = meta_->settings().capacity;
  if (capacity == 0) return Status::Ok();
  ASSIGN_OR_RETURN(Attr a, meta_->GetAttr(ino));
  uint64_t pending = a.length;
  if (auto file = FindFile(ino)) pending = std::max(pending, file->writer.PendingEnd());
  if (SpaceOf(end) <= SpaceOf(pending)) return Status::Ok();
  // Used space counts committed lengths: add all this file's growth.
  ASSIGN_OR_RETURN(FsStats st, meta_->StatFs());
  if (st.used_space + SpaceOf(end) - SpaceOf(a.length) > capacity) {
    return Status(StatusCode::kNoSpace, "capacity quota of the volume reached");
  }
  return Status::Ok();
}

Result<size_t> Vfs::Write(const Context&, InodeId ino, uint64_t handle, uint64_t offset,
                          std::string_view data) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  if ((h->flags & O_ACCMODE) == O_RDONLY) return Status(StatusCode::kBadHandle, "not open for writing");
  if (h->flags & O_APPEND) {
    ASSIGN_OR_RETURN(Attr a, meta_->GetAttr(ino));
    offset = std::max(a.length, h->file->writer.PendingEnd());
  }
  if (offset + data.size() > kMaxFileSize) return Status(StatusCode::kTooBig, "file too large");
  // Refuse a write that cannot fit before buffering any of it.
  RETURN_IF_ERROR(CheckCapacity(ino, offset + data.size()));
  {
    // The next open cannot know which version the kernel's pages hold.
    std::lock_guard lock(mu_);
    seen_versions_.erase(ino);
  }
  RETURN_IF_ERROR(h->file->writer.Write(offset, data));
  return data.size();
}

Status Vfs::Fallocate(const Context&, InodeId ino, uint64_t handle, int mode, uint64_t offset,
                      uint64_t length) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  if ((h->flags & O_ACCMODE) == O_RDONLY) return Status(StatusCode::kBadHandle, "not open for writing");
  RETURN_IF_ERROR(h->file->writer.Flush());
  auto attr = meta_->Fallocate(ino, mode, offset, length);
  return attr.ok() ? Status::Ok() : attr.status();
}

Result<size_t> Vfs::CopyFileRange(const Context&, InodeId in, uint64_t in_handle, uint64_t off_in,
                                  InodeId out, uint64_t out_handle, uint64_t off_out,
                                  size_t length) {
  auto src = FindHandle(in_handle);
  auto dst = FindHandle(out_handle);
  if (!src || src->ino != in || !dst || dst->ino != out) {
    return Status(StatusCode::kBadHandle, "unknown file handle");
  }
  if ((dst->flags & O_ACCMODE) == O_RDONLY) return Status(StatusCode::kBadHandle, "not open for writing");
  // Both files' pending writes must be in the slices being shared.
  RETURN_IF_ERROR(src->file->writer.Flush());
  RETURN_IF_ERROR(dst->file->writer.Flush());
  ASSIGN_OR_RETURN(uint64_t copied, meta_->CopyFileRange(in, off_in, out, off_out, length));
  return static_cast<size_t>(copied);
}

Status Vfs::Flush(const Context&, InodeId ino, uint64_t handle,
                  std::optional<uint64_t> lock_owner) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  Status st = h->file->writer.Flush();
  if (lock_owner && h->file->posix_locked) {
    Status unlocked = meta_->ReleasePosixLocks(ino, *lock_owner);
    if (st.ok()) st = unlocked;
  }
  return st;
}

Status Vfs::Fsync(const Context& ctx, InodeId ino, uint64_t handle) {
  return Flush(ctx, ino, handle);
}

Status Vfs::Release(InodeId ino, uint64_t handle, std::optional<uint64_t> flock_owner) {
  std::shared_ptr<FileHandle> h;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(handle);
    if (it == handles_.end()) return Status(StatusCode::kBadHandle, "unknown file handle");
    h = it->second;
    handles_.erase(it);
  }
  Status st = h->file->writer.Flush();
  if (flock_owner) {
    Status unlocked = meta_->Flock(ino, *flock_owner, F_UNLCK);
    if (st.ok()) st = unlocked;
  }
  {
    std::lock_guard lock(mu_);
    if (--h->file->handles == 0) files_.erase(ino);
  }
  Status closed = meta_->OnClose(ino);
  return st.ok() ? closed : st;
}

namespace {
// Retries a non-blocking lock call while it would block (when `block`),
// sleeping 1 ms, doubling up to 100 ms, so a freed lock is taken quickly
// without hammering the metadata engine.
Status RetryLock(const std::function<Status()>& attempt, bool block,
                 const std::function<bool()>& interrupted) {
  auto delay = std::chrono::milliseconds(1);
  while (true) {
    Status st = attempt();
    if (!block || !st.Is(StatusCode::kWouldBlock)) return st;
    if (interrupted && interrupted()) return Unavailable("lock wait interrupted");
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(100));
  }
}
}  // namespace

Status Vfs::Flock(const Context&, InodeId ino, uint64_t handle, uint64_t owner, int op,
                  bool block, const std::function<bool()>& interrupted) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  const int type = (op & LOCK_UN)   ? F_UNLCK
                   : (op & LOCK_EX) ? F_WRLCK
                   : (op & LOCK_SH) ? F_RDLCK
                                    : -1;
  if (type < 0) return Invalid("flock operation must be LOCK_SH, LOCK_EX or LOCK_UN");
  return RetryLock([&] { return meta_->Flock(ino, owner, type); }, block, interrupted);
}

Result<PosixLock> Vfs::GetLk(const Context&, InodeId ino, uint64_t handle, uint64_t owner,
                             const PosixLock& probe) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  return meta_->GetLk(ino, owner, probe.type, probe.start, probe.end);
}

Status Vfs::SetLk(const Context&, InodeId ino, uint64_t handle, uint64_t owner,
                  const PosixLock& lock, bool block, const std::function<bool()>& interrupted) {
  auto h = FindHandle(handle);
  if (!h || h->ino != ino) return Status(StatusCode::kBadHandle, "unknown file handle");
  if (lock.type != F_UNLCK) h->file->posix_locked = true;  // before the lock exists
  return RetryLock(
      [&] { return meta_->SetLk(ino, owner, lock.pid, lock.type, lock.start, lock.end); }, block,
      interrupted);
}

Result<uint64_t> Vfs::OpenDir(const Context&, InodeId ino) {
  ASSIGN_OR_RETURN(Attr a, meta_->GetAttr(ino));
  if (!a.IsDir()) return Status(StatusCode::kNotDir, "not a directory");
  auto d = std::make_shared<DirHandle>();
  d->ino = ino;
  std::lock_guard lock(mu_);
  uint64_t id = next_handle_++;
  dirs_[id] = d;
  return id;
}

Result<std::vector<DirListing>> Vfs::ReadDir(const Context&, InodeId ino, uint64_t handle,
                                             uint64_t offset, size_t limit, bool plus) {
  std::shared_ptr<DirHandle> d;
  {
    std::lock_guard lock(mu_);
    auto it = dirs_.find(handle);
    if (it == dirs_.end()) return Status(StatusCode::kBadHandle, "unknown directory handle");
    d = it->second;
  }
  std::lock_guard lock(d->mu);
  std::vector<DirListing> out;
  if (offset < kAfterDotDot) {
    ASSIGN_OR_RETURN(Attr self, meta_->GetAttr(ino));
    if (offset == 0) TouchAtime(ino, self);
    if (offset < kAfterDot) out.push_back({".", ino, S_IFDIR, self, kAfterDot});
    Attr parent_attr;
    if (auto p = meta_->GetAttr(self.parent); p.ok()) parent_attr = *p;
    out.push_back({"..", self.parent, S_IFDIR, parent_attr, kAfterDotDot});
  }
  const uint64_t cookie = offset <= kAfterDotDot ? 0 : offset;
  if (offset == 0) d->page_after = ~0ull;  // rewinddir: see the directory afresh
  // Continue inside the cached page when the offset falls in it.
  size_t start = d->page.size() + 1;
  if (d->page_after == cookie) {
    start = 0;
  } else {
    for (size_t i = 0; i < d->page.size(); ++i) {
      if (d->page[i].cookie == cookie) {
        start = i + 1;
        break;
      }
    }
  }
  if (start > d->page.size() || (start == d->page.size() && d->more)) {
    ASSIGN_OR_RETURN(DirPage p, meta_->ReadDir(ino, cookie, kDirPage, plus));
    d->page_after = cookie;
    d->page = std::move(p.items);
    d->more = p.more;
    start = 0;
  }
  for (size_t i = start; i < d->page.size() && out.size() < limit; ++i) {
    const DirItem& item = d->page[i];
    out.push_back({item.name, item.inode, item.type, item.attr, item.cookie});
  }
  return out;
}

Status Vfs::ReleaseDir(uint64_t handle) {
  std::lock_guard lock(mu_);
  dirs_.erase(handle);
  return Status::Ok();
}

Result<FsStats> Vfs::StatFs(const Context&) { return meta_->StatFs(); }

namespace {
constexpr std::string_view kCapabilityXattr = "security.capability";
}  // namespace

Status Vfs::SetXattr(const Context& ctx, InodeId ino, std::string_view name,
                     std::string_view value, int flags) {
  if (auto file = FindFile(ino)) file->no_capability = false;
  NoteDir(ino, nullptr);  // its ctime changes
  return meta_->SetXattr(ctx, ino, name, value, flags);
}

Result<std::string> Vfs::GetXattr(const Context&, InodeId ino, std::string_view name) {
  auto file = name == kCapabilityXattr ? FindFile(ino) : nullptr;
  if (file && file->no_capability) return Status(StatusCode::kNoData, "no such attribute");
  auto value = meta_->GetXattr(ino, name);
  if (file && !value.ok() && value.status().Is(StatusCode::kNoData)) file->no_capability = true;
  return value;
}

Result<std::vector<std::string>> Vfs::ListXattr(const Context&, InodeId ino) {
  return meta_->ListXattr(ino);
}

Status Vfs::RemoveXattr(const Context& ctx, InodeId ino, std::string_view name) {
  NoteDir(ino, nullptr);  // its ctime changes
  return meta_->RemoveXattr(ctx, ino, name);
}

Status Vfs::FlushAll() {
  std::vector<std::shared_ptr<OpenFile>> files;
  {
    std::lock_guard lock(mu_);
    for (auto& [ino, f] : files_) files.push_back(f);
  }
  Status first;
  for (auto& f : files) {
    Status st = f->writer.Flush();
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

Status Vfs::FlushUploadedBefore(int64_t age_ns) {
  std::vector<std::shared_ptr<OpenFile>> files;
  {
    std::lock_guard lock(mu_);
    for (auto& [ino, f] : files_) files.push_back(f);
  }
  const int64_t before = NowNanos() - age_ns;
  Status first;
  for (auto& f : files) {
    const int64_t oldest = f->writer.OldestUploadNs();
    if (oldest == 0 || oldest > before) continue;
    Status st = f->writer.Flush();
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

Result<size_t> Vfs::QueueFreedSlices() {
  size_t queued = 0;
  SliceId after(0);
  // Bounded by the queue: what does not fit waits for the next call.
  while (deletes_->pending() < kMaxQueuedDeletes / 2) {
    ASSIGN_OR_RETURN(std::vector<SliceRef> page, meta_->FreedSlices(1024, after));
    queued += deletes_->Add(page);
    if (page.size() < 1024) break;
    after = page.back().id;
  }
  return queued;
}

Result<size_t> Vfs::DeleteDueSlices() {
  size_t deleted = 0;
  while (true) {
    ASSIGN_OR_RETURN(auto due, meta_->DueSlices(NowNanos(), 256));
    for (const Meta::DelayedSlice& d : due) {
      // Blocks first: a crash in between leaves the entry to retry, never a leak.
      RETURN_IF_ERROR(slices_->Delete(d.slice));
      RETURN_IF_ERROR(meta_->DropDueSlice(d));
      deleted++;
    }
    if (due.size() < 256) return deleted;
  }
}

}  // namespace tessera
