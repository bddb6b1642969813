#include "cache/disk_block_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "cache/block_file.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/units.h"

namespace tessera {
namespace {

constexpr uint32_t kSubdirs = 256;
// The idle writer wakes at least this far apart to check free space.
constexpr int64_t kMinIdleWakeNs = 100'000'000;
// "Cached long ago": the first hit on a block found at Open protects it,
// because that hit is a re-reference across runs.
constexpr int64_t kLongAgo = std::numeric_limits<int64_t>::min();

std::string SubdirName(uint32_t i) {
  char buf[4];
  std::snprintf(buf, sizeof(buf), "%02x", i);
  return buf;
}

uint32_t SubdirOf(std::string_view key) { return crc32c::Value(key) % kSubdirs; }

Result<FsSpace> StatvfsProbe(const std::string& dir) {
  struct statvfs sv;
  if (::statvfs(dir.c_str(), &sv) != 0) return FromErrno(errno, "statvfs " + dir);
  return FsSpace{static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize,
                 static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize};
}

// mkdir -p; directories made here are private to the user.
Status MakeDirs(const std::string& path) {
  for (size_t pos = 1;;) {
    size_t slash = path.find('/', pos);
    std::string part = path.substr(0, slash);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      return FromErrno(errno, "create cache directory " + part);
    }
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return FromErrno(errno, "cache directory " + path);
  if (!S_ISDIR(st.st_mode)) {
    return Status(StatusCode::kNotDir, "cache directory " + path + " is not a directory");
  }
  return Status::Ok();
}

Status ValidateOptions(const DiskCacheOptions& o) {
  if (o.dir.empty()) return Invalid("disk cache: dir is empty");
  if (o.capacity_bytes == 0) return Invalid("disk cache: capacity_bytes must be > 0");
  if (!(o.free_space_ratio >= 0 && o.free_space_ratio < 1)) {
    return Invalid("disk cache: free_space_ratio must be in [0, 1), got " +
                   std::to_string(o.free_space_ratio));
  }
  if (!(o.protected_ratio >= 0 && o.protected_ratio <= 1)) {
    return Invalid("disk cache: protected_ratio must be in [0, 1], got " +
                   std::to_string(o.protected_ratio));
  }
  if (o.write_queue_bytes == 0) return Invalid("disk cache: write_queue_bytes must be > 0");
  if (o.reuse_window_ns < 0) return Invalid("disk cache: reuse_window_ns must be >= 0");
  if (o.space_check_interval_ns < 0) {
    return Invalid("disk cache: space_check_interval_ns must be >= 0");
  }
  return Status::Ok();
}

}  // namespace

SpacePlan PlanSpace(uint64_t used, uint64_t incoming, uint64_t capacity,
                    double free_space_ratio, const std::optional<FsSpace>& fs) {
  // Bytes to free so that, once `in` more bytes are written, both limits hold.
  auto deficit = [&](uint64_t in) {
    uint64_t need = used + in > capacity ? used + in - capacity : 0;
    if (fs) {
      auto keep_free =
          static_cast<uint64_t>(std::ceil(free_space_ratio * static_cast<double>(fs->total_bytes)));
      if (keep_free + in > fs->free_bytes) need = std::max(need, keep_free + in - fs->free_bytes);
    }
    return need;
  };
  uint64_t with_incoming = deficit(incoming);
  if (incoming <= capacity && with_incoming <= used) return {with_incoming, true};
  // No room for it even after evicting everything: still restore the limits
  // (others may have filled the disk), as far as the cache's own files allow.
  return {std::min(deficit(0), used), false};
}

Result<std::unique_ptr<DiskBlockCache>> DiskBlockCache::Open(DiskCacheOptions options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  if (!options.probe_space) options.probe_space = StatvfsProbe;
  if (!options.now_ns) options.now_ns = MonoNanos;
  RETURN_IF_ERROR(MakeDirs(options.dir));
  // Absolute, so that a daemon's chdir("/") cannot move the cache.
  char* real = ::realpath(options.dir.c_str(), nullptr);
  if (real == nullptr) return FromErrno(errno, "resolve cache directory " + options.dir);
  options.dir = real;
  std::free(real);

  std::string lock_path = options.dir + "/.lock";
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) return FromErrno(errno, "open cache lock file " + lock_path);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return Status(StatusCode::kBusy, "cache directory " + options.dir +
                                           " is in use by another cache (" + lock_path +
                                           " is locked)");
    }
    return FromErrno(err, "lock " + lock_path);
  }
  std::unique_ptr<DiskBlockCache> cache(new DiskBlockCache(std::move(options), lock_fd));
  RETURN_IF_ERROR(cache->Rebuild());
  cache->writer_ = std::thread(&DiskBlockCache::WriterLoop, cache.get());
  return cache;
}

