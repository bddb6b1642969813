#define FUSE_USE_VERSION 314
#include "fuse/fuse_mount.h"

#include <fuse_lowlevel.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <string>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/log.h"
#include "common/units.h"

namespace tessera {
namespace {

// Requests of up to 1 MiB: fewer round trips than libfuse's 128 KiB default.
constexpr unsigned kMaxWrite = 1u << 20;

// The kernel reads ahead of sequential readers by the backing device's
// read_ahead_kb, which starts at 128 KiB for a FUSE mount whatever
// max_readahead says: each sequential read request is then 128 KiB. Raising
// it (root only, through sysfs) lets sequential reads arrive as 1 MiB
// requests. Random readers are unaffected: the kernel reads ahead only for
// sequential access. Failure costs only speed.
void RaiseKernelReadahead(const std::string& mount_point) {
  FILE* f = std::fopen("/proc/self/mountinfo", "r");
  if (f == nullptr) return;
  std::string device;
  char line[4096];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    // "36 35 0:53 / /mnt/point rw,... - fuse.tessera tessera:vol rw,..."
    char dev[64], root[1024], point[2048];
    if (std::sscanf(line, "%*s %*s %63s %1023s %2047s", dev, root, point) != 3) continue;
    std::string p;  // the mount point with \040-style escapes undone
    for (const char* c = point; *c != '\0'; ++c) {
      if (c[0] == '\\' && c[1] >= '0' && c[1] <= '3' && c[2] != '\0' && c[3] != '\0') {
        p += static_cast<char>((c[1] - '0') * 64 + (c[2] - '0') * 8 + (c[3] - '0'));
        c += 3;
      } else {
        p += *c;
      }
    }
    if (p == mount_point && std::strstr(line, " - fuse.tessera ") != nullptr) device = dev;
  }
  std::fclose(f);
  if (device.empty()) return;
  const std::string path = "/sys/class/bdi/" + device + "/read_ahead_kb";
  FILE* ra = std::fopen(path.c_str(), "w");
  if (ra == nullptr) return;
  std::fprintf(ra, "%u\n", kMaxWrite / 1024);
  std::fclose(ra);
}

Vfs* VfsOf(fuse_req_t req) { return static_cast<Vfs*>(fuse_req_userdata(req)); }

Context ContextOf(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return Context{c->uid, c->gid, static_cast<uint32_t>(c->pid)};
}

InodeId Ino(fuse_ino_t ino) { return InodeId(ino); }

int64_t ToNanos(const timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }
timespec ToTimespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    ts.tv_sec -= 1;
  }
  return ts;
}

struct stat ToStat(InodeId ino, const Attr& a) {
  struct stat st;
  std::memset(&st, 0, sizeof(st));
  st.st_ino = ino.value();
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  // Directories report one page, as local file systems do.
  st.st_size = S_ISDIR(a.mode) ? 4096 : static_cast<off_t>(a.length);
  st.st_blocks = static_cast<blkcnt_t>((a.length + 511) / 512);
  st.st_blksize = kMaxWrite;
  st.st_atim = ToTimespec(a.atime_ns);
  st.st_mtim = ToTimespec(a.mtime_ns);
  st.st_ctim = ToTimespec(a.ctime_ns);
  return st;
}

fuse_entry_param ToEntry(Vfs* vfs, const EntryInfo& e) {
  fuse_entry_param p;
  std::memset(&p, 0, sizeof(p));
  p.ino = e.inode.value();
  p.generation = 1;
  p.attr = ToStat(e.inode, e.attr);
  p.attr_timeout = vfs->options().attr_timeout_s;
  p.entry_timeout = S_ISDIR(e.attr.mode) ? vfs->options().dir_entry_timeout_s
                                         : vfs->options().entry_timeout_s;
  return p;
}

// The errno for a reply. An EIO says nothing about its cause to the
// program that gets it, so the cause goes to the log.
int ErrnoOf(const Status& st) {
  int err = ToErrno(st);
  if (err == EIO) LogWarn("EIO: " + st.ToString());
  return err;
}

void ReplyError(fuse_req_t req, const Status& st) { fuse_reply_err(req, ErrnoOf(st)); }

