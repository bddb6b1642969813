// Volume lifecycle, sessions and namespace operations (lookup, create,
// remove, rename, readdir). File data records live in meta_file.cc.
#include "meta/meta.h"

#include <linux/fs.h>

#include <nlohmann/json.hpp>

#include "common/coding.h"
#include "common/log.h"
#include "common/units.h"
#include "meta/keys.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::AddCounter;
using meta_internal::CheckName;
using meta_internal::GetCounter;
using meta_internal::LoadAttr;
using meta_internal::Prefetch;
using meta_internal::PutAttr;

namespace {

// Ids are handed out to each client in batches so that creating files does
// not make every client contend on one counter key.
constexpr uint64_t kInodeBatch = 256;
constexpr uint64_t kSliceBatch = 1024;
// Total reported by statfs when the volume has no capacity quota: 1 PiB.
constexpr uint64_t kUnlimitedSpace = 1ull << 50;
constexpr uint64_t kUnlimitedInodesHeadroom = 10'000'000;

Status CheckDir(const Attr& a, InodeId ino) {
  if (!a.IsDir()) return Status(StatusCode::kNotDir, "inode " + std::to_string(ino.value()) + " is not a directory");
  if (a.nlink == 0) return NotFound("directory was removed");
  return Status::Ok();
}

void Touch(Attr* a, int64_t now) {
  a->mtime_ns = now;
  a->ctime_ns = now;
}

std::string EncodeCounter(int64_t v) {
  std::string s;
  PutBig64(&s, static_cast<uint64_t>(v));
  return s;
}

}  // namespace

Status Meta::Format(KvStore& kv, const VolumeSettings& settings, bool* created) {
  RETURN_IF_ERROR(ValidateVolumeName(settings.name));
  return WithTransaction(kv, [&](KvTxn& txn) -> Status {
    *created = false;
    ASSIGN_OR_RETURN(auto existing, txn.Get(keys::Settings()));
    if (existing) {
      ASSIGN_OR_RETURN(VolumeSettings old, VolumeSettings::FromJson(*existing));
      std::string diff = old.LayoutDifference(settings);
      if (!diff.empty()) {
        return Exists("this metadata engine already holds a volume and " + diff +
                      "; use another META-URL or keep the existing settings");
      }
      VolumeSettings updated = old;
      updated.trash_days = settings.trash_days;
      updated.capacity = settings.capacity;
      updated.inodes = settings.inodes;
      // New keys for the same bucket (rotated credentials, say).
      updated.access_key = settings.access_key;
      updated.secret_key = settings.secret_key;
      updated.session_token = settings.session_token;
      updated.region = settings.region;
      updated.skip_tls_verify = settings.skip_tls_verify;
      txn.Put(keys::Settings(), updated.ToJson());
      return Status::Ok();
    }
    *created = true;
    txn.Put(keys::Settings(), settings.ToJson());
    int64_t now = NowNanos();
    Attr root;
    root.mode = S_IFDIR | 0777;
    root.atime_ns = root.mtime_ns = root.ctime_ns = now;
    root.nlink = 2;
    root.parent = kRootInode;
    PutAttr(txn, kRootInode, root);
    txn.Put(keys::Counter(keys::kNextInode), EncodeCounter(kRootInode.value() + 1));
    txn.Put(keys::Counter(keys::kNextSlice), EncodeCounter(1));
    txn.Put(keys::Counter(keys::kNextSession), EncodeCounter(1));
    txn.Put(keys::Counter(keys::kUsedSpace), EncodeCounter(0));
    txn.Put(keys::Counter(keys::kUsedInodes), EncodeCounter(0));
    return Status::Ok();
  });
}

Result<VolumeSettings> Meta::LoadSettings(KvStore& kv) {
  std::optional<std::string> value;
  RETURN_IF_ERROR(WithReadTransaction(kv, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(value, txn.Get(keys::Settings()));
    return Status::Ok();
  }));
  if (!value) {
    return NotFound("no volume is formatted in " + kv.Url() + " (run 'tessera format " +
                    kv.Url() + " NAME' first)");
  }
  return VolumeSettings::FromJson(*value);
}

