#include "object/writeback_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "common/log.h"
#include "common/random.h"
#include "common/units.h"

namespace tessera {
namespace {

constexpr std::string_view kTempPrefix = ".tmp.";
constexpr const char* kLockName = ".lock";
constexpr size_t kMaxNameLength = 255;
constexpr auto kProgressEvery = std::chrono::seconds(5);

bool KeptAsIs(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The key a staging file name stands for; nullopt for names FileNameOf
// never makes (so a stray file is left alone, never uploaded).
std::optional<std::string> UnescapeName(std::string_view name) {
  std::string key;
  for (size_t i = 0; i < name.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(name[i]);
    if (KeptAsIs(c)) {
      key.push_back(static_cast<char>(c));
      continue;
    }
    if (c != '%' || i + 2 >= name.size()) return std::nullopt;
    int hi = HexValue(name[i + 1]), lo = HexValue(name[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    unsigned char decoded = static_cast<unsigned char>(hi * 16 + lo);
    if (KeptAsIs(decoded)) return std::nullopt;  // not the canonical form
    key.push_back(static_cast<char>(decoded));
    i += 2;
  }
  if (key.empty()) return std::nullopt;
  return key;
}

int64_t MtimeNanos(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// mkdir -p with private permissions.
Status MakeDirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      return FromErrno(errno, "cannot create staging directory " + dir + " (mkdir " + part + ")");
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return FromErrno(errno, "staging directory " + dir);
  if (!S_ISDIR(st.st_mode)) {
    return Status(StatusCode::kNotDir, "staging directory " + dir + " is not a directory");
  }
  return Status::Ok();
}

// The whole content of a file; kNotFound when it is absent.
Status ReadWhole(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FromErrno(errno, "open staged file " + path);
  struct stat st;
  Status status;
  if (::fstat(fd, &st) != 0) {
    status = FromErrno(errno, "stat staged file " + path);
  } else {
    out->resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < out->size()) {
      ssize_t n = ::pread(fd, out->data() + done, out->size() - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = FromErrno(errno, "read staged file " + path);
        break;
      }
      if (n == 0) {
        status = IoError("staged file " + path + " shrank while being read");
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  ::close(fd);
  return status;
}

// Writes all of `data` to a new file (and fsyncs it); errno on failure.
int WriteFile(const std::string& path, std::string_view data, bool sync) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  int err = 0;
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (err == 0 && sync && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

int FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = ::fsync(fd) != 0 ? errno : 0;
  ::close(fd);
  return err;
}

}  // namespace

std::string WritebackStore::FileNameOf(std::string_view key) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string name;
  name.reserve(key.size() + 16);
  for (char ch : key) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (KeptAsIs(c)) {
      name.push_back(ch);
    } else {
      name.push_back('%');
      name.push_back(kHex[c >> 4]);
      name.push_back(kHex[c & 0xf]);
    }
  }
  if (name.empty() || name.size() > kMaxNameLength) return "";
  return name;
}

Result<std::unique_ptr<WritebackStore>> WritebackStore::Open(std::unique_ptr<ObjectStore> backend,
                                                             WritebackOptions options) {
  if (options.dir.empty()) return Invalid("writeback needs a staging directory");
  while (options.dir.size() > 1 && options.dir.back() == '/') options.dir.pop_back();
  if (options.max_uploads == 0) options.max_uploads = 1;
  RETURN_IF_ERROR(MakeDirs(options.dir));
  const std::string lock_path = options.dir + "/" + kLockName;
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return FromErrno(errno, "open staging lock file " + lock_path);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return Status(StatusCode::kBusy, "staging directory " + options.dir +
                                           " is in use by another mount (" + lock_path +
                                           " is locked)");
    }
    return FromErrno(err, "lock " + lock_path);
  }
  std::unique_ptr<WritebackStore> store(
      new WritebackStore(std::move(backend), std::move(options), lock_fd));
  RETURN_IF_ERROR(store->Scan());
  for (size_t i = 0; i < store->options_.max_uploads; ++i) {
    store->threads_.emplace_back(&WritebackStore::UploadLoop, store.get());
  }
  return store;
}

WritebackStore::WritebackStore(std::unique_ptr<ObjectStore> backend, WritebackOptions options,
                               int lock_fd)
    : backend_(std::move(backend)), options_(std::move(options)), lock_fd_(lock_fd) {}

WritebackStore::~WritebackStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& t : threads_) t.join();
  ::close(lock_fd_);  // releases the flock
}

