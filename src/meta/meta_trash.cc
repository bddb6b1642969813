// The trash, and removal of whole trees (see Meta::ListTrash and below).
//
// Layout: the trash directory (kTrashInode, mode 0555, owned by root) is
// not an entry of the root; Lookup answers ".trash" there. It holds one
// directory per hour, inode kTrashInode + 1 + hours since the epoch, named
// YYYY-MM-DD-HH (UTC), so that every client derives the same inode for an
// hour and the names sort by time. An entry deleted in that hour is named
// <parent>_<inode>_<name> there and keeps its inode, attributes and data;
// A<ino>T records the path it had. The trash's own directories keep nlink
// 1 (no count of subdirectories, as on file systems that do not keep one)
// and are not counted in the volume's usage, so that moving entries in
// never writes them: clients deleting at once do not conflict there.
#include <fnmatch.h>
#include <time.h>

#include <algorithm>

#include "common/coding.h"
#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::LoadAttr;
using meta_internal::Prefetch;
using meta_internal::PutAttr;

namespace {

constexpr int64_t kNsPerHour = 3600LL * 1'000'000'000;
// Entries removed per transaction by RemoveTree and when emptying the trash.
constexpr size_t kTreeBatch = 256;
// How long the trash-emptying lease lasts without renewal.
constexpr int64_t kLeaseNs = 5LL * 60 * 1'000'000'000;
// Entries of a directory read to find a child's name when this client never
// saw it (DirPaths missed it), per directory.
constexpr size_t kMaxNameSearch = 1'000'000;

InodeId HourDir(int64_t hour) { return InodeId(kTrashInode.value() + 1 + static_cast<uint64_t>(hour)); }

std::string HourName(int64_t hour) {
  time_t t = static_cast<time_t>(hour * 3600);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d-%H", &tm);
  return buf;
}

// <parent>_<inode>_<name>, cut to 255 bytes: the path is recorded apart.
std::string TrashEntryName(InodeId parent, InodeId ino, std::string_view name) {
  std::string out = std::to_string(parent.value()) + "_" + std::to_string(ino.value()) + "_";
  out.append(name.substr(0, 255 - std::min<size_t>(out.size(), 255)));
  return out;
}

Attr TrashDirAttr(InodeId parent, int64_t now) {
  Attr a;
  a.mode = S_IFDIR | 0555;
  a.nlink = 1;
  a.parent = parent;
  a.atime_ns = a.mtime_ns = a.ctime_ns = now;
  return a;
}

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (dir == "/" ? std::string() : dir) + "/" + std::string(name);
}

}  // namespace

// ---- where directories are ----

void DirPaths::Note(InodeId dir, InodeId parent, std::string_view name) {
  std::lock_guard lock(mu_);
  if (map_.size() >= kMaxDirs) map_.clear();  // bounded; refilled as directories are seen
  map_.insert_or_assign(dir.value(), std::make_pair(parent, std::string(name)));
}

void DirPaths::Forget(InodeId dir) {
  std::lock_guard lock(mu_);
  map_.erase(dir.value());
}

std::optional<std::string> DirPaths::Path(InodeId dir) {
  std::lock_guard lock(mu_);
  std::vector<const std::string*> names;
  for (InodeId cur = dir; cur != kRootInode;) {
    auto it = map_.find(cur.value());
    if (it == map_.end() || names.size() > 4096) return std::nullopt;
    names.push_back(&it->second.second);
    cur = it->second.first;
  }
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) path += "/" + **it;
  return path.empty() ? "/" : path;
}

std::string Meta::OriginPath(InodeId parent, std::string_view name) {
  const std::string dir = DirPath(parent);
  return dir.empty() ? std::string() : JoinPath(dir, name);
}

std::string Meta::DirPath(InodeId dir) {
  if (std::optional<std::string> known = paths_.Path(dir)) return *known;
  // Not seen here (a long-lived kernel cache, or evicted): walk up through
  // the parents' attributes, finding each name in its parent's entries.
  std::vector<std::string> names;
  Status st = WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    names.clear();
    for (InodeId cur = dir; cur != kRootInode && names.size() < 4096;) {
      Attr a;
      RETURN_IF_ERROR(LoadAttr(txn, cur, &a));
      std::string from = keys::EntriesBegin(a.parent);
      std::optional<std::string> found;
      for (size_t seen = 0; !found && seen < kMaxNameSearch;) {
        ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, keys::EntriesEnd(a.parent), 1024));
        for (const KeyValue& kv : page.items) {
          auto e = DecodeEntry(kv.value);
          if (e.ok() && e->inode == cur) found = kv.key.substr(keys::EntriesBegin(a.parent).size() + 8);
        }
        seen += page.items.size();
        if (!page.more || page.items.empty()) break;
        from = page.items.back().key + '\0';
      }
      if (!found) return NotFound("directory not found in its parent");
      names.push_back(*found);
      paths_.Note(cur, a.parent, *found);
      cur = a.parent;
    }
    return Status::Ok();
  });
  if (!st.ok()) return "";  // unknown: restore will say so
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) path += "/" + *it;
  return path.empty() ? "/" : path;
}