Result<std::unique_ptr<Meta>> Meta::Open(std::unique_ptr<KvStore> kv) {
  ASSIGN_OR_RETURN(VolumeSettings settings, LoadSettings(*kv));
  return std::unique_ptr<Meta>(new Meta(std::move(kv), std::move(settings)));
}

Meta::Meta(std::unique_ptr<KvStore> kv, VolumeSettings settings)
    : kv_(std::move(kv)), settings_(std::move(settings)) {}

Meta::~Meta() {
  DrainReclaims(5'000);
  {
    std::lock_guard lock(reclaim_mu_);
    reclaim_stop_ = true;
  }
  reclaim_cv_.notify_all();
  if (reclaimer_.joinable()) reclaimer_.join();
}

// ---- sessions ----

namespace {
std::string EncodeSession(int64_t heartbeat_ns, const SessionInfo& info) {
  std::string out;
  PutBig64(&out, static_cast<uint64_t>(heartbeat_ns));
  nlohmann::ordered_json j;
  j["host"] = info.host;
  j["pid"] = info.pid;
  j["mount_point"] = info.mount_point;
  j["version"] = info.version;
  if (!info.staging_dir.empty()) j["staging_dir"] = info.staging_dir;
  j["pending_uploads"] = info.pending_uploads;
  j["pending_upload_bytes"] = info.pending_upload_bytes;
  if (info.heartbeat_s != 0) j["heartbeat_s"] = info.heartbeat_s;
  out += j.dump();
  return out;
}
}  // namespace

Status Meta::StartSession(const SessionInfo& info) {
  uint64_t next = 0, end = 0;
  ASSIGN_OR_RETURN(uint64_t id, Allocate(keys::kNextSession, 1, &next, &end));
  session_ = SessionId(id);
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    txn.Put(keys::Session(session_), EncodeSession(NowNanos(), info));
    return Status::Ok();
  }));
  reachable_since_ns_ = NowNanos();
  return Status::Ok();
}

Status Meta::Heartbeat() {
  if (session_.value() == 0) return Status::Ok();
  Status s = WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto value, txn.Get(keys::Session(session_)));
    if (!value || value->size() < 8) return NotFound("session was removed");
    std::string updated = *value;
    std::string stamp;
    PutBig64(&stamp, static_cast<uint64_t>(NowNanos()));
    updated.replace(0, 8, stamp);
    txn.Put(keys::Session(session_), updated);
    return Status::Ok();
  });
  if (!s.ok()) {
    reachable_since_ns_ = 0;
  } else if (reachable_since_ns_ == 0) {
    reachable_since_ns_ = NowNanos();
  }
  return s;
}

Status Meta::UpdateSession(const SessionInfo& info) {
  if (session_.value() == 0) return Status::Ok();
  return WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto value, txn.Get(keys::Session(session_)));
    if (!value) return NotFound("session was removed");
    txn.Put(keys::Session(session_), EncodeSession(NowNanos(), info));
    return Status::Ok();
  });
}

Status Meta::EndSession() {
  if (session_.value() == 0) return Status::Ok();
  SessionId sid = session_;
  RETURN_IF_ERROR(ReleaseSessionLocks(sid));
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    txn.Delete(keys::Session(sid));
    return Status::Ok();
  }));
  session_ = SessionId(0);
  return Status::Ok();
}

bool Meta::IsStale(const SessionRecord& r, int64_t now_ns) {
  const int64_t interval_s = r.info.heartbeat_s != 0 ? r.info.heartbeat_s : 12;
  return now_ns - r.heartbeat_ns > kStaleHeartbeats * interval_s * 1'000'000'000;
}