void ReplyEntry(fuse_req_t req, const Result<EntryInfo>& r) {
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_entry_param p = ToEntry(VfsOf(req), *r);
  fuse_reply_entry(req, &p);
}

void ReplyAttr(fuse_req_t req, fuse_ino_t ino, const Result<Attr>& r) {
  if (!r.ok()) return ReplyError(req, r.status());
  struct stat st = ToStat(Ino(ino), *r);
  fuse_reply_attr(req, &st, VfsOf(req)->options().attr_timeout_s);
}

void OnInit(void*, fuse_conn_info* conn) {
  conn->max_write = kMaxWrite;
  conn->max_readahead = kMaxWrite;
  unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_READDIRPLUS |
                  FUSE_CAP_READDIRPLUS_AUTO;
  conn->want |= want & conn->capable;
  // Without these the kernel keeps locks to itself, invisible to other mounts.
  conn->want |= (FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS) & conn->capable;
  // The kernel page cache must not hide other clients' writes by default.
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_WRITEBACK_CACHE);
}

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Vfs* vfs = VfsOf(req);
  auto r = vfs->Lookup(ContextOf(req), Ino(parent), name);
  if (!r.ok() && r.status().Is(StatusCode::kNotFound)) {
    // A negative entry: the kernel remembers the absence for entry_timeout.
    fuse_entry_param p;
    std::memset(&p, 0, sizeof(p));
    p.entry_timeout = vfs->options().entry_timeout_s;
    fuse_reply_entry(req, &p);
    return;
  }
  ReplyEntry(req, r);
}

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  ReplyAttr(req, ino, VfsOf(req)->GetAttr(ContextOf(req), Ino(ino)));
}

void OnSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  SetAttrRequest r;
  if (to_set & FUSE_SET_ATTR_MODE) r.mode = attr->st_mode & 07777;
  if (to_set & FUSE_SET_ATTR_UID) r.uid = attr->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) r.gid = attr->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) r.size = static_cast<uint64_t>(attr->st_size);
  const int64_t now = NowNanos();
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) r.atime_ns = now;
  else if (to_set & FUSE_SET_ATTR_ATIME) r.atime_ns = ToNanos(attr->st_atim);
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) r.mtime_ns = now;
  else if (to_set & FUSE_SET_ATTR_MTIME) r.mtime_ns = ToNanos(attr->st_mtim);
  ReplyAttr(req, ino, VfsOf(req)->SetAttr(ContextOf(req), Ino(ino), r));
}

void OnMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  ReplyEntry(req, VfsOf(req)->Mknod(ContextOf(req), Ino(parent), name, mode,
                                    static_cast<uint32_t>(rdev)));
}

void OnMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  ReplyEntry(req, VfsOf(req)->Mkdir(ContextOf(req), Ino(parent), name, mode));
}

void OnSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  ReplyEntry(req, VfsOf(req)->Symlink(ContextOf(req), Ino(parent), name, target));
}

void OnReadlink(fuse_req_t req, fuse_ino_t ino) {
  auto r = VfsOf(req)->ReadLink(ContextOf(req), Ino(ino));
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_readlink(req, r->c_str());
}

void OnLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  ReplyEntry(req, VfsOf(req)->Link(ContextOf(req), Ino(ino), Ino(new_parent), new_name));
}

void OnFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Fallocate(ContextOf(req), Ino(ino), fi->fh, mode,
                                                    static_cast<uint64_t>(offset),
                                                    static_cast<uint64_t>(length))));
}

void OnCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                     fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                     int /*flags*/) {
  auto r = VfsOf(req)->CopyFileRange(ContextOf(req), Ino(ino_in), fi_in->fh,
                                     static_cast<uint64_t>(off_in), Ino(ino_out), fi_out->fh,
                                     static_cast<uint64_t>(off_out), len);
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_write(req, *r);
}

void OnUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Unlink(ContextOf(req), Ino(parent), name)));
}

void OnRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Rmdir(ContextOf(req), Ino(parent), name)));
}

void OnRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
              const char* new_name, unsigned int flags) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Rename(ContextOf(req), Ino(parent), name,
                                                 Ino(new_parent), new_name, flags)));
}

void OnCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  Vfs* vfs = VfsOf(req);
  uint64_t handle = 0;
  auto r = vfs->Create(ContextOf(req), Ino(parent), name, mode, fi->flags, &handle);
  if (!r.ok()) return ReplyError(req, r.status());
  fi->fh = handle;
  fuse_entry_param p = ToEntry(vfs, *r);
  if (fuse_reply_create(req, &p, fi) != 0) (void)vfs->Release(r->inode, handle);
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Vfs* vfs = VfsOf(req);
  auto r = vfs->Open(ContextOf(req), Ino(ino), fi->flags);
  if (!r.ok()) return ReplyError(req, r.status());
  fi->fh = *r;
  fi->keep_cache = vfs->KeepCache(*r);
  if (fuse_reply_open(req, fi) != 0) (void)vfs->Release(Ino(ino), *r);
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  std::unique_ptr<char[]> buf(new char[size]);
  auto r = VfsOf(req)->Read(ContextOf(req), Ino(ino), fi->fh, static_cast<uint64_t>(off), size,
                            buf.get());
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_buf(req, buf.get(), *r);
}

void OnWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
             fuse_file_info* fi) {
  auto r = VfsOf(req)->Write(ContextOf(req), Ino(ino), fi->fh, static_cast<uint64_t>(off),
                             std::string_view(data, size));
  if (!r.ok()) return ReplyError(req, r.status());
  fuse_reply_write(req, *r);
}

void OnFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Flush(ContextOf(req), Ino(ino), fi->fh,
                                                fi->lock_owner)));
}

void OnFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info* fi) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Fsync(ContextOf(req), Ino(ino), fi->fh)));
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto flock_owner = fi->flock_release ? std::optional<uint64_t>(fi->lock_owner) : std::nullopt;
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->Release(Ino(ino), fi->fh, flock_owner)));
}

// Locks: l_len 0 means "to EOF", which the Vfs spells end = UINT64_MAX. A
// blocking request stops waiting when the kernel interrupts it (a signal).
PosixLock ToLock(const struct flock* l) {
  const uint64_t start = static_cast<uint64_t>(l->l_start);
  return PosixLock{l->l_type, start, l->l_len == 0 ? UINT64_MAX : start + l->l_len - 1,
                   static_cast<uint32_t>(l->l_pid)};
}

void ReplyLockStatus(fuse_req_t req, const Status& st) {
  fuse_reply_err(req, !st.ok() && fuse_req_interrupted(req) ? EINTR : ErrnoOf(st));
}

// A request that must wait for a lock waits on a thread of its own, not on
// one of the few FUSE workers: the request that frees the lock (and the
// kernel's INTERRUPT) may need a worker. ServeFuse stops them before the
// session goes. One mount per process, so one set of waiters.
struct LockWaiters {
  static constexpr int kMaxThreads = 1024;  // past this, wait on the worker
  std::mutex mu;
  std::condition_variable idle;
  int active = 0;  // guarded by mu
  std::atomic<bool> stopping{false};
};
LockWaiters g_lock_waiters;

using LockCall = std::function<Status(bool block, const std::function<bool()>& interrupted)>;

void LockAndReply(fuse_req_t req, bool block, LockCall call) {
  Status st = call(false, {});
  if (!block || !st.Is(StatusCode::kWouldBlock)) return ReplyLockStatus(req, st);
  auto interrupted = [req] {
    return g_lock_waiters.stopping || fuse_req_interrupted(req) != 0;
  };
  {
    std::lock_guard lock(g_lock_waiters.mu);
    if (g_lock_waiters.active >= LockWaiters::kMaxThreads) {
      return ReplyLockStatus(req, call(true, interrupted));
    }
    g_lock_waiters.active++;
  }
  std::thread([req, call = std::move(call), interrupted] {
    ReplyLockStatus(req, call(true, interrupted));
    std::lock_guard lock(g_lock_waiters.mu);
    if (--g_lock_waiters.active == 0) g_lock_waiters.idle.notify_all();
  }).detach();
}