// ---- moving into the trash ----

std::vector<std::string> Meta::TrashReads(int64_t now_ns) {
  const int64_t hour = now_ns / kNsPerHour;
  return {keys::Attr(kTrashInode), keys::Entry(kTrashInode, HourName(hour))};
}

Status Meta::MoveToTrash(KvTxn& txn, InodeId parent, std::string_view name, const DirEntryValue& e,
                         Attr* a, int64_t now_ns, const std::string& origin) {
  const int64_t hour = now_ns / kNsPerHour;
  const InodeId hour_dir = HourDir(hour);
  const std::string hour_name = HourName(hour);
  // Made by the first deletion of the volume, and of each hour; two clients
  // doing it at once conflict once, and the retry finds it.
  ASSIGN_OR_RETURN(auto trash, txn.Get(keys::Attr(kTrashInode)));
  if (!trash) PutAttr(txn, kTrashInode, TrashDirAttr(kRootInode, now_ns));
  ASSIGN_OR_RETURN(auto hour_entry, txn.Get(keys::Entry(kTrashInode, hour_name)));
  if (!hour_entry) {
    PutAttr(txn, hour_dir, TrashDirAttr(kTrashInode, now_ns));
    txn.Put(keys::Entry(kTrashInode, hour_name), EncodeEntry({S_IFDIR, hour_dir}));
  }
  // The inode is in the name, so the entry is new: no read needed.
  txn.Put(keys::Entry(hour_dir, TrashEntryName(parent, e.inode, name)),
          EncodeEntry({a->mode & S_IFMT, e.inode}));
  if (a->IsDir()) a->parent = hour_dir;
  a->ctime_ns = now_ns;
  PutAttr(txn, e.inode, *a);
  txn.Put(keys::TrashOrigin(e.inode), origin);
  return Status::Ok();
}

// ---- listing and restoring ----

Status Meta::ListTrash(const std::function<Status(const TrashItem&)>& fn) {
  // Hour directories first, then each one page by page: short read
  // transactions, so a big trash does not hold one snapshot for long.
  std::vector<std::pair<std::string, InodeId>> hours;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    hours.clear();
    std::string from = keys::EntriesBegin(kTrashInode);
    const size_t prefix = from.size() + 8;
    while (true) {
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, keys::EntriesEnd(kTrashInode), 1024));
      for (const KeyValue& kv : page.items) {
        ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(kv.value));
        hours.emplace_back(kv.key.substr(prefix), e.inode);
      }
      if (!page.more || page.items.empty()) break;
      from = page.items.back().key + '\0';
    }
    return Status::Ok();
  }));
  for (const auto& [hour, dir] : hours) {
    std::string from = keys::EntriesBegin(dir);
    const size_t prefix = from.size() + 8;
    while (true) {
      std::vector<TrashItem> items;
      bool more = false;
      RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
        items.clear();
        ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, keys::EntriesEnd(dir), kTreeBatch));
        more = page.more;
        std::vector<std::string> reads;
        for (const KeyValue& kv : page.items) {
          ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(kv.value));
          TrashItem item{hour, dir, kv.key.substr(prefix), e.inode, Attr(), ""};
          reads.push_back(keys::Attr(e.inode));
          reads.push_back(keys::TrashOrigin(e.inode));
          items.push_back(std::move(item));
        }
        if (!page.items.empty()) from = page.items.back().key + '\0';
        ASSIGN_OR_RETURN(auto values, txn.BatchGet(reads));
        for (size_t i = 0; i < items.size(); ++i) {
          if (values[2 * i]) {
            ASSIGN_OR_RETURN(items[i].attr, DecodeAttr(*values[2 * i]));
          }
          items[i].origin = values[2 * i + 1].value_or("");
        }
        return Status::Ok();
      }));
      for (const TrashItem& item : items) RETURN_IF_ERROR(fn(item));
      if (!more || items.empty()) break;
    }
  }
  return Status::Ok();
}