Result<size_t> Meta::CleanupStaleSessions(int64_t now_ns) {
  ASSIGN_OR_RETURN(auto sessions, ListSessions(*kv_));
  size_t cleaned = 0;
  for (const SessionRecord& r : sessions) {
    const int64_t reachable_since = reachable_since_ns_;
    if (reachable_since == 0) return cleaned;  // our own heartbeat just failed
    SessionRecord seen = r;
    seen.heartbeat_ns = std::max(r.heartbeat_ns, reachable_since);
    if (r.id == session_ || !IsStale(seen, now_ns)) continue;
    RETURN_IF_ERROR(ReleaseSessionLocks(r.id));
    // Files it kept after their last unlink: nobody else holds them open
    // through this session any more.
    std::vector<InodeId> kept;
    RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
      kept.clear();
      ASSIGN_OR_RETURN(ScanResult page,
                       txn.Scan(keys::SustainedInode(r.id, InodeId(0)),
                                keys::SustainedInode(SessionId(r.id.value() + 1), InodeId(0)), 0));
      for (const auto& item : page.items) {
        kept.push_back(InodeId(GetBig64(item.key.data() + item.key.size() - 8)));
      }
      return Status::Ok();
    }));
    for (InodeId ino : kept) {
      std::vector<SliceRef> freed;
      RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
        freed.clear();
        Attr a;
        Status st = meta_internal::LoadAttr(txn, ino, &a);
        if (st.ok() && a.nlink == 0 && !IsOpen(ino)) {
          RETURN_IF_ERROR(meta_internal::DeleteInode(txn, ino, &freed));
        } else if (!st.ok() && !st.Is(StatusCode::kNotFound)) {
          return st;
        }
        txn.Delete(keys::SustainedInode(r.id, ino));
        return Status::Ok();
      }));
      FreeSlices(freed);
    }
    // Removed only if it did not come back to life meanwhile.
    RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(auto value, txn.Get(keys::Session(r.id)));
      if (value && value->size() >= 8 &&
          static_cast<int64_t>(GetBig64(value->data())) == r.heartbeat_ns) {
        txn.Delete(keys::Session(r.id));
      }
      return Status::Ok();
    }));
    cleaned++;
  }
  return cleaned;
}

Result<std::vector<SessionRecord>> Meta::ListSessions(KvStore& kv) {
  std::vector<SessionRecord> out;
  RETURN_IF_ERROR(WithReadTransaction(kv, [&](KvTxn& txn) -> Status {
    out.clear();
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(keys::SessionsBegin(), keys::SessionsEnd(), 0));
    for (const auto& item : page.items) {
      if (item.key.size() != 10 || item.value.size() < 8) continue;
      SessionRecord r;
      r.id = SessionId(GetBig64(item.key.data() + 2));
      r.heartbeat_ns = static_cast<int64_t>(GetBig64(item.value.data()));
      auto j = nlohmann::json::parse(item.value.substr(8), nullptr, false);
      if (j.is_object()) {
        r.info.host = j.value("host", "");
        r.info.pid = j.value("pid", 0u);
        r.info.mount_point = j.value("mount_point", "");
        r.info.version = j.value("version", "");
        r.info.staging_dir = j.value("staging_dir", "");
        r.info.pending_uploads = j.value("pending_uploads", uint64_t{0});
        r.info.pending_upload_bytes = j.value("pending_upload_bytes", uint64_t{0});
        r.info.heartbeat_s = j.value("heartbeat_s", 0u);
      }
      out.push_back(std::move(r));
    }
    return Status::Ok();
  }));
  return out;
}

// ---- name hints ----