DiskBlockCache::DiskBlockCache(DiskCacheOptions options, int lock_fd)
    : options_(std::move(options)),
      lock_fd_(lock_fd),
      protected_capacity_(static_cast<uint64_t>(options_.protected_ratio *
                                                static_cast<double>(options_.capacity_bytes))),
      index_(protected_capacity_) {}

DiskBlockCache::~DiskBlockCache() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  ::close(lock_fd_);  // releases the flock
}

std::string DiskBlockCache::PathFor(std::string_view key) const {
  return options_.dir + "/" + SubdirName(SubdirOf(key)) + "/" + blockfile::EscapeKey(key);
}

Status DiskBlockCache::Rebuild() {
  struct Scanned {
    int64_t mtime_ns;
    std::string key;
    uint64_t block_len;
  };
  std::vector<Scanned> scanned;
  uint64_t dropped = 0;
  for (uint32_t i = 0; i < kSubdirs; ++i) {
    std::string sub = options_.dir + "/" + SubdirName(i);
    if (::mkdir(sub.c_str(), 0700) != 0 && errno != EEXIST) {
      return FromErrno(errno, "create cache directory " + sub);
    }
    DIR* d = ::opendir(sub.c_str());
    if (d == nullptr) return FromErrno(errno, "list cache directory " + sub);
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
      std::string_view name = de->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    ::closedir(d);

    for (const std::string& name : names) {
      std::string path = sub + "/" + name;
      std::optional<std::string> key = blockfile::UnescapeKey(name);
      if (name.starts_with(blockfile::kTempPrefix) || !key || SubdirOf(*key) != i) {
        // A write cut short by a crash, or a name this cache never makes.
        ::unlink(path.c_str());
        continue;
      }
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) continue;  // a directory or symlink: not ours, leave it
      struct stat st;
      if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        continue;
      }
      Result<uint64_t> len = blockfile::ReadHeader(fd);
      ::close(fd);
      if (!len.ok()) {
        LogWarn("disk cache: deleting " + path + ": " + len.status().ToString());
        ::unlink(path.c_str());
        ++dropped;
        continue;
      }
      int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
      scanned.push_back({mtime, std::move(*key), *len});
    }
  }
  // Oldest first, so that the most recently written end up most recently used.
  std::sort(scanned.begin(), scanned.end(), [](const Scanned& a, const Scanned& b) {
    return std::tie(a.mtime_ns, a.key) < std::tie(b.mtime_ns, b.key);
  });
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Scanned& s : scanned) {
      uint64_t charge = blockfile::FileSize(s.block_len);
      index_.Insert(std::move(s.key), charge, Entry{s.block_len, next_gen_++, kLongAgo});
    }
    stats_.corrupt_dropped += dropped;
  }
  MeasureSpaceIfDue(/*force=*/true);
  MakeRoom(0);  // the capacity may have shrunk since the last run
  return Status::Ok();
}

DiskBlockCache::Found DiskBlockCache::Lookup(std::string_view key) {
  const int64_t now = Now();
  Found f;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = queued_.find(key); it != queued_.end()) {
    f.present = true;
    f.queued = it->second->data;
    return f;
  }
  Entry* e = index_.Find(key);
  if (e == nullptr) return f;
  if (e->cached_at_ns <= now - options_.reuse_window_ns) {
    index_.Promote(key);
  } else {
    index_.Touch(key);
  }
  f.present = true;
  f.block_len = e->block_len;
  f.gen = e->gen;
  return f;
}

bool DiskBlockCache::Read(std::string_view key, uint64_t offset, uint64_t length, char* out) {
  Found f = Lookup(key);
  uint64_t len = f.queued ? f.queued->size() : f.block_len;
  if (!f.present || offset > len || length > len - offset) {
    ++misses_;
    return false;
  }
  if (f.queued) {
    if (length > 0) std::memcpy(out, f.queued->data() + offset, length);
    ++hits_;
    return true;
  }
  return ReadFile(key, f, offset, length, out);
}

