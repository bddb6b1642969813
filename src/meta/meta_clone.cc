// Copies of files and trees by metadata alone (see Meta::Clone).
#include <algorithm>
#include <deque>

#include "common/coding.h"
#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::AddCounter;
using meta_internal::AddSliceRef;
using meta_internal::DistinctSlices;
using meta_internal::LoadAttr;
using meta_internal::Prefetch;
using meta_internal::PutAttr;

namespace {

// Entries copied per transaction.
constexpr size_t kCloneBatch = 64;

}  // namespace

// Within a transaction: copies every key of inode `src` but its attributes,
// entries, locks and trash record to `dst` (chunks, symlink target, xattrs),
// adding a reference to each slice a chunk holds.
Status Meta::CopyInodeKeys(KvTxn& txn, InodeId src, InodeId dst) {
  const size_t kind_at = keys::InodePrefix(src).size();
  std::string from = keys::InodeBegin(src);
  const std::string end = keys::InodeEnd(src);
  std::vector<SliceRef> slices;
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, meta_internal::kInodeScanPage));
    for (const KeyValue& kv : page.items) {
      const char kind = kv.key.size() > kind_at ? kv.key[kind_at] : 0;
      if (kind != 'C' && kind != 'S' && kind != 'X') continue;
      if (kind == 'C') {
        ASSIGN_OR_RETURN(auto records, DecodeChunk(kv.value));
        for (const SliceRef& s : DistinctSlices(records)) slices.push_back(s);
      }
      txn.Put(keys::InodePrefix(dst) + kv.key.substr(kind_at), kv.value);
    }
    if (!page.more || page.items.empty()) break;
    from = page.items.back().key + '\0';
  }
  // The reference counts in one batch, then each one added.
  std::vector<std::string> refs;
  for (const SliceRef& s : slices) refs.push_back(keys::SliceRefs(s.id, s.size));
  RETURN_IF_ERROR(Prefetch(txn, refs));
  for (const SliceRef& s : slices) RETURN_IF_ERROR(AddSliceRef(txn, s));
  return Status::Ok();
}

// Counts `inodes` new inodes and `space` bytes, enforcing the quotas.
Status Meta::ChargeNew(KvTxn& txn, int64_t inodes, int64_t space) {
  if (settings_.inodes > 0) {
    ASSIGN_OR_RETURN(int64_t used, AddCounter(txn, keys::kUsedInodes, inodes));
    if (static_cast<uint64_t>(used) > settings_.inodes) {
      return Status(StatusCode::kNoSpace, "inode quota of the volume reached");
    }
  } else {
    meta_internal::IncrementCounter(txn, keys::kUsedInodes, inodes);
  }
  if (space == 0) return Status::Ok();
  if (settings_.capacity > 0) {
    ASSIGN_OR_RETURN(int64_t used, AddCounter(txn, keys::kUsedSpace, space));
    if (static_cast<uint64_t>(used) > settings_.capacity) {
      return Status(StatusCode::kNoSpace, "capacity quota of the volume reached");
    }
  } else {
    meta_internal::IncrementCounter(txn, keys::kUsedSpace, space);
  }
  return Status::Ok();
}