Status Meta::RestoreFromTrash(const Context& ctx, const TrashItem& item, std::string* restored_to) {
  if (item.origin.empty() || item.origin[0] != '/') {
    return Invalid("the path '" + item.name + "' had is unknown");
  }
  const size_t slash = item.origin.rfind('/');
  const std::string name = item.origin.substr(slash + 1);
  RETURN_IF_ERROR(meta_internal::CheckName(name));
  // The parent directories, made again where they are gone (mkdir -p).
  InodeId parent = kRootInode;
  std::string_view rest = std::string_view(item.origin).substr(0, slash);
  while (!rest.empty()) {
    rest.remove_prefix(1);
    const size_t next = rest.find('/');
    const std::string part(rest.substr(0, next));
    rest = next == std::string_view::npos ? std::string_view() : rest.substr(next);
    if (part.empty()) continue;
    Result<EntryInfo> found = Lookup(ctx, parent, part);
    if (found.ok() && !found->attr.IsDir()) {
      return Status(StatusCode::kNotDir, item.origin + ": '" + part + "' is not a directory now");
    }
    if (!found.ok() && found.status().Is(StatusCode::kNotFound)) {
      found = Mkdir(ctx, parent, part, 0755);
      if (!found.ok() && found.status().Is(StatusCode::kExists)) found = Lookup(ctx, parent, part);
    }
    RETURN_IF_ERROR(found.status());
    parent = found->inode;
  }
  const int64_t now = NowNanos();
  Attr dir_after;
  bool is_dir = false;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Entry(item.hour_dir, item.name)));
    if (!raw) return NotFound(item.name + " is no longer in the trash");
    ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(*raw));
    if (e.inode != item.inode) return NotFound(item.name + " is no longer in the trash");
    Attr dir;
    RETURN_IF_ERROR(LoadAttr(txn, parent, &dir));
    if (!dir.IsDir() || dir.nlink == 0) return NotFound(item.origin + ": its directory went");
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(parent, dir));
    ASSIGN_OR_RETURN(auto taken, txn.Get(keys::Entry(parent, name)));
    if (taken) return Exists(item.origin + " exists");
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, e.inode, &a));
    is_dir = a.IsDir();
    txn.Delete(keys::Entry(item.hour_dir, item.name));
    txn.Put(keys::Entry(parent, name), EncodeEntry(e));
    txn.Delete(keys::TrashOrigin(e.inode));
    if (is_dir) {
      a.parent = parent;
      dir.nlink++;
    }
    a.ctime_ns = now;
    PutAttr(txn, e.inode, a);
    dir.mtime_ns = dir.ctime_ns = now;
    PutAttr(txn, parent, dir);
    dir_after = dir;
    return Status::Ok();
  }));
  NoteDir(parent, &dir_after);
  if (is_dir) paths_.Note(item.inode, parent, name);
  *restored_to = item.origin;
  return Status::Ok();
}

// ---- emptying the trash, removing trees ----

Result<uint64_t> Meta::EmptyTrash(int64_t now_ns, uint64_t budget) {
  // One client at a time: the lease names the session and when it ends.
  bool ours = false;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ours = false;
    ASSIGN_OR_RETURN(auto lease, txn.Get(keys::Lease("trash")));
    if (lease && lease->size() == 16 && GetBig64(lease->data()) != session_.value() &&
        static_cast<int64_t>(GetBig64(lease->data() + 8)) > now_ns) {
      return Status::Ok();
    }
    std::string value;
    PutBig64(&value, session_.value());
    PutBig64(&value, static_cast<uint64_t>(now_ns + kLeaseNs));
    txn.Put(keys::Lease("trash"), value);
    ours = true;
    return Status::Ok();
  }));
  if (!ours) return uint64_t{0};
  // Entries deleted in hour H stay until H + 1 + 24 * days hours.
  const int64_t keep_hours = int64_t{24} * settings_.trash_days;
  const int64_t first_kept = now_ns / kNsPerHour - keep_hours;
  uint64_t removed = 0;
  while (budget == 0 || removed < budget) {
    std::optional<std::pair<std::string, InodeId>> oldest;
    RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
      oldest.reset();
      const std::string begin = keys::EntriesBegin(kTrashInode);
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(begin, keys::EntriesEnd(kTrashInode), 1));
      if (page.items.empty()) return Status::Ok();
      ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(page.items[0].value));
      oldest.emplace(page.items[0].key.substr(begin.size() + 8), e.inode);
      return Status::Ok();
    }));
    if (!oldest) break;
    const int64_t hour = static_cast<int64_t>(oldest->second.value() - kTrashInode.value() - 1);
    if (keep_hours > 0 && hour >= first_kept) break;
    bool empty = false;
    ASSIGN_OR_RETURN(uint64_t n, RemoveBelow(oldest->second, false,
                                             budget == 0 ? 0 : budget - removed, &empty, {}));
    removed += n;
    if (!empty) break;  // the budget ran out
    Status st = RemoveEntry(Context{}, kTrashInode, oldest->first, true);
    if (!st.ok() && !st.Is(StatusCode::kNotFound)) return st;
  }
  return removed;
}

