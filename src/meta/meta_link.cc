// Symbolic links, hard links and rename with RENAME_EXCHANGE.
#include <linux/fs.h>

#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::CheckName;
using meta_internal::LoadAttr;
using meta_internal::PutAttr;

Result<EntryInfo> Meta::Symlink(const Context& ctx, InodeId parent, std::string_view name,
                                std::string_view target) {
  if (target.empty()) return Status(StatusCode::kNotFound, "empty symlink target");
  if (target.size() > 4095) return Status(StatusCode::kNameTooLong, "symlink target longer than 4095 bytes");
  EntryInfo out;
  RETURN_IF_ERROR(CreateNode(ctx, parent, name, S_IFLNK | 0777, 0, target, &out));
  return out;
}

Result<std::string> Meta::ReadLink(InodeId ino) {
  std::string out;
  RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(auto target, txn.Get(keys::Symlink(ino)));
    if (!target) {
      Attr a;
      RETURN_IF_ERROR(LoadAttr(txn, ino, &a));
      return Invalid("not a symbolic link");
    }
    out = std::move(*target);
    return Status::Ok();
  }));
  return out;
}

Result<EntryInfo> Meta::Link(const Context&, InodeId ino, InodeId new_parent,
                             std::string_view new_name) {
  RETURN_IF_ERROR(CheckName(new_name));
  RETURN_IF_ERROR(meta_internal::CheckNotReserved(new_parent, new_name));
  EntryInfo out;
  Attr dir_after;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    Attr dir;
    RETURN_IF_ERROR(LoadAttr(txn, new_parent, &dir));
    if (!dir.IsDir()) return Status(StatusCode::kNotDir, "not a directory");
    if (dir.nlink == 0) return NotFound("directory was removed");
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(new_parent, dir));
    RETURN_IF_ERROR(LoadAttr(txn, ino, &out.attr));
    if (out.attr.IsDir()) return Status(StatusCode::kNotPermitted, "hard links to directories are not allowed");
    if (out.attr.nlink == 0) return NotFound("file was removed");
    ASSIGN_OR_RETURN(auto existing, txn.Get(keys::Entry(new_parent, new_name)));
    if (existing) return Exists("entry exists");
    const int64_t now = NowNanos();
    out.inode = ino;
    out.attr.nlink++;
    out.attr.ctime_ns = now;
    PutAttr(txn, ino, out.attr);
    txn.Put(keys::Entry(new_parent, new_name), EncodeEntry({out.attr.mode & S_IFMT, ino}));
    dir.mtime_ns = dir.ctime_ns = now;
    PutAttr(txn, new_parent, dir);
    dir_after = dir;
    return Status::Ok();
  }));
  NoteDir(new_parent, &dir_after);
  return out;
}

namespace {

// True when `dir` is `ancestor` or lies below it.
Result<bool> IsWithin(KvTxn& txn, InodeId dir, InodeId ancestor) {
  for (InodeId cur = dir;; ) {
    if (cur == ancestor) return true;
    if (cur == kRootInode) return false;
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, cur, &a));
    cur = a.parent;
  }
}

}  // namespace

Status Meta::RenameExchange(InodeId parent, std::string_view name, InodeId new_parent,
                            std::string_view new_name) {
  RETURN_IF_ERROR(CheckName(new_name));
  RETURN_IF_ERROR(CheckName(name));
  InodeId swapped_a, swapped_b;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    const bool same_dir = parent == new_parent;
    Attr dir_a, dir_b_storage;
    RETURN_IF_ERROR(LoadAttr(txn, parent, &dir_a));
    if (!dir_a.IsDir()) return Status(StatusCode::kNotDir, "not a directory");
    if (!same_dir) {
      RETURN_IF_ERROR(LoadAttr(txn, new_parent, &dir_b_storage));
      if (!dir_b_storage.IsDir()) return Status(StatusCode::kNotDir, "not a directory");
    }
    Attr& dir_b = same_dir ? dir_a : dir_b_storage;
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(parent, dir_a));
    RETURN_IF_ERROR(meta_internal::CheckNotInTrash(new_parent, dir_b));
    ASSIGN_OR_RETURN(auto raw_a, txn.Get(keys::Entry(parent, name)));
    ASSIGN_OR_RETURN(auto raw_b, txn.Get(keys::Entry(new_parent, new_name)));
    if (!raw_a || !raw_b) return NotFound("both names must exist to exchange them");
    ASSIGN_OR_RETURN(DirEntryValue a, DecodeEntry(*raw_a));
    ASSIGN_OR_RETURN(DirEntryValue b, DecodeEntry(*raw_b));
    if (a.inode == b.inode) return Status::Ok();
    Attr attr_a, attr_b;
    RETURN_IF_ERROR(LoadAttr(txn, a.inode, &attr_a));
    RETURN_IF_ERROR(LoadAttr(txn, b.inode, &attr_b));
    if (!same_dir) {
      // Neither directory may end up inside itself.
      if (attr_a.IsDir()) {
        ASSIGN_OR_RETURN(bool loop, IsWithin(txn, new_parent, a.inode));
        if (loop) return Invalid("cannot move a directory into itself");
      }
      if (attr_b.IsDir()) {
        ASSIGN_OR_RETURN(bool loop, IsWithin(txn, parent, b.inode));
        if (loop) return Invalid("cannot move a directory into itself");
      }
      if (attr_a.IsDir()) {
        attr_a.parent = new_parent;
        dir_a.nlink--;
        dir_b.nlink++;
      }
      if (attr_b.IsDir()) {
        attr_b.parent = parent;
        dir_b.nlink--;
        dir_a.nlink++;
      }
    }
    const int64_t now = NowNanos();
    txn.Put(keys::Entry(parent, name), EncodeEntry(b));
    txn.Put(keys::Entry(new_parent, new_name), EncodeEntry(a));
    attr_a.ctime_ns = attr_b.ctime_ns = now;
    PutAttr(txn, a.inode, attr_a);
    PutAttr(txn, b.inode, attr_b);
    dir_a.mtime_ns = dir_a.ctime_ns = now;
    PutAttr(txn, parent, dir_a);
    if (!same_dir) {
      dir_b.mtime_ns = dir_b.ctime_ns = now;
      PutAttr(txn, new_parent, dir_b);
    }
    swapped_a = a.inode;
    swapped_b = b.inode;
    return Status::Ok();
  }));
  for (InodeId changed : {parent, new_parent, swapped_a, swapped_b}) NoteDir(changed, nullptr);
  hints_.Note(parent, name, swapped_b);
  hints_.Note(new_parent, new_name, swapped_a);
  return Status::Ok();
}

}  // namespace tessera