std::optional<InodeId> NameHints::Find(InodeId dir, std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = map_.find(keys::Entry(dir, name));
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

void NameHints::Note(InodeId dir, std::string_view name, InodeId ino) {
  std::lock_guard lock(mu_);
  if (map_.size() >= kMaxNames) map_.clear();  // bounded; refilled as names are seen
  map_.insert_or_assign(keys::Entry(dir, name), ino);
}

void NameHints::Forget(InodeId dir, std::string_view name) {
  std::lock_guard lock(mu_);
  map_.erase(keys::Entry(dir, name));
}

// The keys an operation on `name` in `dir` reads first: the entry, the
// directory's attributes, and the attributes of the inode the name pointed
// at when last seen here.
std::vector<std::string> Meta::EntryReads(InodeId dir, std::string_view name) {
  std::vector<std::string> reads = {keys::Entry(dir, name), keys::Attr(dir)};
  if (std::optional<InodeId> ino = hints_.Find(dir, name)) reads.push_back(keys::Attr(*ino));
  return reads;
}

// ---- id allocation ----

Result<uint64_t> Meta::Allocate(std::string_view counter, uint64_t batch, uint64_t* next,
                                uint64_t* end) {
  std::lock_guard lock(alloc_mu_);
  if (*next < *end) return (*next)++;
  int64_t start = 0;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(start, GetCounter(txn, counter));
    ASSIGN_OR_RETURN(auto v, AddCounter(txn, counter, static_cast<int64_t>(batch)));
    (void)v;
    return Status::Ok();
  }));
  *next = static_cast<uint64_t>(start);
  *end = *next + batch;
  return (*next)++;
}

Result<InodeId> Meta::NextInode() {
  ASSIGN_OR_RETURN(uint64_t id, Allocate(keys::kNextInode, kInodeBatch, &next_inode_, &inode_end_));
  return InodeId(id);
}

Result<SliceId> Meta::NewSlice() {
  ASSIGN_OR_RETURN(uint64_t id, Allocate(keys::kNextSlice, kSliceBatch, &next_slice_, &slice_end_));
  return SliceId(id);
}

// ---- namespace ----

Result<EntryInfo> Meta::Lookup(const Context&, InodeId parent, std::string_view name) {
  if (name.size() > 255) return Status(StatusCode::kNameTooLong, "name longer than 255 bytes");
  EntryInfo out;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    // The parent is needed when the name is absent (a create follows).
    RETURN_IF_ERROR(Prefetch(txn, EntryReads(parent, name)));
    ASSIGN_OR_RETURN(auto entry, txn.Get(keys::Entry(parent, name)));
    if (!entry) {
      Attr dir;
      RETURN_IF_ERROR(LoadAttr(txn, parent, &dir));
      RETURN_IF_ERROR(CheckDir(dir, parent));
      // The trash is not an entry of the root (listings skip it) but has
      // its name there, once something was deleted into it.
      if (parent == kRootInode && name == kTrashName) {
        out.inode = kTrashInode;
        return LoadAttr(txn, kTrashInode, &out.attr);
      }
      return NotFound("no such entry");
    }
    ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(*entry));
    out.inode = e.inode;
    return LoadAttr(txn, e.inode, &out.attr);
  }));
  hints_.Note(parent, name, out.inode);
  if (out.attr.IsDir()) paths_.Note(out.inode, parent, name);
  return out;
}

Result<Attr> Meta::GetAttr(InodeId ino) {
  Attr out;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) { return LoadAttr(txn, ino, &out); }));
  return out;
}

