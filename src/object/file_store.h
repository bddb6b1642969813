// FileStore: an object store in a local (or NFS-mounted) directory.
//
// Layout: the object with key K is the regular file <root>/K, so keys may
// contain '/' and the tree can be inspected, copied or rsynced with ordinary
// tools. Parent directories are made on demand and removed again when their
// last object is deleted.
//
// Atomicity: Put writes a temporary file (".tessera-tmp.<random>") in the
// object's own directory and rename()s it over the key, so readers see the
// old object or the new one, never a part. There is no fsync: an object is
// safe once Put returns as long as the machine stays up (a killed process
// loses nothing), which is what the volume promises for unsynced data; a
// power failure may lose recent objects. A crash mid-Put can leave a
// temporary file behind; List never returns them.
//
// Limits of the mapping, which the block key format never hits:
//  - Keys must be relative paths of non-empty components other than "." and
//    ".." (no leading, trailing or doubled '/', no NUL byte), and no
//    component may start with ".tessera-tmp."; otherwise kInvalid.
//  - A key cannot also be a directory of other keys: with "a/b" stored,
//    Put("a/b/c") fails with kNotDir; with "a/b/c" stored, Put("a/b") fails
//    with kIsDir. Get/Head of a key that is only a directory give kNotFound.
//
// Errors map errno through FromErrno (ENOENT -> kNotFound, EACCES ->
// kPermission, ENOSPC -> kNoSpace, others mostly kIo) with the key, the path
// and the store in the message. Thread-safe: the object store contract holds
// between threads and between processes sharing the directory.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "object/object_store.h"

namespace tessera {

class FileStore : public ObjectStore {
 public:
  // Opens the store rooted at directory `root`, creating it (and its
  // parents) if missing, and checks that a file can be created in it.
  // Errors name the directory: kPermission when it cannot be created or
  // written, kNotDir when it or a parent is not a directory, kInvalid for an
  // empty path, otherwise the code of the failing call.
  static Result<std::unique_ptr<FileStore>> Open(std::string_view root);

  // The prefix that marks temporary files; exposed for tests and gc.
  static constexpr std::string_view kTempPrefix = ".tessera-tmp.";

  std::string Describe() const override;
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset = 0, int64_t length = -1) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override;
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override;

  // The absolute root directory, without a trailing '/'.
  const std::string& root() const { return root_; }

 private:
  explicit FileStore(std::string root) : root_(std::move(root)) {}

  // <root>/<rel>; rel may be empty (the root itself).
  std::string PathOf(std::string_view rel) const;
  // kInvalid unless `key` maps to a file strictly inside the root.
  Status CheckKey(std::string_view key) const;
  // mkdir -p of <root>/<rel_dir>.
  Status MakeDirs(std::string_view rel_dir, std::string_view key) const;
  // Removes <root>/<rel_dir> and its ancestors below the root while empty.
  void RemoveEmptyDirs(std::string rel_dir) const;

  struct ListState;
  // Appends the objects under directory <root>/<rel_dir> (rel_dir is "" or
  // ends with '/') to `state` in key order, stopping once it is full.
  Status ListDir(const std::string& rel_dir, ListState* state) const;

  const std::string root_;  // absolute, no trailing '/' (except "/")
};

}  // namespace tessera