bool DiskBlockCache::ReadBlock(std::string_view key, std::string* block) {
  Found f = Lookup(key);
  if (!f.present) {
    ++misses_;
    return false;
  }
  if (f.queued) {
    block->assign(*f.queued);
    ++hits_;
    return true;
  }
  block->resize(f.block_len);
  return ReadFile(key, f, 0, f.block_len, block->data());
}

bool DiskBlockCache::ReadFile(std::string_view key, const Found& found, uint64_t offset,
                              uint64_t length, char* out) {
  std::string path = PathFor(key);
  Status st;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    st = FromErrno(errno, "open");
  } else {
    st = blockfile::ReadRange(fd, found.block_len, offset, length, out);
    ::close(fd);
  }
  if (st.ok()) {
    ++hits_;
    return true;
  }
  ++misses_;
  // Drop the file only if it is still the one we looked up: it may have
  // been evicted or removed (and even cached again) since.
  uint64_t charge = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry* e = index_.Find(key);
    if (e == nullptr || e->gen != found.gen) return false;
    charge = index_.BytesOf(key);
    index_.Erase(key);
    unlinking_.emplace(key);
    ++stats_.corrupt_dropped;
  }
  LogWarn("disk cache: dropping " + path + ": " + st.ToString());
  UnlinkAll({{std::string(key), charge}});
  return false;
}

void DiskBlockCache::Put(std::string_view key, std::string_view block) {
  const uint64_t charge = blockfile::FileSize(block.size());
  // Decides under mu_ whether to go on; false when the Put is over.
  auto should_queue = [&]() {
    if (queued_.contains(key)) return false;  // already on its way
    if (Entry* e = index_.Find(key)) {
      if (e->block_len == block.size()) {
        index_.Touch(key);
      } else {
        // Keys name immutable blocks; a new length means the old one is stale.
        uint64_t old = index_.BytesOf(key);
        index_.Erase(key);
        unlinking_.emplace(key);
        jobs_.push_back(std::make_shared<Job>(Job{std::string(key), nullptr, old}));
        work_cv_.notify_one();
        ++stats_.rejected;
      }
      return false;
    }
    if (unlinking_.contains(key) || queued_bytes_ + block.size() > options_.write_queue_bytes) {
      ++stats_.rejected;
      return false;
    }
    return true;
  };

  if (key.empty() || charge > options_.capacity_bytes ||
      blockfile::EscapeKey(key).size() > blockfile::kMaxNameLength) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.rejected;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!should_queue()) return;
  }
  // Copy outside the lock (megabytes), then check again: others may have
  // queued the same key meanwhile.
  auto job = std::make_shared<Job>(
      Job{std::string(key), std::make_shared<const std::string>(block), charge});
  std::lock_guard<std::mutex> lock(mu_);
  if (!should_queue()) return;
  queued_bytes_ += block.size();
  queued_.emplace(job->key, job);
  jobs_.push_back(std::move(job));
  work_cv_.notify_one();
}

void DiskBlockCache::Remove(std::string_view key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = queued_.find(key); it != queued_.end()) {
    it->second->cancelled = true;  // the writer deletes the file if it wrote it
    queued_.erase(it);
  }
  if (index_.Find(key) != nullptr) {
    uint64_t charge = index_.BytesOf(key);
    index_.Erase(key);
    unlinking_.emplace(key);
    jobs_.push_back(std::make_shared<Job>(Job{std::string(key), nullptr, charge}));
    work_cv_.notify_one();
  }
}

CacheStats DiskBlockCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  CacheStats s = stats_;
  s.entries = index_.size();
  s.bytes = index_.bytes() + writing_bytes_;
  s.hits = hits_.load();
  s.misses = misses_.load();
  return s;
}

void DiskBlockCache::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return jobs_.empty() && !busy_; });
}

bool DiskBlockCache::IsProtected(std::string_view key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.IsProtected(key);
}

void DiskBlockCache::WriterLoop() {
  const auto idle_wake =
      std::chrono::nanoseconds(std::max(options_.space_check_interval_ns, kMinIdleWakeNs));
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (jobs_.empty()) {
      if (stop_) break;
      work_cv_.wait_for(lock, idle_wake, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) {
        if (stop_) break;
        // Others may be filling the disk while the cache is idle.
        lock.unlock();
        MeasureSpaceIfDue(/*force=*/false);
        MakeRoom(0);
        lock.lock();
        continue;
      }
    }
    std::shared_ptr<Job> job = std::move(jobs_.front());
    jobs_.pop_front();
    busy_ = true;
    lock.unlock();
    RunJob(job);
    lock.lock();
    busy_ = false;
    if (job->data) queued_bytes_ -= job->data->size();
    idle_cv_.notify_all();
  }
}

