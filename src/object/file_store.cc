#include "object/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>
#include <vector>

#include "common/random.h"

namespace tessera {
namespace {

// A Put retries this often when its temporary name is taken or when a
// concurrent Delete removes the directory it is writing into.
constexpr int kMaxPutAttempts = 16;

int64_t MtimeNanos(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// Closes a descriptor on every return path.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// True when `dir` ("" or "x/y/") could be the directory part of a valid key;
// a prefix whose directory part is not (say "../") matches no key, and must
// not be opened because it would leave the root.
bool IsValidDirPart(std::string_view dir) {
  if (dir.empty()) return true;
  if (dir.find('\0') != std::string_view::npos) return false;
  dir.remove_suffix(1);  // the trailing '/'
  size_t start = 0;
  while (true) {
    size_t slash = dir.find('/', start);
    std::string_view part =
        dir.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

}  // namespace

Result<std::unique_ptr<FileStore>> FileStore::Open(std::string_view root_arg) {
  if (root_arg.empty()) return Invalid("file object store needs a directory path");
  std::string root(root_arg);
  if (root[0] != '/') {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) {
      return FromErrno(
          errno, "object store directory '" + root + "': cannot resolve the current directory");
    }
    root = std::string(cwd) + "/" + root;
  }
  while (root.size() > 1 && root.back() == '/') root.pop_back();

  // mkdir -p, from the deepest missing directory down.
  std::vector<std::string> missing;
  std::string path = root;
  while (true) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Status(StatusCode::kNotDir, "cannot use '" + root +
                                               "' as an object store directory: '" + path +
                                               "' is not a directory");
      }
      break;
    }
    if (errno != ENOENT) {
      return FromErrno(errno,
                       "cannot use '" + root + "' as an object store directory: stat " + path);
    }
    missing.push_back(path);
    size_t slash = path.rfind('/');
    if (slash == 0 || slash == std::string::npos) break;
    path.resize(slash);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST) {
      return FromErrno(errno,
                       "cannot create object store directory '" + root + "' (mkdir " + *it + ")");
    }
  }

  // A directory can exist and still refuse files (permissions, read-only
  // mounts); find out now rather than on the first upload.
  std::string probe =
      root + (root == "/" ? "" : "/") + std::string(kTempPrefix) + "probe." + RandomHex16();
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return FromErrno(errno, "object store directory '" + root + "' is not writable");
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return std::unique_ptr<FileStore>(new FileStore(std::move(root)));
}

std::string FileStore::Describe() const { return "file://" + root_ + (root_ == "/" ? "" : "/"); }

std::string FileStore::PathOf(std::string_view rel) const {
  if (rel.empty()) return root_;
  std::string path = root_;
  if (root_ != "/") path += '/';
  path += rel;
  return path;
}

Status FileStore::CheckKey(std::string_view key) const {
  auto invalid = [&](std::string_view why) {
    return Invalid("invalid object key '" + std::string(key) + "' for " + Describe() + ": " +
                   std::string(why));
  };
  if (key.empty()) return Invalid("empty object key for " + Describe());
  if (key.find('\0') != std::string_view::npos) return invalid("contains a NUL byte");
  size_t start = 0;
  while (true) {
    size_t slash = key.find('/', start);
    std::string_view part =
        key.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty()) return invalid("empty path component (leading, trailing or doubled '/')");
    if (part == "." || part == "..") return invalid("'.' and '..' are not allowed as components");
    if (part.starts_with(kTempPrefix)) {
      return invalid("components starting with '" + std::string(kTempPrefix) + "' are reserved");
    }
    if (slash == std::string_view::npos) return Status::Ok();
    start = slash + 1;
  }
}

Status FileStore::MakeDirs(std::string_view rel_dir, std::string_view key) const {
  // Walk up to the first directory that exists, then create downwards. The
  // root itself is never created here: if it vanished (an unmounted volume),
  // objects must not silently land on the disk underneath.
  std::vector<std::string_view> missing;
  std::string_view dir = rel_dir;
  while (!dir.empty()) {
    if (::mkdir(PathOf(dir).c_str(), 0755) == 0 || errno == EEXIST) break;
    if (errno != ENOENT) {
      return FromErrno(
          errno, "put '" + std::string(key) + "' in " + Describe() + ": mkdir " + PathOf(dir));
    }
    missing.push_back(dir);
    size_t slash = dir.rfind('/');
    dir = slash == std::string_view::npos ? std::string_view() : dir.substr(0, slash);
  }
  if (dir.empty() && !missing.empty()) {
    struct stat st;
    if (::stat(root_.c_str(), &st) != 0) {
      return IoError("put '" + std::string(key) + "' in " + Describe() +
                     ": the store directory is gone: " + std::strerror(errno));
    }
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(PathOf(*it).c_str(), 0755) != 0 && errno != EEXIST) {
      return FromErrno(
          errno, "put '" + std::string(key) + "' in " + Describe() + ": mkdir " + PathOf(*it));
    }
  }
  return Status::Ok();
}