Status WritebackStore::Scan() {
  DIR* d = ::opendir(options_.dir.c_str());
  if (d == nullptr) return FromErrno(errno, "open staging directory " + options_.dir);
  const auto now = Clock::now();
  const int64_t wall_now = NowNanos();
  std::lock_guard lock(mu_);
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == ".." || name == kLockName) continue;
    if (name.starts_with(kTempPrefix)) {
      // A Put that never finished: nobody was told it succeeded.
      ::unlinkat(dirfd(d), e->d_name, 0);
      continue;
    }
    std::optional<std::string> key = UnescapeName(name);
    struct stat st;
    if (!key || ::fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
      continue;
    }
    Entry& entry = staged_[*key];
    entry.size = static_cast<uint64_t>(st.st_size);
    entry.mtime_ns = MtimeNanos(st);
    entry.gen = next_gen_++;
    pending_.objects++;
    pending_.bytes += entry.size;
    // The delay counts from when the object was staged, not from now.
    auto age = std::chrono::nanoseconds(std::max<int64_t>(0, wall_now - entry.mtime_ns));
    auto wait = std::max<Clock::duration>(
        Clock::duration::zero(),
        std::chrono::duration_cast<Clock::duration>(options_.upload_delay) -
            std::chrono::duration_cast<Clock::duration>(age));
    queue_.push(Item{now + wait, *key, entry.gen, false});
  }
  ::closedir(d);
  if (pending_.objects > 0) {
    LogInfo("found " + std::to_string(pending_.objects) + " staged objects (" +
            FormatBytes(pending_.bytes) + ") in " + options_.dir + " from an earlier run; " +
            "uploading them to " + backend_->Describe());
  }
  return Status::Ok();
}

void WritebackStore::Schedule(std::string key, uint64_t gen, Clock::time_point due, bool retry) {
  queue_.push(Item{due, std::move(key), gen, retry});
  work_.notify_one();
}

void WritebackStore::DropLocked(std::map<std::string, Entry, std::less<>>::iterator it) {
  std::string name = FileNameOf(it->first);
  if (!name.empty()) ::unlink(PathOf(name).c_str());
  pending_.objects--;
  pending_.bytes -= it->second.size;
  staged_.erase(it);
}

void WritebackStore::StagingFailedLocked(const std::string& what, int err) {
  if (staging_failed_) return;
  staging_failed_ = true;
  LogWarn("cannot stage objects in " + options_.dir + " (" + what + ": " + std::strerror(err) +
          "); uploading them directly until it works again");
}

bool WritebackStore::Stage(std::string_view key, const std::string& name, std::string_view data) {
  auto failed = [&](int err, const std::string& what) {
    std::lock_guard lock(mu_);
    StagingFailedLocked(what, err);
    return false;
  };
  const std::string tmp = PathOf(std::string(kTempPrefix) + RandomHex16());
  if (int err = WriteFile(tmp, data, options_.sync); err != 0) {
    ::unlink(tmp.c_str());
    return failed(err, "write " + tmp);
  }
  {
    std::lock_guard lock(mu_);
    // Renamed under the lock: an upload that finishes now removes the
    // staging file only if its generation is still the current one.
    if (::rename(tmp.c_str(), PathOf(name).c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      StagingFailedLocked("rename " + tmp, err);
      return false;
    }
    auto [it, inserted] = staged_.try_emplace(std::string(key));
    Entry& e = it->second;
    if (inserted) {
      pending_.objects++;
    } else {
      pending_.bytes -= e.size;
    }
    pending_.bytes += data.size();
    e.size = data.size();
    e.mtime_ns = NowNanos();
    e.gen = next_gen_++;
    e.failures = 0;
    // An upload of the key running now reschedules it when it ends.
    if (!e.uploading) {
      Schedule(it->first, e.gen, Clock::now() + (draining_ ? Clock::duration::zero()
                                                            : options_.upload_delay),
               false);
    }
    if (staging_failed_) {
      staging_failed_ = false;
      LogInfo("staging objects in " + options_.dir + " works again");
    }
  }
  // The name must survive a power cut too before Put reports success.
  if (int err = options_.sync ? FsyncDir(options_.dir) : 0; err != 0) {
    return failed(err, "fsync " + options_.dir);
  }
  return true;
}

Status WritebackStore::Put(std::string_view key, std::string_view data) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  const std::string name = FileNameOf(key);
  if (name.empty()) {
    LogWarn("object key '" + std::string(key) + "' is too long to stage; uploading it directly");
  } else if (Stage(key, name, data)) {
    return Status::Ok();
  }
  {
    // A staged older version must not be uploaded over this one later.
    std::unique_lock lock(mu_);
    auto it = staged_.find(key);
    while (it != staged_.end() && it->second.uploading) {
      done_.wait(lock);
      it = staged_.find(key);
    }
    if (it != staged_.end()) DropLocked(it);
  }
  return backend_->Put(key, data);
}