Status Meta::CreateNode(const Context& ctx, InodeId parent, std::string_view name, uint32_t mode,
                        uint32_t rdev, std::string_view symlink_target, EntryInfo* out) {
  RETURN_IF_ERROR(CheckName(name));
  RETURN_IF_ERROR(meta_internal::CheckNotReserved(parent, name));
  ASSIGN_OR_RETURN(InodeId ino, NextInode());
  const bool is_dir = S_ISDIR(mode);
  Attr dir_after;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    std::vector<std::string> reads = {keys::Attr(parent), keys::Entry(parent, name)};
    if (settings_.inodes > 0) reads.push_back(keys::Counter(keys::kUsedInodes));
    RETURN_IF_ERROR(Prefetch(txn, reads));
    Attr dir;
    RETURN_IF_ERROR(LoadAttr(txn, parent, &dir));
    RETURN_IF_ERROR(CheckDir(dir, parent));
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(parent, dir));
    ASSIGN_OR_RETURN(auto existing, txn.Get(keys::Entry(parent, name)));
    if (existing) {
      // A commit whose answer was lost (the server restarted) may have made
      // it already: the inode this call took tells, and the create succeeds.
      ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(*existing));
      if (e.inode != ino) return Exists("entry exists");
      out->inode = ino;
      dir_after = dir;
      return LoadAttr(txn, ino, &out->attr);
    }
    if (settings_.inodes > 0) {
      ASSIGN_OR_RETURN(int64_t used_inodes, AddCounter(txn, keys::kUsedInodes, 1));
      if (static_cast<uint64_t>(used_inodes) > settings_.inodes) {
        return Status(StatusCode::kNoSpace, "inode quota of the volume reached");
      }
    } else {
      meta_internal::IncrementCounter(txn, keys::kUsedInodes, 1);
    }
    int64_t now = NowNanos();
    Attr a;
    a.mode = mode;
    a.uid = ctx.uid;
    // setgid directories pass their group on, like every local file system.
    a.gid = (dir.mode & S_ISGID) ? dir.gid : ctx.gid;
    if (is_dir && (dir.mode & S_ISGID)) a.mode |= S_ISGID;
    a.atime_ns = a.mtime_ns = a.ctime_ns = now;
    a.nlink = is_dir ? 2 : 1;
    a.rdev = rdev;
    a.parent = parent;
    if (S_ISLNK(mode)) {
      a.length = symlink_target.size();
      txn.Put(keys::Symlink(ino), symlink_target);
    }
    PutAttr(txn, ino, a);
    txn.Put(keys::Entry(parent, name), EncodeEntry({mode & S_IFMT, ino}));
    Touch(&dir, now);
    if (is_dir) dir.nlink++;
    PutAttr(txn, parent, dir);
    dir_after = dir;
    out->inode = ino;
    out->attr = a;
    return Status::Ok();
  }));
  NoteDir(parent, &dir_after);
  hints_.Note(parent, name, ino);
  if (is_dir) paths_.Note(ino, parent, name);
  return Status::Ok();
}

Result<EntryInfo> Meta::Mknod(const Context& ctx, InodeId parent, std::string_view name,
                              uint32_t mode, uint32_t rdev) {
  if (S_ISDIR(mode)) return Invalid("use Mkdir for directories");
  if ((mode & S_IFMT) == 0) mode |= S_IFREG;
  EntryInfo out;
  RETURN_IF_ERROR(CreateNode(ctx, parent, name, mode, rdev, {}, &out));
  return out;
}

Result<EntryInfo> Meta::Mkdir(const Context& ctx, InodeId parent, std::string_view name,
                              uint32_t mode) {
  EntryInfo out;
  RETURN_IF_ERROR(CreateNode(ctx, parent, name, S_IFDIR | (mode & 07777), 0, {}, &out));
  return out;
}