Status FileStore::Put(std::string_view key, std::string_view data) {
  RETURN_IF_ERROR(CheckKey(key));
  const std::string path = PathOf(key);
  const size_t slash = key.rfind('/');
  const std::string_view rel_dir =
      slash == std::string_view::npos ? std::string_view() : key.substr(0, slash);
  const std::string dir = PathOf(rel_dir);
  auto put_error = [&](int err, const std::string& what) {
    if (err == ENOTDIR) {
      return Status(StatusCode::kNotDir,
                    "put '" + std::string(key) + "' in " + Describe() +
                        ": a leading part of the key is an object, so it cannot be a directory");
    }
    std::string context = "put '" + std::string(key) + "' in " + Describe() + ": " + what;
    // ENOENT here means the root itself vanished: an I/O failure, not an
    // absent object.
    if (err == ENOENT) return IoError(context + ": the store directory is gone");
    return FromErrno(err, context);
  };

  std::string tmp;
  int fd = -1;
  for (int attempt = 1;; ++attempt) {
    tmp = dir + "/" + std::string(kTempPrefix) + RandomHex16();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) break;
    int err = errno;
    if (attempt < kMaxPutAttempts) {
      if (err == EEXIST || err == EINTR) continue;
      // The first object in a directory, or a Delete just removed the
      // directory when it emptied: (re)create it and try again.
      if (err == ENOENT && !rel_dir.empty()) {
        RETURN_IF_ERROR(MakeDirs(rel_dir, key));
        continue;
      }
    }
    return put_error(err, "create " + tmp);
  }

  int err = 0;
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, std::min<size_t>(left, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) {
      err = EIO;
      break;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  // close() reports delayed write errors on network file systems.
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return put_error(err, "write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    if (err == EISDIR || err == ENOTEMPTY || err == EEXIST) {
      return Status(StatusCode::kIsDir, "put '" + std::string(key) + "' in " + Describe() +
                                            ": the key is a directory of other objects");
    }
    return put_error(err, "rename to " + path);
  }
  return Status::Ok();
}

Result<std::string> FileStore::Get(std::string_view key, uint64_t offset, int64_t length) {
  RETURN_IF_ERROR(CheckKey(key));
  const std::string path = PathOf(key);
  auto not_found = [&] {
    return NotFound("object '" + std::string(key) + "' not found in " + Describe());
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return not_found();
    return FromErrno(errno, "get '" + std::string(key) + "' in " + Describe() + ": open " + path);
  }
  FdCloser closer(fd);
  // The descriptor pins this version of the object: a concurrent Put renames
  // a new file over the name, and never changes the one open here.
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return FromErrno(errno, "get '" + std::string(key) + "' in " + Describe() + ": fstat " + path);
  }
  if (!S_ISREG(st.st_mode)) return not_found();
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset >= size) return std::string();
  uint64_t want = size - offset;
  if (length >= 0) want = std::min(want, static_cast<uint64_t>(length));
  std::string out(want, '\0');
  size_t done = 0;
  while (done < want) {
    ssize_t n = ::pread(fd, out.data() + done, want - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FromErrno(errno, "get '" + std::string(key) + "' in " + Describe() + ": read " + path);
    }
    if (n == 0) break;  // only if the file shrank under us, which Put never does
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

Result<ObjectInfo> FileStore::Head(std::string_view key) {
  RETURN_IF_ERROR(CheckKey(key));
  const std::string path = PathOf(key);
  auto not_found = [&] {
    return NotFound("object '" + std::string(key) + "' not found in " + Describe());
  };
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return not_found();
    return FromErrno(errno, "head '" + std::string(key) + "' in " + Describe() + ": stat " + path);
  }
  if (!S_ISREG(st.st_mode)) return not_found();  // a directory of other keys
  return ObjectInfo{std::string(key), static_cast<uint64_t>(st.st_size), MtimeNanos(st)};
}