bool WritebackStore::IsStaged(std::string_view key) {
  std::lock_guard lock(mu_);
  return staged_.find(key) != staged_.end();
}

Result<std::string> WritebackStore::Get(std::string_view key, uint64_t offset, int64_t length) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  if (IsStaged(key)) {
    const std::string path = PathOf(FileNameOf(key));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      struct stat st;
      Status status;
      std::string out;
      if (::fstat(fd, &st) != 0) {
        status = FromErrno(errno, "get '" + std::string(key) + "': stat staged file " + path);
      } else {
        const uint64_t size = static_cast<uint64_t>(st.st_size);
        uint64_t want = offset >= size ? 0 : size - offset;
        if (length >= 0) want = std::min(want, static_cast<uint64_t>(length));
        out.resize(want);
        size_t done = 0;
        while (done < want) {
          ssize_t n = ::pread(fd, out.data() + done, want - done,
                              static_cast<off_t>(offset + done));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) {
            status = FromErrno(errno, "get '" + std::string(key) + "': read staged file " + path);
            break;
          }
          if (n == 0) break;
          done += static_cast<size_t>(n);
        }
        out.resize(done);
      }
      ::close(fd);
      if (!status.ok()) return status;
      return out;
    }
    // Uploaded (and its file removed) since the lookup: the store has it.
    if (errno != ENOENT) {
      return FromErrno(errno, "get '" + std::string(key) + "': open staged file " + path);
    }
  }
  return backend_->Get(key, offset, length);
}

Result<ObjectInfo> WritebackStore::Head(std::string_view key) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  if (IsStaged(key)) {
    const std::string path = PathOf(FileNameOf(key));
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      return ObjectInfo{std::string(key), static_cast<uint64_t>(st.st_size), MtimeNanos(st)};
    }
    if (errno != ENOENT) {
      return FromErrno(errno, "head '" + std::string(key) + "': stat staged file " + path);
    }
  }
  return backend_->Head(key);
}

Status WritebackStore::Delete(std::string_view key) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  {
    std::unique_lock lock(mu_);
    auto it = staged_.find(key);
    // An upload in flight cannot be recalled: let it land, then delete it
    // below, so that the object does not survive the Delete.
    while (it != staged_.end() && it->second.uploading) {
      done_.wait(lock);
      it = staged_.find(key);
    }
    if (it != staged_.end()) DropLocked(it);  // its queued upload is now stale
  }
  // Also when the key was staged: an earlier version may have been uploaded.
  return backend_->Delete(key);
}

Result<ListPage> WritebackStore::List(std::string_view prefix, std::string_view start_after,
                                      size_t limit) {
  if (limit == 0) limit = 1000;
  std::map<std::string, ObjectInfo> merged;
  {
    // Staged keys first: one uploaded and unstaged after this is in the
    // store's listing below; the other order could miss it in both.
    std::lock_guard lock(mu_);
    auto it = prefix > start_after ? staged_.lower_bound(prefix) : staged_.upper_bound(start_after);
    // One more than the limit tells whether staged keys go on past the page.
    for (size_t n = 0; it != staged_.end() && n <= limit && it->first.starts_with(prefix);
         ++it, ++n) {
      merged[it->first] = ObjectInfo{it->first, it->second.size, it->second.mtime_ns};
    }
  }
  ASSIGN_OR_RETURN(ListPage page, backend_->List(prefix, start_after, limit));
  ListPage out;
  out.more = page.more;
  // Past the store's last key, keys the store holds were not listed yet:
  // they and the staged ones among them belong to the next page.
  if (page.more) merged.erase(merged.upper_bound(page.objects.back().key), merged.end());
  for (ObjectInfo& o : page.objects) {
    std::string key = o.key;
    merged.try_emplace(std::move(key), std::move(o));  // a staged version is newer
  }
  for (auto& [key, info] : merged) {
    if (out.objects.size() == limit) {
      out.more = true;
      break;
    }
    out.objects.push_back(std::move(info));
  }
  return out;
}