void StopLockWaiters() {
  g_lock_waiters.stopping = true;
  std::unique_lock lock(g_lock_waiters.mu);
  g_lock_waiters.idle.wait(lock, [] { return g_lock_waiters.active == 0; });
}

void OnGetlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  auto r = VfsOf(req)->GetLk(ContextOf(req), Ino(ino), fi->fh, fi->lock_owner, ToLock(lock));
  if (!r.ok()) return ReplyError(req, r.status());
  struct flock out;
  std::memset(&out, 0, sizeof(out));
  out.l_type = static_cast<short>(r->type);
  out.l_whence = SEEK_SET;
  if (r->type != F_UNLCK) {
    out.l_start = static_cast<off_t>(r->start);
    const bool to_eof = r->end >= static_cast<uint64_t>(INT64_MAX);
    out.l_len = to_eof ? 0 : static_cast<off_t>(r->end - r->start + 1);
    out.l_pid = static_cast<pid_t>(r->pid);
  }
  fuse_reply_lock(req, &out);
}

void OnSetlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep) {
  LockAndReply(req, sleep != 0,
               [vfs = VfsOf(req), ctx = ContextOf(req), ino = Ino(ino), fh = fi->fh,
                owner = fi->lock_owner, l = ToLock(lock)](bool block, const auto& interrupted) {
                 return vfs->SetLk(ctx, ino, fh, owner, l, block, interrupted);
               });
}

void OnFlock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  LockAndReply(req, (op & LOCK_NB) == 0,
               [vfs = VfsOf(req), ctx = ContextOf(req), ino = Ino(ino), fh = fi->fh,
                owner = fi->lock_owner, op = op & ~LOCK_NB](bool block, const auto& interrupted) {
                 return vfs->Flock(ctx, ino, fh, owner, op, block, interrupted);
               });
}

void OnOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto r = VfsOf(req)->OpenDir(ContextOf(req), Ino(ino));
  if (!r.ok()) return ReplyError(req, r.status());
  fi->fh = *r;
  fuse_reply_open(req, fi);
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                   bool plus) {
  Vfs* vfs = VfsOf(req);
  // A dirent takes at least 24 bytes (plus: ~150): ask for what fits.
  const size_t limit = std::max<size_t>(1, size / (plus ? 150 : 24));
  auto r = vfs->ReadDir(ContextOf(req), Ino(ino), fi->fh, static_cast<uint64_t>(off), limit, plus);
  if (!r.ok()) return ReplyError(req, r.status());
  std::vector<char> buf(size);
  size_t used = 0;
  for (const DirListing& d : *r) {
    size_t need;
    if (plus) {
      fuse_entry_param p;
      std::memset(&p, 0, sizeof(p));
      if (d.attr.mode != 0) {
        p = ToEntry(vfs, EntryInfo{d.inode, d.attr});
      } else {  // no attributes: let the kernel look the name up itself
        p.attr.st_ino = d.inode.value();
        p.attr.st_mode = d.type;
      }
      if (d.name == "." || d.name == "..") {
        p.attr_timeout = p.entry_timeout = 0;
        p.ino = 0;
      }
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, d.name.c_str(), &p,
                                    static_cast<off_t>(d.next_offset));
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_ino = d.inode.value();
      st.st_mode = d.type;
      need = fuse_add_direntry(req, buf.data() + used, size - used, d.name.c_str(), &st,
                               static_cast<off_t>(d.next_offset));
    }
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, ino, size, off, fi, false);
}

void OnReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, ino, size, off, fi, true);
}

void OnReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->ReleaseDir(fi->fh)));
}