Result<uint64_t> Meta::RemoveTree(const Context& ctx, InodeId parent, std::string_view name,
                                  const std::function<void(uint64_t)>& progress) {
  ASSIGN_OR_RETURN(EntryInfo top, Lookup(ctx, parent, name));
  uint64_t removed = 0;
  const bool to_trash = settings_.trash_days > 0 && !IsTrashDir(parent);
  if (top.attr.IsDir()) {
    bool empty = false;
    ASSIGN_OR_RETURN(removed, RemoveBelow(top.inode, to_trash, 0, &empty, progress));
    RETURN_IF_ERROR(RemoveEntry(ctx, parent, name, true));
  } else {
    RETURN_IF_ERROR(RemoveEntry(ctx, parent, name, false));
  }
  removed++;
  if (progress) progress(removed);
  return removed;
}

Result<uint64_t> Meta::RemoveBelow(InodeId top, bool to_trash, uint64_t budget, bool* empty,
                                   const std::function<void(uint64_t)>& progress) {
  *empty = false;
  uint64_t removed = 0;
  // Directories still to empty, deepest last: a directory is removed by
  // the batch of its parent once it is empty.
  std::vector<InodeId> stack = {top};
  while (!stack.empty()) {
    if (budget != 0 && removed >= budget) return removed;
    const InodeId dir = stack.back();
    // Paths of the entries, for the trash; known from the directory's own.
    const std::string dir_path = to_trash ? DirPath(dir) : std::string();
    auto origin = [&](const std::string& name) {
      return dir_path.empty() ? std::string() : JoinPath(dir_path, name);
    };
    const int64_t now = NowNanos();
    std::vector<InodeId> full, reclaimed, kept, gone_dirs;
    size_t n = 0;
    bool had_entries = false;
    Attr dir_after;
    RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
      full.clear();
      reclaimed.clear();
      kept.clear();
      gone_dirs.clear();
      n = 0;
      Attr d;
      RETURN_IF_ERROR(LoadAttr(txn, dir, &d));
      const std::string begin = keys::EntriesBegin(dir);
      const size_t limit = budget == 0 ? kTreeBatch : std::min<uint64_t>(kTreeBatch, budget - removed);
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(begin, keys::EntriesEnd(dir), limit));
      had_entries = !page.items.empty();
      std::vector<std::pair<std::string, DirEntryValue>> entries;
      std::vector<std::string> reads;
      for (const KeyValue& kv : page.items) {
        ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(kv.value));
        entries.emplace_back(kv.key.substr(begin.size() + 8), e);
        reads.push_back(keys::Attr(e.inode));
      }
      if (to_trash) {
        for (std::string& key : TrashReads(now)) reads.push_back(std::move(key));
      }
      RETURN_IF_ERROR(Prefetch(txn, reads));
      for (const auto& [name, e] : entries) {
        Attr a;
        Status st = LoadAttr(txn, e.inode, &a);
        if (st.Is(StatusCode::kNotFound)) {
          txn.Delete(keys::Entry(dir, name));  // dangling: nothing to keep
          n++;
          continue;
        }
        RETURN_IF_ERROR(st);
        if (a.IsDir()) {
          ASSIGN_OR_RETURN(ScanResult children,
                           txn.Scan(keys::EntriesBegin(e.inode), keys::EntriesEnd(e.inode), 1));
          if (!children.items.empty()) {
            full.push_back(e.inode);
            continue;
          }
          if (!IsTrashDir(dir)) d.nlink--;
          gone_dirs.push_back(e.inode);
          if (to_trash) {
            RETURN_IF_ERROR(MoveToTrash(txn, dir, name, e, &a, now, origin(name)));
          } else {
            RETURN_IF_ERROR(meta_internal::DeleteXattrs(txn, e.inode));
            txn.Delete(keys::Attr(e.inode));
            txn.Delete(keys::TrashOrigin(e.inode));
            if (!IsTrashDir(e.inode)) meta_internal::IncrementCounter(txn, keys::kUsedInodes, -1);
          }
        } else if (to_trash && a.nlink == 1) {
          RETURN_IF_ERROR(MoveToTrash(txn, dir, name, e, &a, now, origin(name)));
        } else {
          a.nlink--;
          a.ctime_ns = now;
          PutAttr(txn, e.inode, a);
          if (a.nlink == 0) {
            meta_internal::UncountInode(txn, a);
            if (IsOpen(e.inode)) {
              txn.Put(keys::SustainedInode(session_, e.inode), "");
              kept.push_back(e.inode);
            } else {
              txn.Put(keys::Reclaim(e.inode), "");
              reclaimed.push_back(e.inode);
            }
          }
        }
        txn.Delete(keys::Entry(dir, name));
        n++;
      }
      if (n > 0) {
        d.mtime_ns = d.ctime_ns = now;
        PutAttr(txn, dir, d);
      }
      dir_after = d;
      return Status::Ok();
    }));
    if (n > 0) NoteDir(dir, &dir_after);
    for (InodeId gone : gone_dirs) {
      NoteDir(gone, nullptr);
      paths_.Forget(gone);
    }
    for (InodeId ino : reclaimed) ScheduleReclaim(ino);
    for (InodeId ino : kept) RETURN_IF_ERROR(KeepUntilClosed(ino));
    removed += n;
    if (progress && n > 0) progress(removed);
    if (!full.empty()) {
      stack.insert(stack.end(), full.begin(), full.end());
    } else if (!had_entries) {
      stack.pop_back();
    } else if (n == 0) {
      return Internal("no progress removing the entries of directory " + std::to_string(dir.value()));
    }
  }
  *empty = true;
  return removed;
}