Status FileStore::Delete(std::string_view key) {
  RETURN_IF_ERROR(CheckKey(key));
  const std::string path = PathOf(key);
  if (::unlink(path.c_str()) != 0) {
    int err = errno;
    // Absent, or only a directory of other keys: there is no such object.
    if (err == ENOENT || err == ENOTDIR || err == EISDIR) return Status::Ok();
    struct stat st;
    if (err == EPERM && ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status::Ok();
    return FromErrno(err,
                     "delete '" + std::string(key) + "' in " + Describe() + ": unlink " + path);
  }
  size_t slash = key.rfind('/');
  if (slash != std::string_view::npos) RemoveEmptyDirs(std::string(key.substr(0, slash)));
  return Status::Ok();
}

void FileStore::RemoveEmptyDirs(std::string rel_dir) const {
  // Best effort: a directory another Put is writing into is not empty (its
  // temporary file is there), so rmdir fails and the walk stops; a Put that
  // loses the race to an rmdir recreates the directory.
  while (!rel_dir.empty()) {
    if (::rmdir(PathOf(rel_dir).c_str()) != 0) return;
    size_t slash = rel_dir.rfind('/');
    if (slash == std::string::npos) return;
    rel_dir.resize(slash);
  }
}

struct FileStore::ListState {
  std::string_view prefix;
  std::string_view start_after;
  size_t want = 0;  // the limit plus one, to learn whether more follow
  std::vector<ObjectInfo> objects;
};

Result<ListPage> FileStore::List(std::string_view prefix, std::string_view start_after,
                                 size_t limit) {
  if (limit == 0) limit = 1000;
  ListState state;
  state.prefix = prefix;
  state.start_after = start_after;
  state.want = limit + 1;
  // Start in the deepest directory the prefix names: "a/b/c" -> "a/b/".
  const size_t slash = prefix.rfind('/');
  const std::string dir(slash == std::string_view::npos ? std::string_view()
                                                        : prefix.substr(0, slash + 1));
  ListPage page;
  if (!IsValidDirPart(dir)) return page;
  RETURN_IF_ERROR(ListDir(dir, &state));
  if (state.objects.size() > limit) {
    state.objects.resize(limit);
    page.more = true;
  }
  page.objects = std::move(state.objects);
  return page;
}

// Directory order is not key order ("a-b" < "a/b" < "a0", but "a/" is one
// entry), so each directory's entries are sorted by the keys they stand for:
// a file "x" by "<dir>x", a subdirectory "y" by "<dir>y/". Every key under
// "y/" starts with that string and no sibling's string starts with it, so
// visiting entries in that order yields keys in order, and the walk can stop
// after limit + 1 keys instead of reading the whole tree on every page.
Status FileStore::ListDir(const std::string& rel_dir, ListState* state) const {
  const std::string path = PathOf(rel_dir);
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) {
    // Missing: no keys here, or a Delete just removed the emptied directory.
    if (errno == ENOENT || errno == ENOTDIR) return Status::Ok();
    return FromErrno(
        errno, "list '" + std::string(state->prefix) + "' in " + Describe() + ": opendir " + path);
  }
  struct Entry {
    std::string key;  // for a directory, ends with '/'
    bool is_dir;
  };
  std::vector<Entry> entries;
  int err = 0;
  while (true) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      err = errno;
      break;
    }
    std::string_view name = e->d_name;
    if (name == "." || name == ".." || name.starts_with(kTempPrefix)) continue;
    bool is_dir;
    if (e->d_type == DT_REG) {
      is_dir = false;
    } else if (e->d_type == DT_DIR) {
      is_dir = true;
    } else if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK) {
      struct stat st;
      if (::fstatat(dirfd(d), e->d_name, &st, 0) != 0) continue;
      if (S_ISREG(st.st_mode)) {
        is_dir = false;
      } else if (S_ISDIR(st.st_mode) && e->d_type == DT_UNKNOWN) {
        is_dir = true;  // symlinked directories are skipped: they could loop
      } else {
        continue;
      }
    } else {
      continue;
    }
    std::string key = rel_dir;
    key += name;
    if (is_dir) {
      key += '/';
      // Descend only where some key could match the prefix and follow
      // start_after; a subtree whose string sorts before start_after (and is
      // not a prefix of it) holds only keys before it.
      if (!key.starts_with(state->prefix) && !state->prefix.starts_with(key)) continue;
      if (!state->start_after.starts_with(key) && key < state->start_after) continue;
    } else {
      if (!key.starts_with(state->prefix) || key <= state->start_after) continue;
    }
    entries.push_back(Entry{std::move(key), is_dir});
  }
  ::closedir(d);
  if (err != 0) {
    return FromErrno(
        err, "list '" + std::string(state->prefix) + "' in " + Describe() + ": readdir " + path);
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.key < b.key; });
  for (const Entry& entry : entries) {
    if (state->objects.size() >= state->want) break;
    if (entry.is_dir) {
      RETURN_IF_ERROR(ListDir(entry.key, state));
      continue;
    }
    struct stat st;
    const std::string file = PathOf(entry.key);
    if (::stat(file.c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // deleted since readdir
      return FromErrno(
          errno, "list '" + std::string(state->prefix) + "' in " + Describe() + ": stat " + file);
    }
    state->objects.push_back(
        ObjectInfo{entry.key, static_cast<uint64_t>(st.st_size), MtimeNanos(st)});
  }
  return Status::Ok();
}

}  // namespace tessera