void OnStatfs(fuse_req_t req, fuse_ino_t) {
  auto r = VfsOf(req)->StatFs(ContextOf(req));
  if (!r.ok()) return ReplyError(req, r.status());
  struct statvfs st;
  std::memset(&st, 0, sizeof(st));
  constexpr uint64_t kBlock = 4096;
  st.f_bsize = kBlock;
  st.f_frsize = kBlock;
  st.f_blocks = r->total_space / kBlock;
  const uint64_t used_blocks = (r->used_space + kBlock - 1) / kBlock;
  st.f_bfree = st.f_blocks > used_blocks ? st.f_blocks - used_blocks : 0;
  st.f_bavail = st.f_bfree;
  st.f_files = r->total_inodes;
  st.f_ffree = r->total_inodes > r->used_inodes ? r->total_inodes - r->used_inodes : 0;
  st.f_favail = st.f_ffree;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

// The getxattr/listxattr size protocol: size 0 asks for the length only; a
// buffer too small for the data is ERANGE.
void ReplyXattrData(fuse_req_t req, std::string_view data, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, data.size());
  } else if (data.size() > size) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, data.data(), data.size());
  }
}

void OnSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->SetXattr(ContextOf(req), Ino(ino), name,
                                                   std::string_view(value, size), flags)));
}

void OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto r = VfsOf(req)->GetXattr(ContextOf(req), Ino(ino), name);
  if (!r.ok()) return ReplyError(req, r.status());
  ReplyXattrData(req, *r, size);
}

void OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto r = VfsOf(req)->ListXattr(ContextOf(req), Ino(ino));
  if (!r.ok()) return ReplyError(req, r.status());
  std::string list;
  for (const std::string& name : *r) {
    list.append(name);
    list.push_back('\0');
  }
  constexpr size_t kXattrListMax = 65536;  // Linux's XATTR_LIST_MAX
  if (list.size() > kXattrListMax) {
    fuse_reply_err(req, E2BIG);
    return;
  }
  ReplyXattrData(req, list, size);
}

void OnRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  fuse_reply_err(req, ErrnoOf(VfsOf(req)->RemoveXattr(ContextOf(req), Ino(ino), name)));
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.getattr = OnGetattr;
  ops.setattr = OnSetattr;
  ops.mknod = OnMknod;
  ops.mkdir = OnMkdir;
  ops.symlink = OnSymlink;
  ops.readlink = OnReadlink;
  ops.link = OnLink;
  ops.fallocate = OnFallocate;
  ops.copy_file_range = OnCopyFileRange;
  ops.unlink = OnUnlink;
  ops.rmdir = OnRmdir;
  ops.rename = OnRename;
  ops.create = OnCreate;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.write = OnWrite;
  ops.flush = OnFlush;
  ops.fsync = OnFsync;
  ops.release = OnRelease;
  ops.getlk = OnGetlk;
  ops.setlk = OnSetlk;
  ops.flock = OnFlock;
  ops.opendir = OnOpendir;
  ops.readdir = OnReaddir;
  ops.readdirplus = OnReaddirplus;
  ops.releasedir = OnReleasedir;
  ops.statfs = OnStatfs;
  ops.setxattr = OnSetxattr;
  ops.getxattr = OnGetxattr;
  ops.listxattr = OnListxattr;
  ops.removexattr = OnRemovexattr;
  return ops;
}

}  // namespace

Status ServeFuse(Vfs* vfs, const FuseOptions& options, const std::function<void()>& on_mounted) {
  std::vector<std::string> argv_storage = {"tessera"};
  std::string opts = "fsname=" + options.fs_name + ",subtype=tessera,default_permissions";
  if (options.allow_other) opts += ",allow_other";
  argv_storage.push_back("-o");
  argv_storage.push_back(opts);
  if (options.debug) argv_storage.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_storage) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  fuse_lowlevel_ops ops = MakeOps();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), vfs);
  if (se == nullptr) return Unavailable("cannot start a FUSE session (is /dev/fuse available?)");
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_session_destroy(se);
    return Unavailable("cannot install signal handlers");
  }
  if (fuse_session_mount(se, options.mount_point.c_str()) != 0) {
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return Unavailable("cannot mount at " + options.mount_point +
                       " (is FUSE available and the mount point an existing directory?)");
  }
  RaiseKernelReadahead(options.mount_point);
  on_mounted();
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, options.max_threads);
  fuse_loop_cfg_set_clone_fd(cfg, 1);
  int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  StopLockWaiters();
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  if (rc < 0) return IoError("FUSE session ended with error " + std::to_string(-rc));
  return Status::Ok();
}

}  // namespace tessera