Status Meta::RemoveEntry(const Context&, InodeId parent, std::string_view name, bool want_dir) {
  if (name.size() > 255) return Status(StatusCode::kNameTooLong, "name longer than 255 bytes");
  // Inside the trash an entry goes for good; elsewhere into the trash when
  // it is on. The path is what this client knows, found before the
  // transaction so that it reads no ancestor.
  const bool trash_on = settings_.trash_days > 0 && !IsTrashDir(parent);
  const std::string origin = trash_on ? OriginPath(parent, name) : std::string();
  const int64_t now = NowNanos();
  InodeId kept, removed, reclaimed;
  Attr dir_after;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    kept = reclaimed = InodeId();
    std::vector<std::string> reads = EntryReads(parent, name);
    if (trash_on) {
      for (std::string& key : TrashReads(now)) reads.push_back(std::move(key));
    }
    RETURN_IF_ERROR(Prefetch(txn, reads));
    Attr dir;
    RETURN_IF_ERROR(LoadAttr(txn, parent, &dir));
    RETURN_IF_ERROR(CheckDir(dir, parent));
    ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Entry(parent, name)));
    if (!raw) return NotFound("no such entry");
    ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(*raw));
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, e.inode, &a));
    // A directory in an hour directory of the trash is in the trash too.
    const bool to_trash = trash_on && !IsTrashDir(dir.parent);
    if (want_dir) {
      if (!a.IsDir()) return Status(StatusCode::kNotDir, "not a directory");
      ASSIGN_OR_RETURN(ScanResult children,
                       txn.Scan(keys::EntriesBegin(e.inode), keys::EntriesEnd(e.inode), 1));
      if (!children.items.empty()) return Status(StatusCode::kNotEmpty, "directory not empty");
      if (to_trash) {
        RETURN_IF_ERROR(MoveToTrash(txn, parent, name, e, &a, now, origin));
      } else {
        RETURN_IF_ERROR(meta_internal::DeleteXattrs(txn, e.inode));
        txn.Delete(keys::Attr(e.inode));
        txn.Delete(keys::TrashOrigin(e.inode));
        // The trash and its hour directories are not counted.
        if (!IsTrashDir(e.inode)) meta_internal::IncrementCounter(txn, keys::kUsedInodes, -1);
      }
      if (!IsTrashDir(parent)) dir.nlink--;  // the trash's own directories keep nlink 1
    } else {
      if (a.IsDir()) return Status(StatusCode::kIsDir, "is a directory");
      if (to_trash && a.nlink == 1) {
        RETURN_IF_ERROR(MoveToTrash(txn, parent, name, e, &a, now, origin));
      } else {
        a.nlink--;
        a.ctime_ns = now;
        if (a.nlink > 0) {
          PutAttr(txn, e.inode, a);
        } else if (IsOpen(e.inode)) {
          // Still open here: keep the data until the last close.
          PutAttr(txn, e.inode, a);
          txn.Put(keys::SustainedInode(session_, e.inode), "");
          meta_internal::UncountInode(txn, a);
          kept = e.inode;
        } else {
          PutAttr(txn, e.inode, a);
          txn.Put(keys::Reclaim(e.inode), "");
          meta_internal::UncountInode(txn, a);  // its space is free at once
          reclaimed = e.inode;
        }
      }
    }
    txn.Delete(keys::Entry(parent, name));
    Touch(&dir, now);
    PutAttr(txn, parent, dir);
    dir_after = dir;
    removed = e.inode;
    return Status::Ok();
  }));
  NoteDir(parent, &dir_after);
  if (want_dir) {
    NoteDir(removed, nullptr);
    paths_.Forget(removed);
  }
  hints_.Forget(parent, name);
  ScheduleReclaim(reclaimed);
  return KeepUntilClosed(kept);
}

Status Meta::Unlink(const Context& ctx, InodeId parent, std::string_view name) {
  return RemoveEntry(ctx, parent, name, false);
}

Status Meta::Rmdir(const Context& ctx, InodeId parent, std::string_view name) {
  return RemoveEntry(ctx, parent, name, true);
}