Result<uint64_t> Meta::Clone(const Context& ctx, InodeId src, InodeId parent, std::string_view name,
                             const std::function<void(uint64_t)>& progress) {
  RETURN_IF_ERROR(meta_internal::CheckName(name));
  RETURN_IF_ERROR(meta_internal::CheckNotReserved(parent, name));
  ASSIGN_OR_RETURN(Attr top, GetAttr(src));
  ASSIGN_OR_RETURN(InodeId root, NextInode());
  const bool is_dir = top.IsDir();
  uint64_t copied = 0;
  // The copy of the top: a file (or symlink...) goes in whole with its name;
  // a directory is made unnamed, filled, and named last.
  Attr dir_after;
  Status made = WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    Attr dir;
    RETURN_IF_ERROR(LoadAttr(txn, parent, &dir));
    if (!dir.IsDir() || dir.nlink == 0) return Status(StatusCode::kNotDir, "target's directory is gone");
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(parent, dir));
    ASSIGN_OR_RETURN(auto taken, txn.Get(keys::Entry(parent, name)));
    if (taken) return Exists("target exists");
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, src, &a));
    const int64_t now = NowNanos();
    a.ctime_ns = now;
    a.uid = ctx.uid == 0 ? a.uid : ctx.uid;
    a.gid = ctx.uid == 0 ? a.gid : ctx.gid;
    a.nlink = is_dir ? 2 : 1;
    a.parent = parent;
    RETURN_IF_ERROR(ChargeNew(txn, 1, a.IsFile() ? static_cast<int64_t>(SpaceOf(a.length)) : 0));
    RETURN_IF_ERROR(CopyInodeKeys(txn, src, root));
    PutAttr(txn, root, a);
    if (!is_dir) {
      txn.Put(keys::Entry(parent, name), EncodeEntry({a.mode & S_IFMT, root}));
      dir.mtime_ns = dir.ctime_ns = now;
      PutAttr(txn, parent, dir);
      dir_after = dir;
    }
    return Status::Ok();
  });
  RETURN_IF_ERROR(made);
  copied = 1;
  if (!is_dir) {
    NoteDir(parent, &dir_after);
    if (progress) progress(copied);
    return copied;
  }
  // Breadth first: (source directory, its copy).
  std::deque<std::pair<InodeId, InodeId>> dirs = {{src, root}};
  Status st;
  while (st.ok() && !dirs.empty()) {
    const auto [from_dir, to_dir] = dirs.front();
    dirs.pop_front();
    std::string after = keys::EntriesBegin(from_dir);
    const size_t prefix = after.size() + 8;
    bool more = true;
    while (st.ok() && more) {
      std::vector<std::pair<InodeId, InodeId>> subdirs;
      size_t n = 0;
      std::string next_after = after;
      // Inode numbers for the batch, taken before the transaction.
      std::vector<InodeId> fresh;
      for (size_t i = 0; i < kCloneBatch && st.ok(); ++i) {
        auto ino = NextInode();
        if (!ino.ok()) st = ino.status();
        else fresh.push_back(*ino);
      }
      if (!st.ok()) break;
      st = WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
        subdirs.clear();
        n = 0;
        ASSIGN_OR_RETURN(ScanResult page, txn.Scan(after, keys::EntriesEnd(from_dir), kCloneBatch));
        more = page.more && !page.items.empty();
        if (!page.items.empty()) next_after = page.items.back().key + '\0';
        std::vector<std::string> reads = {keys::Attr(to_dir)};
        std::vector<DirEntryValue> entries;
        for (const KeyValue& kv : page.items) {
          ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(kv.value));
          entries.push_back(e);
          reads.push_back(keys::Attr(e.inode));
        }
        RETURN_IF_ERROR(Prefetch(txn, reads));
        Attr dir;
        RETURN_IF_ERROR(LoadAttr(txn, to_dir, &dir));
        int64_t space = 0;
        const int64_t now = NowNanos();
        for (size_t i = 0; i < entries.size(); ++i) {
          const DirEntryValue& e = entries[i];
          Attr a;
          Status loaded = LoadAttr(txn, e.inode, &a);
          if (loaded.Is(StatusCode::kNotFound)) continue;  // removed meanwhile
          RETURN_IF_ERROR(loaded);
          const InodeId copy = fresh[i];
          a.ctime_ns = now;
          a.uid = ctx.uid == 0 ? a.uid : ctx.uid;
          a.gid = ctx.uid == 0 ? a.gid : ctx.gid;
          if (a.IsDir()) {
            a.nlink = 2;
            a.parent = to_dir;
            dir.nlink++;
            subdirs.emplace_back(e.inode, copy);
          } else {
            a.nlink = 1;  // hard links inside the tree become separate files
            if (a.IsFile()) space += static_cast<int64_t>(SpaceOf(a.length));
          }
          RETURN_IF_ERROR(CopyInodeKeys(txn, e.inode, copy));
          PutAttr(txn, copy, a);
          const std::string& key = page.items[i].key;
          txn.Put(keys::Entry(to_dir, std::string_view(key).substr(prefix)),
                  EncodeEntry({a.mode & S_IFMT, copy}));
          n++;
        }
        if (n == 0) return Status::Ok();
        RETURN_IF_ERROR(ChargeNew(txn, static_cast<int64_t>(n), space));
        PutAttr(txn, to_dir, dir);
        return Status::Ok();
      });
      if (!st.ok()) break;
      after = next_after;
      copied += n;
      for (const auto& d : subdirs) dirs.push_back(d);
      if (progress && n > 0) progress(copied);
    }
  }
  if (st.ok()) {
    // Named at last: the name never shows a partial copy.
    st = WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
      Attr dir;
      RETURN_IF_ERROR(LoadAttr(txn, parent, &dir));
      if (!dir.IsDir() || dir.nlink == 0) return Status(StatusCode::kNotDir, "target's directory is gone");
      ASSIGN_OR_RETURN(auto taken, txn.Get(keys::Entry(parent, name)));
      if (taken) return Exists("target exists");
      txn.Put(keys::Entry(parent, name), EncodeEntry({S_IFDIR, root}));
      dir.nlink++;
      dir.mtime_ns = dir.ctime_ns = NowNanos();
      PutAttr(txn, parent, dir);
      dir_after = dir;
      return Status::Ok();
    });
  }
  if (!st.ok()) {
    // Take the unnamed copy away again: it holds references to the slices.
    bool empty = false;
    (void)RemoveBelow(root, false, 0, &empty, {});
    (void)WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Attr(root)));
      if (!raw) return Status::Ok();
      RETURN_IF_ERROR(meta_internal::DeleteXattrs(txn, root));
      txn.Delete(keys::Attr(root));
      meta_internal::IncrementCounter(txn, keys::kUsedInodes, -1);
      return Status::Ok();
    });
    return st;
  }
  NoteDir(parent, &dir_after);
  paths_.Note(root, parent, name);
  if (progress) progress(copied);
  return copied;
}

}  // namespace tessera