void DiskBlockCache::RunJob(const std::shared_ptr<Job>& job) {
  if (job->data) {
    WriteBlock(job);
  } else {
    UnlinkAll({{job->key, job->charge}});
  }
}

void DiskBlockCache::WriteBlock(const std::shared_ptr<Job>& job) {
  MeasureSpaceIfDue(/*force=*/false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (job->cancelled) return;
  }
  // Jobs run one at a time, in order, on this thread: no other write can
  // take the room made here, and a later job for the same key (queued after
  // a Remove) runs after this one is done with the path.
  if (!MakeRoom(job->charge)) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = queued_.find(job->key); it != queued_.end() && it->second == job) {
      queued_.erase(it);
    }
    ++stats_.rejected;
    return;
  }
  const std::string path = PathFor(job->key);
  Status st = blockfile::Write(path, *job->data);
  if (st.Is(StatusCode::kNotFound)) {
    // Someone removed the subdirectory under us; make it again once.
    std::string sub = path.substr(0, path.rfind('/'));
    if (::mkdir(sub.c_str(), 0700) == 0 || errno == EEXIST) st = blockfile::Write(path, *job->data);
  }
  const int64_t now = Now();
  bool discard = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_bytes_ = 0;
    if (auto it = queued_.find(job->key); it != queued_.end() && it->second == job) {
      queued_.erase(it);
    }
    if (!st.ok()) {
      ++stats_.rejected;
    } else if (job->cancelled) {
      discard = true;
    } else {
      index_.Insert(job->key, job->charge,
                    Entry{job->data->size(), next_gen_++, now});
      if (fs_) fs_->free_bytes -= std::min(fs_->free_bytes, job->charge);
    }
  }
  if (discard) ::unlink(path.c_str());
  if (!st.ok() && !last_write_failed_) LogWarn("disk cache: " + st.ToString());
  last_write_failed_ = !st.ok();
}

void DiskBlockCache::MeasureSpaceIfDue(bool force) {
  const int64_t now = Now();
  if (!force && measured_ && now - last_measured_ns_ < options_.space_check_interval_ns) return;
  measured_ = true;
  last_measured_ns_ = now;
  Result<FsSpace> space = options_.probe_space(options_.dir);
  if (!space.ok() && !probe_failed_) {
    LogWarn("disk cache: cannot measure free space, keeping only the capacity limit: " +
            space.status().ToString());
  }
  probe_failed_ = !space.ok();
  std::lock_guard<std::mutex> lock(mu_);
  if (space.ok()) {
    fs_ = *space;
  } else {
    fs_.reset();
  }
}

bool DiskBlockCache::MakeRoom(uint64_t incoming) {
  std::vector<std::pair<std::string, uint64_t>> victims;
  bool admit = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SpacePlan plan = PlanSpace(index_.bytes(), incoming, options_.capacity_bytes,
                               options_.free_space_ratio, fs_);
    victims = TakeVictimsLocked(plan.evict_bytes);
    admit = plan.admit;
    if (admit) writing_bytes_ = incoming;
  }
  UnlinkAll(victims);
  return admit;
}

std::vector<std::pair<std::string, uint64_t>> DiskBlockCache::TakeVictimsLocked(uint64_t bytes) {
  std::vector<std::pair<std::string, uint64_t>> out;
  uint64_t freed = 0;
  while (freed < bytes) {
    const std::string* victim = index_.Victim();
    if (victim == nullptr) break;
    std::string key = *victim;
    uint64_t charge = index_.BytesOf(key);
    index_.Erase(key);
    unlinking_.insert(key);
    freed += charge;
    ++stats_.evictions;
    out.emplace_back(std::move(key), charge);
  }
  return out;
}

void DiskBlockCache::UnlinkAll(const std::vector<std::pair<std::string, uint64_t>>& files) {
  if (files.empty()) return;
  for (const auto& [key, charge] : files) ::unlink(PathFor(key).c_str());
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [key, charge] : files) {
    unlinking_.erase(key);
    if (fs_) fs_->free_bytes += charge;
  }
}

}  // namespace tessera