Status Meta::Rename(const Context&, InodeId parent, std::string_view name, InodeId new_parent,
                    std::string_view new_name, uint32_t flags) {
  if (flags == RENAME_EXCHANGE) return RenameExchange(parent, name, new_parent, new_name);
  if (flags & ~static_cast<uint32_t>(RENAME_NOREPLACE)) return Invalid("unknown rename flags");
  RETURN_IF_ERROR(CheckName(new_name));
  RETURN_IF_ERROR(meta_internal::CheckNotReserved(new_parent, new_name));
  if (name.size() > 255) return Status(StatusCode::kNameTooLong, "name longer than 255 bytes");
  // A file replaced by the rename goes into the trash when it is on.
  const bool trash_on = settings_.trash_days > 0 && !IsTrashDir(new_parent);
  const std::string origin = trash_on ? OriginPath(new_parent, new_name) : std::string();
  const int64_t now = NowNanos();
  InodeId kept, reclaimed;
  Attr src_after, dst_after;
  InodeId moved_ino, replaced;
  bool moved_is_dir = false;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    kept = reclaimed = InodeId();
    moved_ino = replaced = InodeId();
    const bool same_dir = parent == new_parent;
    std::vector<std::string> reads = EntryReads(parent, name);
    for (std::string& key : EntryReads(new_parent, new_name)) reads.push_back(std::move(key));
    if (trash_on) {
      for (std::string& key : TrashReads(now)) reads.push_back(std::move(key));
    }
    RETURN_IF_ERROR(Prefetch(txn, reads));
    Attr src_dir, dst_dir_storage;
    RETURN_IF_ERROR(LoadAttr(txn, parent, &src_dir));
    RETURN_IF_ERROR(CheckDir(src_dir, parent));
    if (!same_dir) {
      RETURN_IF_ERROR(LoadAttr(txn, new_parent, &dst_dir_storage));
      RETURN_IF_ERROR(CheckDir(dst_dir_storage, new_parent));
    }
    Attr& dst_dir = same_dir ? src_dir : dst_dir_storage;
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(new_parent, dst_dir));

    ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Entry(parent, name)));
    if (!raw) return NotFound("no such entry");
    ASSIGN_OR_RETURN(DirEntryValue src, DecodeEntry(*raw));
    if (same_dir && name == new_name) return Status::Ok();
    moved_ino = src.inode;
    Attr moved;
    RETURN_IF_ERROR(LoadAttr(txn, src.inode, &moved));
    moved_is_dir = moved.IsDir();

    // A directory may not move into its own subtree.
    if (moved.IsDir() && !same_dir) {
      InodeId cur = new_parent;
      while (cur != kRootInode) {
        if (cur == src.inode) return Invalid("cannot move a directory into itself");
        Attr up;
        RETURN_IF_ERROR(LoadAttr(txn, cur, &up));
        cur = up.parent;
      }
    }

    ASSIGN_OR_RETURN(auto raw_dst, txn.Get(keys::Entry(new_parent, new_name)));
    if (raw_dst) {
      if (flags & RENAME_NOREPLACE) return Exists("target exists");
      ASSIGN_OR_RETURN(DirEntryValue dst, DecodeEntry(*raw_dst));
      if (dst.inode == src.inode) return Status::Ok();  // two links to one file
      replaced = dst.inode;
      Attr victim;
      RETURN_IF_ERROR(LoadAttr(txn, dst.inode, &victim));
      if (moved.IsDir()) {
        if (!victim.IsDir()) return Status(StatusCode::kNotDir, "target is not a directory");
        ASSIGN_OR_RETURN(ScanResult children,
                         txn.Scan(keys::EntriesBegin(dst.inode), keys::EntriesEnd(dst.inode), 1));
        if (!children.items.empty()) return Status(StatusCode::kNotEmpty, "target not empty");
        RETURN_IF_ERROR(meta_internal::DeleteXattrs(txn, dst.inode));
        txn.Delete(keys::Attr(dst.inode));
        meta_internal::IncrementCounter(txn, keys::kUsedInodes, -1);
        dst_dir.nlink--;
      } else {
        if (victim.IsDir()) return Status(StatusCode::kIsDir, "target is a directory");
        if (trash_on && victim.nlink == 1) {
          RETURN_IF_ERROR(MoveToTrash(txn, new_parent, new_name, dst, &victim, now, origin));
        } else if (--victim.nlink > 0) {
          victim.ctime_ns = now;
          PutAttr(txn, dst.inode, victim);
        } else if (IsOpen(dst.inode)) {
          victim.ctime_ns = now;
          PutAttr(txn, dst.inode, victim);
          txn.Put(keys::SustainedInode(session_, dst.inode), "");
          meta_internal::UncountInode(txn, victim);
          kept = dst.inode;
        } else {
          victim.ctime_ns = now;
          PutAttr(txn, dst.inode, victim);
          txn.Put(keys::Reclaim(dst.inode), "");
          meta_internal::UncountInode(txn, victim);
          reclaimed = dst.inode;
        }
      }
    }

    txn.Delete(keys::Entry(parent, name));
    txn.Put(keys::Entry(new_parent, new_name), EncodeEntry(src));
    // Moved out of the trash by hand: no longer a trash entry.
    if (IsTrashDir(parent) || IsTrashDir(src_dir.parent)) txn.Delete(keys::TrashOrigin(src.inode));
    moved.ctime_ns = now;
    if (moved.IsDir() && !same_dir) {
      moved.parent = new_parent;
      if (!IsTrashDir(parent)) src_dir.nlink--;  // the trash's own keep nlink 1
      dst_dir.nlink++;
    }
    PutAttr(txn, src.inode, moved);
    Touch(&src_dir, now);
    PutAttr(txn, parent, src_dir);
    if (!same_dir) {
      Touch(&dst_dir, now);
      PutAttr(txn, new_parent, dst_dir);
    }
    src_after = src_dir;
    dst_after = dst_dir;
    return Status::Ok();
  }));
  if (moved_ino.value() != 0) {
    NoteDir(parent, &src_after);
    NoteDir(new_parent, &dst_after);
    NoteDir(moved_ino, nullptr);  // a moved directory's parent and ctime changed
    if (replaced.value() != 0) NoteDir(replaced, nullptr);
    hints_.Forget(parent, name);
    hints_.Note(new_parent, new_name, moved_ino);
    if (moved_is_dir) paths_.Note(moved_ino, new_parent, new_name);
  }
  ScheduleReclaim(reclaimed);
  return KeepUntilClosed(kept);
}