// ---- counting background work ----

Result<PendingWork> Meta::CountPending(bool scan_chunks) {
  PendingWork out;
  RETURN_IF_ERROR(ListTrash([&](const TrashItem& item) {
    out.trash_entries++;
    if (item.attr.IsFile()) {
      out.trash_files++;
      out.trash_bytes += item.attr.length;
    }
    return Status::Ok();
  }));
  ASSIGN_OR_RETURN(out.freed_slices, CountFreedSlices());
  ASSIGN_OR_RETURN(out.delayed_slices, CountDelayedSlices());
  // Deleted files: R<ino> records, and SS<sid><ino> of every session; their
  // sizes from their attributes, a page at a time.
  auto count_files = [&](const std::string& begin, const std::string& end) -> Status {
    std::string from = begin;
    while (true) {
      bool more = false;
      RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
        ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 1024));
        more = page.more && !page.items.empty();
        if (!page.items.empty()) from = page.items.back().key + '\0';
        std::vector<std::string> attrs;
        for (const KeyValue& kv : page.items) {
          if (kv.key.size() < 8) continue;
          attrs.push_back(keys::Attr(InodeId(GetBig64(kv.key.data() + kv.key.size() - 8))));
        }
        ASSIGN_OR_RETURN(auto values, txn.BatchGet(attrs));
        for (const auto& v : values) {
          if (!v) continue;
          auto a = DecodeAttr(*v);
          if (!a.ok()) continue;
          out.deleted_files++;
          if (a->IsFile()) out.deleted_file_bytes += a->length;
        }
        return Status::Ok();
      }));
      if (!more) return Status::Ok();
    }
  };
  RETURN_IF_ERROR(count_files(keys::ReclaimBegin(), keys::ReclaimEnd()));
  RETURN_IF_ERROR(count_files("SS", "ST"));
  if (!scan_chunks) return out;
  // Every chunk record: the keys of all inodes, in pages.
  std::string from = "A";
  while (true) {
    bool more = false;
    RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, "B", 4096));
      more = page.more && !page.items.empty();
      if (!page.items.empty()) from = page.items.back().key + '\0';
      for (const KeyValue& kv : page.items) {
        // A<ino 8 bytes>C<chunk 4 bytes>
        if (kv.key.size() != 14 || kv.key[9] != 'C') continue;
        const uint64_t records = kv.value.size() / kSliceRecordSize;
        if (records > 1) {
          out.fragmented_chunks++;
          out.fragmented_records += records;
        }
      }
      return Status::Ok();
    }));
    if (!more) break;
  }
  return out;
}

}  // namespace tessera