void WritebackStore::UploadLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (queue_.empty()) {
      work_.wait(lock);
      continue;
    }
    const Clock::time_point due = queue_.top().due;
    if (due > Clock::now()) {
      work_.wait_until(lock, due);
      continue;
    }
    Item item = queue_.top();
    queue_.pop();
    auto it = staged_.find(item.key);
    if (it == staged_.end() || it->second.gen != item.gen || it->second.uploading) continue;
    it->second.uploading = true;
    lock.unlock();
    Upload(item.key, item.gen);
    lock.lock();
  }
}

void WritebackStore::Upload(const std::string& key, uint64_t gen) {
  std::string data;
  Status st = ReadWhole(PathOf(FileNameOf(key)), &data);
  const bool vanished = st.Is(StatusCode::kNotFound);
  if (st.ok()) st = backend_->Put(key, data);
  data = std::string();  // free the block before waiting for the lock

  std::lock_guard lock(mu_);
  auto it = staged_.find(key);
  if (it != staged_.end()) {
    Entry& e = it->second;
    e.uploading = false;
    if (st.ok()) ++uploaded_;
    if (e.gen != gen) {
      // Staged again while uploading: the new version goes up in turn.
      Schedule(key, e.gen,
               Clock::now() + (draining_ ? Clock::duration::zero() : options_.upload_delay),
               false);
    } else if (st.ok()) {
      DropLocked(it);
    } else if (vanished) {
      LogWarn("staged object " + key + " vanished from " + options_.dir +
              " before its upload; it is lost");
      DropLocked(it);
    } else {
      e.failures++;
      std::chrono::milliseconds pause = std::min<std::chrono::milliseconds>(
          options_.first_retry_pause * (int64_t{1} << std::min(e.failures - 1, 16)),
          options_.max_retry_pause);
      LogWarn("upload of staged object " + key + " to " + backend_->Describe() + " failed (" +
              st.ToString() + "); retrying in " + std::to_string(pause.count()) + " ms");
      Schedule(key, gen, Clock::now() + pause, true);
    }
  }
  done_.notify_all();
}

Status WritebackStore::Drain(std::chrono::milliseconds stall_limit) {
  std::unique_lock lock(mu_);
  if (!draining_) {
    draining_ = true;
    // Everything waiting for its delay is due now; retries keep their pause.
    std::vector<Item> items;
    const auto now = Clock::now();
    while (!queue_.empty()) {
      items.push_back(queue_.top());
      queue_.pop();
    }
    for (Item& item : items) {
      if (!item.retry) item.due = std::min(item.due, now);
      queue_.push(std::move(item));
    }
    work_.notify_all();
  }
  if (pending_.objects == 0) return Status::Ok();
  LogInfo("uploading " + std::to_string(pending_.objects) + " staged objects (" +
          FormatBytes(pending_.bytes) + ") to " + backend_->Describe());
  uint64_t last_uploaded = uploaded_;
  auto last_progress = Clock::now();
  auto next_report = last_progress + kProgressEvery;
  while (pending_.objects > 0) {
    done_.wait_for(lock, std::chrono::milliseconds(200));
    const auto now = Clock::now();
    if (uploaded_ != last_uploaded) {
      last_uploaded = uploaded_;
      last_progress = now;
    } else if (now - last_progress >= stall_limit && pending_.objects > 0) {
      return Unavailable(std::to_string(pending_.objects) + " staged objects (" +
                         FormatBytes(pending_.bytes) + ") could not be uploaded to " +
                         backend_->Describe() + "; they stay in " + options_.dir +
                         " and are uploaded when the volume is mounted again with the same "
                         "staging directory");
    }
    if (now >= next_report && pending_.objects > 0) {
      LogInfo(std::to_string(pending_.objects) + " staged objects (" +
              FormatBytes(pending_.bytes) + ") left to upload");
      next_report = now + kProgressEvery;
    }
  }
  LogInfo("all staged objects uploaded");
  return Status::Ok();
}

PendingUploads WritebackStore::Pending() const {
  std::lock_guard lock(mu_);
  return pending_;
}

}  // namespace tessera