Result<DirPage> Meta::ReadDir(InodeId dir, uint64_t after_cookie, size_t limit, bool plus) {
  DirPage out;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    out = DirPage();
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, dir, &a));
    if (!a.IsDir()) return Status(StatusCode::kNotDir, "not a directory");
    const size_t prefix_len = keys::EntriesBegin(dir).size();
    const std::string begin =
        after_cookie == 0 ? keys::EntriesBegin(dir) : keys::EntriesAfter(dir, after_cookie);
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(begin, keys::EntriesEnd(dir), limit));
    out.more = page.more;
    std::vector<std::string> attr_keys;
    for (const auto& item : page.items) {
      ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(item.value));
      DirItem d;
      if (item.key.size() < prefix_len + 8) return Corrupt("directory entry key is truncated");
      d.cookie = GetBig64(item.key.data() + prefix_len);
      d.name = item.key.substr(prefix_len + 8);
      d.inode = e.inode;
      d.type = e.type;
      if (plus) attr_keys.push_back(keys::Attr(e.inode));
      out.items.push_back(std::move(d));
    }
    if (plus && !attr_keys.empty()) {
      ASSIGN_OR_RETURN(auto attrs, txn.BatchGet(attr_keys));
      for (size_t i = 0; i < attrs.size(); ++i) {
        if (!attrs[i]) continue;  // removed concurrently; the kernel will look it up
        ASSIGN_OR_RETURN(out.items[i].attr, DecodeAttr(*attrs[i]));
      }
    }
    return Status::Ok();
  }));
  for (const DirItem& d : out.items) {
    if (S_ISDIR(d.type)) paths_.Note(d.inode, dir, d.name);
  }
  return out;
}

Result<FsStats> Meta::StatFs() {
  FsStats out;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(int64_t space, GetCounter(txn, keys::kUsedSpace));
    ASSIGN_OR_RETURN(int64_t inodes, GetCounter(txn, keys::kUsedInodes));
    out.used_space = static_cast<uint64_t>(std::max<int64_t>(space, 0));
    out.used_inodes = static_cast<uint64_t>(std::max<int64_t>(inodes, 0));
    return Status::Ok();
  }));
  out.total_space = settings_.capacity > 0 ? settings_.capacity : kUnlimitedSpace;
  out.total_inodes = settings_.inodes > 0 ? settings_.inodes
                                          : out.used_inodes + kUnlimitedInodesHeadroom;
  return out;
}

void Meta::FreeSlices(const std::vector<SliceRef>& slices) {
  if (slices.empty()) return;
  std::shared_lock lock(deleter_mu_);
  if (slice_deleter_) slice_deleter_(slices);
}

}  // namespace tessera
